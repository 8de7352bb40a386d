"""Spans (issue 20 item 1): ClickLogExampleGen reads TFX span patterns, the latest span
or the last N, records them in MLMD, cuts eval from the newest span; `pfdx simulate
--days` writes one folder per day. The e2e tests run the real component on tiny logs."""
import datetime
import glob
import os
import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.components.example_gen import utils as tfx_utils

from pfdx.components import splits
from pfdx.components.click_log_example_gen import ClickLogExampleGen
from pfdx.components.click_log_spans import SPAN_PATTERN_PROPERTY, SPANS_PROPERTY, older_spans
from pfdx.config import ConfigError, load_config
from pfdx.simulator import simulate
from tests.pipeline_helpers import int_props, latest, make_config, run_example_gen, store

DATES = "day={YYYY}-{MM}-{DD}/*.csv"
DAY_SECONDS = 86_400


@pytest.mark.parametrize("overrides, message", [
    (["data.spans.num_spans=0", f"data.file_pattern={DATES}"],
     "data.spans.num_spans: 0 is below 1"),
    (["data.spans.num_spans=3"], "data.spans.num_spans: set, but data.file_pattern '*' has no "
                                 "span placeholder"),
    ([f"data.file_pattern={DATES}", "data.spans.eval_split=last"],
     "data.spans.eval_split: 'last' is not one of tail, newest_span"),
    ([f"data.file_pattern={DATES}", "data.spans.eval_split=newest_span"],
     "data.spans.eval_split: 'newest_span' makes the newest span the eval split; it needs "
     "data.spans.num_spans >= 2"),
    (["data.file_pattern=d={SPAN}/{SPAN}.csv"], "data.file_pattern: 'd={SPAN}/{SPAN}.csv': only "
                                               "one {SPAN} is allowed"),
    (["data.file_pattern=d={SPAN}-{YYYY}-{MM}-{DD}/*"], "{SPAN} and the date specs"),
    (["data.file_pattern=d={YYYY}-{MM}/*"], "each of {YYYY}, {MM}, {DD} must appear exactly once"),
    (["data.file_pattern=d={SPAN:w}/*"], "the width of {SPAN:width} is not a positive integer"),
    (["data.file_pattern=v={VERSION}/*"], "{VERSION} needs a {SPAN} or date placeholder"),
    (["data.spans.window=3"], "data.spans: unknown key(s) ['window']"),
])
def test_span_config_errors_name_their_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


def test_span_settings_default_to_the_latest_span_and_the_tail():
    c = load_config(None, [f"data.file_pattern={DATES}"])
    assert (c.data.spans.num_spans, c.data.spans.eval_split) == (1, "tail")
    c = load_config(None, ["data.file_pattern=day={SPAN:3}/*.csv", "data.spans.num_spans=7",
                           "data.spans.eval_split=newest_span"])
    assert (c.data.spans.num_spans, c.data.spans.eval_split) == (7, "newest_span")


def test_one_span_splits_as_before_and_eval_stays_in_the_newest_span():
    # One span: the cuts of a run without spans.
    assert splits.span_time_cuts((0, 100), (0, 100), None, 0.2, 0.25, False) == pytest.approx(
        splits.time_cuts(0, 100, 0.2, 0.25))
    # Days [0, 100), [100, 200), [200, 300): eval is the last 20 % of day 3 ...
    cuts = splits.span_time_cuts((0, 299), (200, 299), (0, 199), 0.2, 0.25, False)
    assert cuts[0] == pytest.approx(299 - 0.2 * 99)
    assert cuts[1] == pytest.approx(cuts[0] - 0.25 * cuts[0])
    assert splits.split_by_span_time(290, True, cuts) == 2
    # ... and never an older span's row, whatever its time says.
    assert splits.split_by_span_time(290, False, cuts) == 1
    assert splits.split_by_span_time(10, False, cuts) == 0
    # newest_span: all of day 3 is eval; validation is the end of days 1-2.
    cuts = splits.span_time_cuts((0, 299), (200, 299), (0, 199), 0.2, 0.25, True)
    assert splits.split_by_span_time(200, True, cuts) == 2
    assert cuts[1] == pytest.approx(199 - 0.25 * 199)
    assert [splits.split_by_span_hash(b"x%d" % i, True, 0.2, 0.25, True)
            for i in range(5)] == [2] * 5
    assert {splits.split_by_span_hash(b"x%d" % i, False, 0.2, 0.25, False)
            for i in range(200)} == {0, 1}


def _days(tmp_path, days=3, rows=18_000, fmt="csv"):
    frame = simulate.simulate(rows, seed=3, days=days)
    logs = tmp_path / "logs"
    simulate.write_days(frame, str(logs), fmt=fmt)
    return frame, str(logs)


def _span(date: str) -> int:
    return tfx_utils.date_to_span_number(*map(int, date.split("-")))


def test_simulate_days_writes_one_folder_per_day_with_its_own_times(tmp_path):
    frame, logs = _days(tmp_path, rows=3000)
    folders = sorted(os.listdir(logs))
    assert folders == ["day=2024-01-01", "day=2024-01-02", "day=2024-01-03"]
    total = 0
    for folder in folders:
        (path,) = glob.glob(os.path.join(logs, folder, "*.csv"))
        times = pd.read_csv(path)["event_time"]
        total += len(times)
        # TFX's date span of the folder is the UTC day of every event time in it.
        assert set(times // DAY_SECONDS) == {_span(folder.split("=")[1])}
    assert total == len(frame)
    # The days share users and ads (one simulation), and without --days nothing changes.
    pd.testing.assert_frame_equal(simulate.simulate(500, seed=3),
                                  simulate.simulate(500, seed=3, days=14))


def test_simulate_cli_days(tmp_path, capsys):
    from pfdx.pipeline import cli

    out = tmp_path / "sim"
    assert cli.main(["simulate", "--rows", "900", "--days", "2", "--out", str(out),
                     "--format", "parquet"]) == 0
    assert sorted(os.listdir(out)) == ["day=2024-01-01", "day=2024-01-02"]
    assert 'data.file_pattern: "day={YYYY}-{MM}-{DD}/*.parquet"' in capsys.readouterr().out
    day2 = pd.read_parquet(glob.glob(str(out / "day=2024-01-02" / "*.parquet"))[0])
    assert (day2["event_time"] // DAY_SECONDS == _span("2024-01-02")).all()


def test_older_spans_resolve_with_tfx_utilities_and_skip_a_missing_day(tmp_path):
    for folder in ("day=1", "day=2", "day=4", "day=5"):  # no day 3
        os.makedirs(tmp_path / folder)
        (tmp_path / folder / "a.csv").write_text("x\n1\n")
    older = older_spans(str(tmp_path), "day={SPAN}/*.csv", 5, 4)
    assert [(span, pattern) for span, pattern, _ in older] == [(2, "day=2/*.csv"),
                                                             (4, "day=4/*.csv")]
    assert older_spans(str(tmp_path), "day={SPAN}/*.csv", 5, 1) == []


# --- the real component (LocalDagRunner), spans read back from MLMD -------------------

def _eval_times(examples_uri: str, split: str = "eval") -> np.ndarray:
    files = glob.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    times = []
    for raw in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(raw.numpy())
        times.append(example.features.feature["event_time"].int64_list.value[0])
    return np.array(times)


def _clicks_per_day(frame):
    clicked = frame[frame["click"] == 1]
    return clicked.groupby(clicked["event_time"] // DAY_SECONDS).size().to_dict()


@pytest.mark.e2e
def test_latest_span_is_read_and_recorded(tmp_path):
    frame, logs = _days(tmp_path)
    config = make_config(tmp_path, f"data.file_pattern={DATES}")
    run_example_gen(config, logs)
    examples = latest(config, "Examples")
    newest = _span("2024-01-03")
    assert examples.custom_properties["span"].int_value == newest
    assert examples.custom_properties[SPANS_PROPERTY].string_value == str(newest)
    assert examples.custom_properties[SPAN_PATTERN_PROPERTY].string_value == DATES
    assert int_props(examples)["rows_used"] == _clicks_per_day(frame)[newest]
    for split in splits.SPLITS:
        assert set(_eval_times(examples.uri, split) // DAY_SECONDS) == {newest}


@pytest.mark.e2e
def test_rolling_range_reads_the_last_n_spans_and_eval_is_the_newest_spans_tail(tmp_path):
    frame, logs = _days(tmp_path, days=4, rows=24_000)
    config = make_config(tmp_path, f"data.file_pattern={DATES}", "data.spans.num_spans=3")
    run_example_gen(config, logs)
    examples = latest(config, "Examples")
    spans = [_span(d) for d in ("2024-01-02", "2024-01-03", "2024-01-04")]
    assert examples.custom_properties["span"].int_value == spans[-1]
    assert examples.custom_properties[SPANS_PROPERTY].string_value == ",".join(map(str, spans))
    per_day = _clicks_per_day(frame)
    assert int_props(examples)["rows_used"] == sum(per_day[s] for s in spans)
    train_days = set(_eval_times(examples.uri, "train") // DAY_SECONDS)
    assert train_days == set(spans[:-1]) | ({spans[-1]} & train_days)
    eval_times = _eval_times(examples.uri)
    assert set(eval_times // DAY_SECONDS) == {spans[-1]}
    newest = frame[(frame["click"] == 1) & (frame["event_time"] // DAY_SECONDS == spans[-1])]
    lo, hi = newest["event_time"].min(), newest["event_time"].max()
    assert eval_times.min() >= hi - 0.2 * (hi - lo)  # the last eval_fraction of the day
    assert len(eval_times) < 0.3 * len(newest)

    # The older spans are part of the input fingerprint (this component's driver), so
    # with the cache on, a changed older day is re-read and an unchanged input is not.
    fingerprint = examples.custom_properties["input_fingerprint"].string_value
    assert [f"span {s}" in fingerprint for s in spans] == [True, True, False]
    _run_cached(config, logs)  # unchanged: served from cache (the first run's output)
    assert len(store(config).get_artifacts_by_type("Examples")) == 1
    old_file = glob.glob(os.path.join(logs, "day=2024-01-02", "*.csv"))[0]
    stat = os.stat(old_file)
    os.utime(old_file, (stat.st_atime, stat.st_mtime + 5))
    _run_cached(config, logs)
    assert len(store(config).get_artifacts_by_type("Examples")) == 2


def _run_cached(config, input_base):
    gen = ClickLogExampleGen(input_base=input_base, data_config=config.to_dict()["data"],
                             pattern=config.data.file_pattern)
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="example_gen_only", pipeline_root=config.pipeline_root, components=[gen],
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path),
        beam_pipeline_args=config.beam_pipeline_args))


@pytest.mark.e2e
def test_newest_span_as_eval_split(tmp_path):
    frame, logs = _days(tmp_path)
    config = make_config(tmp_path, f"data.file_pattern={DATES}", "data.spans.num_spans=2",
                         "data.spans.eval_split=newest_span")
    run_example_gen(config, logs)
    examples = latest(config, "Examples")
    newest = _span("2024-01-03")
    assert int_props(examples)["rows_split:eval"] == _clicks_per_day(frame)[newest]
    assert set(_eval_times(examples.uri) // DAY_SECONDS) == {newest}
    assert set(_eval_times(examples.uri, "validation") // DAY_SECONDS) == {newest - 1}


@pytest.mark.e2e
def test_a_folder_without_span_placeholder_reads_everything_as_before(tmp_path):
    frame, logs = _days(tmp_path)
    config = make_config(tmp_path, "data.file_pattern=*/*.csv")
    run_example_gen(config, logs)
    examples = latest(config, "Examples")
    assert SPANS_PROPERTY not in examples.custom_properties
    assert examples.custom_properties["span"].int_value == 0
    counts = int_props(examples)
    assert counts["rows_used"] == int(frame["click"].sum())
    clicked = frame[frame["click"] == 1]["event_time"]
    eval_cut, validation_cut = splits.time_cuts(clicked.min(), clicked.max(), 0.2, 0.2)
    assert counts["rows_split:eval"] == int((clicked >= eval_cut).sum())
    assert counts["rows_split:validation"] == int(((clicked >= validation_cut)
                                                   & (clicked < eval_cut)).sum())


# --- Kubeflow: the compiled spec carries the span settings, num_spans a run parameter --

def test_kubeflow_spec_carries_the_span_settings_and_num_spans_is_a_run_parameter(tmp_path):
    import json

    from pfdx.pipeline import cli

    out = tmp_path / "pipeline.json"
    settings = ["kubeflow.pipeline_root=gs://acme-ml/pfdx", "kubeflow.data_path=gs://acme-ml/logs",
                f"data.file_pattern={DATES}", "data.spans.num_spans=7",
                "data.spans.eval_split=newest_span"]
    argv = ["compile-kubeflow", "--out", str(out), "--image", "pfdx:test"]
    assert cli.main(argv + [a for s in settings for a in ("--set", s)]) == 0
    job = json.loads(out.read_text())
    root = job["pipelineSpec"]["root"]
    assert root["inputDefinitions"]["parameters"]["num_spans"]["parameterType"] == "NUMBER_INTEGER"
    assert job["runtimeConfig"]["parameterValues"]["num_spans"] == 7
    (gen,) = [t for t in root["dag"]["tasks"] if t == "ClickLogExampleGen"]
    inputs = root["dag"]["tasks"][gen]["inputs"]["parameters"]
    assert inputs["num_spans"] == {"componentInputParameter": "num_spans"}
    custom = json.dumps(inputs["custom_config"])
    assert "newest_span" in custom and "{YYYY}-{MM}-{DD}" in custom
    # A pattern without spans: no num_spans parameter, the spec as before.
    plain = tmp_path / "plain.json"
    assert cli.main(argv[:2] + [str(plain)] + argv[3:]
                    + [a for s in settings[:2] for a in ("--set", s)]) == 0
    assert "num_spans" not in json.loads(plain.read_text())["runtimeConfig"]["parameterValues"]
    # `pfdx schedule` can set it per recurring run.
    from pfdx.pipeline import kubeflow_schedule

    assert kubeflow_schedule.run_parameters(job, ["num_spans=3"])["num_spans"] == 3


@pytest.mark.e2e
def test_executor_alone_resolves_the_span_where_no_driver_ran(tmp_path):
    """Orchestrators that skip TFX's ExampleGen driver: the executor resolves the span."""
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from pfdx.components.click_log_executor import Executor

    _, logs = _days(tmp_path)
    config = make_config(tmp_path, f"data.file_pattern={DATES}", "data.spans.num_spans=2")
    component = ClickLogExampleGen(logs, config.to_dict()["data"], config.data.file_pattern)
    props = {k: proto_utils.proto_to_json(v) if hasattr(v, "DESCRIPTOR") else v
             for k, v in component.exec_properties.items() if v is not None}
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    os.makedirs(examples.uri)
    Executor().Do({}, {"examples": [examples]}, props)
    spans = [_span("2024-01-02"), _span("2024-01-03")]
    assert examples.get_int_custom_property("span") == spans[-1]
    assert examples.get_string_custom_property(SPANS_PROPERTY) == ",".join(map(str, spans))
    assert set(_eval_times(examples.uri) // DAY_SECONDS) == {spans[-1]}


@pytest.mark.e2e
def test_no_span_folder_fails_naming_the_pattern(tmp_path):
    _, logs = _days(tmp_path, rows=3000)
    config = make_config(tmp_path, "data.file_pattern=day={SPAN}/*.csv")  # date folders
    with pytest.raises(ValueError, match=re.escape(
            "cannot resolve the span of data.file_pattern='day={SPAN}/*.csv' in")):
        run_example_gen(config, logs)
    with pytest.raises(ValueError, match=re.escape(
            "cannot resolve the span of data.file_pattern='d={SPAN}/*.csv' in")):
        run_example_gen(make_config(tmp_path, "data.file_pattern=d={SPAN}/*.csv"), logs)


@pytest.mark.e2e
def test_daily_runs_each_read_their_own_span_and_pass_the_drift_gate(tmp_path):
    """Day 1, then day 2, then day 3 lands: each run reads only its span (MLMD), and the
    validation gate passes each day against the schema the previous day validated."""
    import shutil

    from pfdx.pipeline import dag

    simulate.write_days(simulate.simulate(60_000, seed=3, days=3), str(tmp_path / "all"))
    config = make_config(tmp_path, f"data.file_pattern={DATES}", "runner.enable_cache=true")
    components = dag.create_components(config, str(tmp_path / "logs"), config.serving_dir)
    keep = components[:[c.id for c in components].index("ValidationGate") + 1]
    for c in keep:
        for d in list(c.downstream_nodes):
            if d not in keep:
                c.remove_downstream_node(d)
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="daily", pipeline_root=config.pipeline_root, components=keep,
        enable_cache=True, beam_pipeline_args=config.beam_pipeline_args,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path))
    read = []
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        shutil.copytree(tmp_path / "all" / f"day={day}", tmp_path / "logs" / f"day={day}")
        tfx.orchestration.LocalDagRunner().run(pipeline)
        examples = latest(config, "Examples")
        read.append((examples.custom_properties["span"].int_value,
                     examples.custom_properties[SPANS_PROPERTY].string_value))
    assert read == [(_span(d), str(_span(d))) for d in ("2024-01-01", "2024-01-02", "2024-01-03")]
    s = store(config)
    (gate,) = [c for c in s.get_contexts_by_type("node") if c.name.endswith(".ValidationGate")]
    states = [e.last_known_state for e in s.get_executions_by_context(gate.id)]
    assert states == [metadata_store_pb2.Execution.COMPLETE] * 3
