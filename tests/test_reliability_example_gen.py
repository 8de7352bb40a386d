"""Bad logs (issue 7): each kind of bad input gets its one documented behaviour.

Row-level kinds are quarantined with file, row and reason, counted per field, and the
counts reconcile; a log that is mostly bad, or absent, fails the run with a message
that names file/row/field; a failed ExampleGen leaves nothing a later run trusts.
"""
import collections
import glob
import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput

from pfdx.components import log_rows
from pfdx.components.splits import SPLITS
from pfdx.components.click_log_outputs import DEAD_LETTER_DIR
from pfdx.components.data_rules import DataError, check_rows, check_splits, format_dead_rows
from pfdx.components.click_log_transforms import ParseLogFile
from pfdx.config import ConfigError, load_config
from pfdx.simulator import simulate
from tests.pipeline_helpers import int_props, latest, make_config, run_example_gen, store

SCHEMA = log_rows.RowSchema.from_config(load_config().to_dict()["data"])


def _dead_letter(examples_uri):
    d = os.path.join(examples_uri, DEAD_LETTER_DIR)
    return [json.loads(line) for name in sorted(os.listdir(d)) for line in open(os.path.join(d, name))]


def _edit(frame, row, **values):
    for column, value in values.items():
        frame[column] = frame[column].astype(object)
        frame.at[row, column] = value


@pytest.mark.e2e
def test_every_bad_row_is_quarantined_with_its_reason_and_counted(tmp_path):
    frame = simulate.simulate(10_000, seed=6)
    clicked = frame.index[frame["click"] == 1]
    unclicked = frame.index[frame["click"] == 0]
    # Row r of the DataFrame is data row r + 1 of the CSV (1-based, after the header).
    bad = {
        clicked[0]: ({"bid": "abc"}, "field 'bid': 'abc' is not a number"),
        clicked[1]: ({"bid": "inf"}, "field 'bid': 'inf' is not finite"),
        clicked[2]: ({"duration": "nan"}, "field 'duration': 'nan' is not finite"),
        clicked[3]: ({"duration": "-4.0"}, "field 'duration': '-4.0' is negative"),
        clicked[4]: ({"conversion": "2"}, "field 'conversion': '2' is not 0/1"),
        clicked[5]: ({"page_jump": "3"}, "field 'page_jump': '3' is not 0/1"),
        unclicked[0]: ({"conversion": "1"}, "field 'conversion': conversion without a click"),
        unclicked[1]: ({"duration": "12.0"},
                       "field 'duration': post-click signal '12.0' on an unclicked row"),
    }
    for row, (values, _) in bad.items():
        _edit(frame, row, **values)
    logs = tmp_path / "logs"
    simulate.write(frame, str(logs), fmt="csv")
    (main,) = logs.glob("*.csv")
    lines = main.read_text().splitlines()
    wide = clicked[6]
    lines[wide + 1] += ",surplus"
    main.write_text("\n".join(lines) + "\n")
    extra = simulate.simulate(200, seed=9).assign(campaign_note="x")  # a column no role names
    extra.to_csv(logs / "extra.csv", index=False)
    (logs / "empty.csv").write_text("")
    (logs / "header_only.csv").write_text(",".join(frame.columns) + "\n")

    config = make_config(tmp_path)
    run_example_gen(config, str(logs))
    examples = latest(config, "Examples")
    counts = int_props(examples)
    assert counts["rows_read"] == 10_200
    assert counts["rows_quarantined"] == len(bad) + 1
    assert counts["rows_read"] == (counts["rows_used"] + counts["rows_unclicked"]
                                   + counts["rows_quarantined"])
    assert counts["rows_empty_files"] == 2 and counts["rows_unknown_column:campaign_note"] == 1
    by_field = {k.split(":", 1)[1]: v for k, v in counts.items()
                if k.startswith("rows_quarantined:")}
    assert by_field == {"bid": 2, "duration": 3, "conversion": 2, "page_jump": 1,
                        "wrong column count": 1}
    dead = {d["row"]: d for d in _dead_letter(examples.uri)}
    assert set(dead) == {r + 1 for r in bad} | {wide + 1}
    for row, (_, reason) in bad.items():
        assert dead[row + 1]["reason"].startswith(reason), dead[row + 1]
        assert dead[row + 1]["file"] == str(main)
    assert dead[wide + 1]["reason"].startswith("wrong column count")


@pytest.mark.e2e
def test_a_mostly_bad_log_fails_and_leaves_nothing_a_rerun_trusts(tmp_path):
    frame = simulate.simulate(3000, seed=7)
    clicked = frame.index[frame["click"] == 1]
    for row in clicked[::4]:  # a quarter of the clicks: far above the default 5 %
        _edit(frame, row, bid="n/a")
    logs = tmp_path / "logs"
    (path,) = simulate.write(frame, str(logs), fmt="csv")
    config = make_config(tmp_path)
    for _ in range(2):  # the same inputs again: the failed run is not served from cache
        with pytest.raises(ValueError) as failure:
            run_example_gen(config, str(logs))
        message = str(failure.value)
        assert "more than data.max_quarantined_fraction=0.05" in message
        assert f"'quarantined:bid': {len(clicked[::4])}" in message
        assert re.search(rf"\n  {path}:\d+: field 'bid': 'n/a' is not a number", message)
    s = store(config)
    executions = s.get_executions()
    assert [e.last_known_state for e in executions] == [executions[0].FAILED] * 2
    assert s.get_artifacts_by_type("Examples") == []
    # TFX removed what the failed executions wrote.
    assert glob.glob(os.path.join(config.pipeline_root, "ClickLogExampleGen", "examples", "*")) == []

    # (A small log: its validation split holds a handful of rows, maybe no conversion.)
    tolerant = make_config(tmp_path, "data.max_quarantined_fraction=0.3",
                           "data.min_split_positives=0", "data.min_split_rows=1")
    run_example_gen(tolerant, str(logs))
    assert int_props(latest(tolerant, "Examples"))["rows_quarantined"] == len(clicked[::4])


@pytest.mark.e2e
def test_no_matching_file_fails_naming_the_pattern(tmp_path):
    os.makedirs(tmp_path / "logs")
    (tmp_path / "logs" / "notes.txt").write_text("not a log")
    config = make_config(tmp_path, "data.file_pattern=*.csv")
    with pytest.raises(ValueError, match=r"no file in .*logs matches data.file_pattern='\*\.csv'"):
        run_example_gen(config, str(tmp_path / "logs"))


# The per-file DoFn of ClickLogExampleGen, driven directly (no Beam runner needed):
# the formats whose reading differs from CSV.

def _parse(path: str, fmt: str):
    (match,) = FileSystems.match([path])
    used, dead, counts = [], [], collections.Counter()
    for out in ParseLogFile(SCHEMA, fmt, ",").process(fileio.ReadableFile(match.metadata_list[0])):
        if not isinstance(out, TaggedOutput):
            used.append(out)
        elif out.tag == "dead":
            dead.append(json.loads(out.value))
        else:  # counted per file: (key, n)
            key, n = out.value
            counts[key] += n
    return used, dead, counts


def _clicked_rows(n):
    frame = simulate.simulate(2000, seed=8)
    return frame[frame["click"] == 1].head(n).reset_index(drop=True)


def test_parquet_nan_is_bad_but_null_is_missing(tmp_path):
    frame = _clicked_rows(3)
    path = str(tmp_path / "log.parquet")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    duration = pa.array([float("nan"), None, 5.0], type=pa.float64(), from_pandas=False)
    table = table.set_column(table.schema.get_field_index("duration"), "duration", duration)
    pq.write_table(table, path)
    used, dead, counts = _parse(path, "parquet")
    assert counts["read"] == 3 and counts["used"] == 2 and counts["quarantined:duration"] == 1
    assert dead == [{"file": path, "row": 1, "reason": "field 'duration': nan is not finite"}]
    assert "duration" not in tf.train.Example.FromString(used[0].serialized).features.feature  # null


def test_parquet_without_a_required_column_fails_naming_file_and_column(tmp_path):
    path = str(tmp_path / "log.parquet")
    _clicked_rows(2).drop(columns=["bid"]).to_parquet(path, index=False)
    with pytest.raises(log_rows.LogFormatError, match=r"log.parquet: missing required column\(s\) \['bid'\]"):
        _parse(path, "parquet")


def test_tfrecord_unknown_features_are_counted_and_missing_labels_quarantined(tmp_path):
    frame = _clicked_rows(3)
    frame["campaign_note"] = "x"
    frame["conversion"] = frame["conversion"].astype(float)
    frame.loc[2, "conversion"] = np.nan  # absent in the tf.Example
    (path,) = simulate.write(frame, str(tmp_path), fmt="tfrecord")
    used, dead, counts = _parse(path, "tfrecord")
    assert counts["unknown_column:campaign_note"] == 1  # once per file, not per row
    assert (counts["read"], counts["used"], counts["quarantined"]) == (3, 2, 1)
    assert dead[0]["row"] == 3 and dead[0]["reason"] == "field 'conversion': None is not a number"


def test_config_rejects_non_negative_columns_that_are_not_numeric():
    with pytest.raises(ConfigError, match=r"data.non_negative: \['user_id'\] are not numeric"):
        load_config(None, ["data.non_negative=[user_id]"])
    with pytest.raises(ConfigError, match="data.max_quarantined_fraction: 1.5"):
        load_config(None, ["data.max_quarantined_fraction=1.5"])


# Issue 17: inputs that used to be lost, changed or reported without a file name.

def test_a_parquet_list_is_quarantined_as_not_a_scalar(tmp_path):
    frame = _clicked_rows(2)
    path = str(tmp_path / "log.parquet")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    device = pa.array([["android", "zz"], ["ios"]], type=pa.list_(pa.string()))
    table = table.set_column(table.schema.get_field_index("device"), "device", device)
    pq.write_table(table, path)
    used, dead, counts = _parse(path, "parquet")
    assert counts["quarantined:device"] == 2 and used == []
    assert dead[0]["reason"] == "field 'device': ['android', 'zz'] is not a scalar"


def test_a_tfrecord_label_with_two_values_and_a_record_that_is_no_example(tmp_path):
    frame = _clicked_rows(2)
    (path,) = simulate.write(frame, str(tmp_path), fmt="tfrecord")
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    two = tf.train.Example.FromString(records[0])
    two.features.feature["conversion"].int64_list.value[:] = [0, 1]
    with tf.io.TFRecordWriter(path) as w:
        for raw in (two.SerializeToString(), b"\xff\xfenot a proto", records[1]):
            w.write(raw)
    used, dead, counts = _parse(path, "tfrecord")
    assert (counts["read"], counts["used"], counts["quarantined"]) == (3, 1, 2)
    assert dead[0] == {"file": path, "row": 1,
                       "reason": "field 'conversion': [0, 1] is not a scalar"}
    assert dead[1]["row"] == 2 and dead[1]["reason"].startswith("not a tf.Example record")


def test_broken_parquet_files_are_named_and_an_empty_one_is_counted(tmp_path):
    path = str(tmp_path / "log.parquet")
    _clicked_rows(50).to_parquet(path, index=False)
    whole = open(path, "rb").read()
    open(path, "wb").write(whole[: len(whole) // 2])
    with pytest.raises(log_rows.LogFormatError, match=r"log.parquet: not a readable Parquet"):
        _parse(path, "parquet")
    open(path, "wb").write(b"")
    assert _parse(path, "parquet")[2] == {"empty_files": 1}


@pytest.mark.parametrize("name", ["_SUCCESS", ".part-0.parquet.crc", "_common_metadata"])
def test_spark_side_files_are_skipped_and_counted(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01 not a log")
    assert _parse(str(path), "parquet") == ([], [], {"side_files": 1})


@pytest.mark.e2e
def test_damaged_csv_every_row_accounted_for_and_side_files_counted(tmp_path):
    """Issue 17, items 1, 2, 6, 7, 8, 14 through ExampleGen: a BOM, TRUE/FALSE labels,
    one latin-1 byte, a bid finite only in float64, Spark side files and a subfolder."""
    frame = simulate.simulate(5000, seed=1)
    clicked = frame.index[frame["click"] == 1]
    _edit(frame, clicked[3], bid="1e39")
    for column in ("click", "conversion"):
        frame[column] = frame[column].map({0: "FALSE", 1: "TRUE"})
    logs = tmp_path / "logs"
    (path,) = simulate.write(frame, str(logs), fmt="csv")
    data = open(path, "rb").read()
    lines = data.split(b"\n")
    target = clicked[10] + 1  # the CSV line of a clicked row
    cells = lines[target].split(b",")
    device = list(frame.columns).index("device")
    cells[device] = cells[device] + b"\xe9"
    lines[target] = b",".join(cells)
    open(path, "wb").write(b"\xef\xbb\xbf" + b"\n".join(lines))
    (logs / "_SUCCESS").write_bytes(b"")
    (logs / ".part-0.csv.crc").write_bytes(b"\x00crc")
    (logs / "2023").mkdir()
    frame.head(10).to_csv(logs / "2023" / "old.csv", index=False)

    config = make_config(tmp_path, "data.min_split_positives=0")  # a small log
    run_example_gen(config, str(logs))
    examples = latest(config, "Examples")
    counts = int_props(examples)
    assert counts["rows_read"] == 5000 == (counts["rows_used"] + counts["rows_unclicked"]
                                           + counts["rows_quarantined"])
    assert counts["rows_used"] == len(clicked) - 2
    assert counts["rows_side_files"] == 2 and counts["rows_subfolder:2023"] == 1
    assert sum(counts[f"rows_split:{s}"] for s in SPLITS) == counts["rows_used"]
    dead = {d["row"]: d["reason"] for d in _dead_letter(examples.uri)}
    assert dead == {clicked[3] + 1: "field 'bid': '1e39' is out of range of its stored type",
                    clicked[10] + 1: "field 'device': b'" + frame.at[clicked[10], "device"]
                    + "\\xe9' is not UTF-8 text"}


@pytest.mark.e2e
@pytest.mark.parametrize("damage, message", [
    # One clicked row logged in milliseconds among seconds: the later splits are empty.
    ("milliseconds", r"the validation split holds 0 rows with 0 positive 'conversion' labels; "
                     r"each split needs data.min_split_rows=10 rows .*The split is by time: "
                     r"data.time_column 'event_time' ranges from \d{10} to \d{13}"),
    ("one_class", r"the label column 'conversion' has one class: all \d+ used rows are 0"),
])
def test_data_that_cannot_train_stops_at_example_gen(tmp_path, damage, message):
    # Issue 17, items 11 and 12.
    frame = simulate.simulate(3000, seed=6)
    if damage == "milliseconds":
        row = frame.index[frame["click"] == 1][5]
        frame.at[row, "event_time"] = frame.at[row, "event_time"] * 1000
    else:
        frame["conversion"] = 0
    simulate.write(frame, str(tmp_path / "logs"), fmt="csv")
    with pytest.raises(ValueError, match=message):
        run_example_gen(make_config(tmp_path), str(tmp_path / "logs"))


DATA = load_config().to_dict()["data"]


def _split_counts(**splits):
    return {k: v for name, (rows, positives) in splits.items()
            for k, v in ((f"split:{name}", rows), (f"split_positives:{name}", positives))}


def test_the_splits_rule_names_the_time_column_and_its_range():
    # All-equal timestamps put every row in the eval split.
    counts = _split_counts(train=(0, 0), validation=(0, 0), eval=(500, 40))
    with pytest.raises(DataError, match=r"the train split holds 0 rows .* data.time_column "
                                        r"'event_time' ranges from 1700000000 to 1700000000"):
        check_splits(counts, DATA, (1.7e9, 1.7e9))
    with pytest.raises(DataError, match=r"the eval split holds 500 rows with 0 positive .*"
                                        r"by a hash of each row"):
        check_splits(_split_counts(train=(800, 9), validation=(200, 2), eval=(500, 0)), DATA, None)
    check_splits(_split_counts(train=(800, 9), validation=(200, 2), eval=(500, 1)), DATA, None)
    with pytest.raises(DataError, match="has one class: all 1500 used rows are 1"):
        check_splits(_split_counts(train=(800, 800), validation=(200, 200), eval=(500, 500)),
                     DATA, None)


def test_the_rows_rule_counts_unclicked_rows_in_impression_space_only():
    counts = {"read": 110, "used": 50, "unclicked": 50, "quarantined": 10}
    with pytest.raises(DataError, match=r"10 of the 60 .* data.max_quarantined_fraction=0.05"
                                        r".*\n  f.csv:3: bad"):
        check_rows(counts, DATA, False, "logs", lambda: format_dead_rows(
            [{"file": "f.csv", "row": 3, "reason": "bad"}]))
    with pytest.raises(DataError, match="10 of the 110"):
        check_rows(counts, DATA, True, "logs")
    check_rows(counts, dict(DATA, max_quarantined_fraction=0.1), True, "logs")
