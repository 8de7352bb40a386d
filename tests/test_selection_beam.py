"""The selection Beam job, its CLI hook and the TFX component, against the numpy reference."""
import argparse
import dataclasses
import gzip
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pfdx.components.privileged_feature_selection import (
    Executor, PrivilegedFeatureSelection, PrivilegedFeatureSelectionResult, load_selection)
from pfdx.config import ColumnRoles, DataConfig, PipelineConfig, SelectionConfig
from pfdx.features import selection_beam, selection_cli, selection_policy, selection_report
from pfdx.features.selection import correlation_threshold, mutual_information
from pfdx.simulator import simulate

IN_MEMORY = ["--direct_running_mode=in_memory"]


def reference(frame, config):
    """The numpy reference on the rows as tf.Example stores them (float32)."""
    roles = config.data.columns
    columns = {c: np.asarray(frame[c], np.float32).astype(np.float64) for c in roles.privileged}
    stats = selection_policy.reference_stats(columns, np.asarray(frame[roles.label]),
                                             config.selection, roles)
    return json.loads(json.dumps(selection_policy.select(stats, config.selection, roles)))


def write_examples(columns, path, int_columns=()):
    """tf.Examples, one per row, gzip when `path` ends in .gz; NaN -> absent feature."""
    n = len(next(iter(columns.values())))
    options = tf.io.TFRecordOptions(compression_type="GZIP" if path.endswith(".gz") else "")
    with tf.io.TFRecordWriter(path, options) as writer:
        for i in range(n):
            feature = {}
            for name, values in columns.items():
                v = values[i]
                if name in int_columns:
                    feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
                elif not np.isnan(v):
                    feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


# Simulated log, written as ExampleGen writes it ------------------------------------

@pytest.fixture(scope="module")
def sim_log():
    # ~15k clicks: enough that the ranking of the simulated signals is stable.
    return simulate.simulate(400_000, seed=5)


@pytest.fixture(scope="module")
def clicks(sim_log):
    return sim_log[sim_log["click"] == 1].reset_index(drop=True)


@pytest.fixture(scope="module")
def examples_dir(clicks, tmp_path_factory):
    """<dir>/Split-{train,eval}/*.gz; eval holds only leaks so reading it would show."""
    root = tmp_path_factory.mktemp("examples")
    raw = simulate.write(clicks, str(root / "raw"), fmt="tfrecord", shards=2)
    for split, paths in (("train", raw), ("eval", raw[:1])):
        os.makedirs(root / f"Split-{split}")
        for i, path in enumerate(paths):
            with open(path, "rb") as src, gzip.open(
                    root / f"Split-{split}" / f"data_tfrecord-{i:05d}-of-00002.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
    shutil.rmtree(root / "raw")
    return str(root)


@pytest.fixture(scope="module")
def beam_result(examples_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("standalone") / "selection.json"
    result = selection_beam.run_standalone(examples_dir, str(out), PipelineConfig(), IN_MEMORY)
    return result, out


def test_beam_equals_reference_on_simulated_log(beam_result, clicks):
    result, out = beam_result
    want = reference(clicks, PipelineConfig())
    for name, f in want["features"].items():
        got = result["features"][name]
        assert got.get("threshold") == f.get("threshold"), name  # exactly
        assert got["mutual_information"] == pytest.approx(f["mutual_information"], abs=1e-9)
        assert got.get("gap") == pytest.approx(f.get("gap"), abs=1e-9)
    assert result == want  # every field, in exact mode
    assert out.read_text() == selection_report.dumps(result)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_leaks_are_dropped_and_noise_is_not_selected(beam_result):
    result, _ = beam_result
    f = result["features"]
    assert {n for n in f if f[n]["reason"] == "too_informative"} == {
        "payment_page_visit", "order_form_submit"}
    for noise in ("noise_flag", "noise_scroll_speed"):
        assert not f[noise]["chosen"] and noise not in result["selected"]
    # The paper's accounting: 16 candidates - 2 dropped - 2 below the top 12, 3 OR-ed -> 10.
    assert len(result["selected"]) == 10
    assert result["or_groups"] == {"interact": ["tag", "like", "share"]}


def test_multiprocessing_run_is_byte_identical(examples_dir, tmp_path):
    # Small tables: every continuous signal is bucketed, the mode where merge order
    # could matter.
    config = PipelineConfig(selection=SelectionConfig(max_distinct_values=300))
    outs = []
    for mode in (IN_MEMORY, ["--direct_running_mode=multi_processing",
                             "--direct_num_workers=2"]):
        outs.append(tmp_path / f"{len(outs)}.json")
        result = selection_beam.run_standalone(examples_dir, str(outs[-1]), config, mode)
    assert {result["features"][n]["mode"] for n in result["thresholds"]} == {"bucketed"}
    assert outs[0].read_bytes() == outs[1].read_bytes()


# Hand-made edge cases ---------------------------------------------------------------

EDGE_ROLES = ColumnRoles(label="y", click="clicked", privileged_continuous=("neg", "wide", "const"),
                         privileged_discrete=("f1", "f2", "f3"))
EDGE_SELECTION = SelectionConfig(drop_top_k=1, keep_top_n=4, min_support=20,
                                 or_groups={"g": ("f1", "f2")})


@pytest.fixture(scope="module")
def edge_rows():
    rng = np.random.default_rng(0)
    n = 3000
    clicked = (rng.random(n) < 0.9).astype(np.int64)
    y = ((rng.random(n) < 0.3) & (clicked == 1)).astype(np.int64)
    neg = np.round(rng.normal(0, 5, n), 1) + 2 * y  # negatives, ties
    neg[rng.random(n) < 0.05] = -0.0
    neg[rng.random(n) < 0.1] = np.nan  # missing on clicked rows too
    flag = lambda p, q: np.where(y == 1, rng.random(n) < p, rng.random(n) < q).astype(float)
    f1 = flag(0.1, 0.03)
    f1[rng.random(n) < 0.05] = np.nan
    return {"y": y, "clicked": clicked, "neg": neg,
            "wide": np.round(np.exp(rng.normal(3 + y, 1.5, n)), 3),  # ~3000 distinct values
            "const": np.full(n, 7.0), "f1": f1, "f2": flag(0.08, 0.02), "f3": flag(0.9, 0.1)}


@pytest.fixture(scope="module")
def edge_dir(edge_rows, tmp_path_factory):
    """Uncompressed shards (the simulator's output; gzip is covered above)."""
    root = tmp_path_factory.mktemp("edge")
    half = len(edge_rows["y"]) // 2
    for i, part in enumerate((slice(0, half), slice(half, None))):
        write_examples({k: v[part] for k, v in edge_rows.items()}, str(root / f"{i}.tfrecord"),
                       int_columns=("y", "clicked"))
    return str(root)


def _edge_config(**selection):
    return PipelineConfig(data=DataConfig(columns=EDGE_ROLES),
                          selection=dataclasses.replace(EDGE_SELECTION, **selection))


def test_edge_cases_equal_reference(edge_rows, edge_dir, tmp_path):
    config = _edge_config()
    result = selection_beam.run_standalone(edge_dir, str(tmp_path / "s.json"), config, IN_MEMORY)
    clicked = {k: v[edge_rows["clicked"] == 1] for k, v in edge_rows.items()}
    want = reference(clicked, config)
    unclicked = int((edge_rows["clicked"] == 0).sum())
    want["rows"]["unclicked_skipped"] = unclicked  # the reference gets clicked rows only
    assert result == want
    f = result["features"]
    assert f["neg"]["missing"] == int(np.isnan(clicked["neg"]).sum()) > 0
    assert f["const"]["reason"] == "no_split"
    assert result["rows"] == {"clicked": len(clicked["y"]), "conversions": int(clicked["y"].sum()),
                              "unclicked_skipped": unclicked}


def test_bucketed_mode_keeps_exact_r_at_bucket_edges(edge_rows, edge_dir, tmp_path):
    config = _edge_config(max_distinct_values=40, quantile_buckets=16, min_part_fraction=0.05)
    result = selection_beam.run_standalone(edge_dir, str(tmp_path / "s.json"), config, IN_MEMORY)
    keep = edge_rows["clicked"] == 1
    for name in ("neg", "wide"):
        f = result["features"][name]
        assert (f["mode"], f["distinct_values"]) == ("bucketed", None) and f["buckets"] <= 16
        present = keep & ~np.isnan(edge_rows[name])
        z = edge_rows[name][present].astype(np.float32).astype(np.float64)
        y = edge_rows["y"][present]
        t = f["threshold"]
        assert t in z
        upper = z >= t
        r = [np.nan_to_num(np.corrcoef(z[part], y[part])[0, 1]) for part in (~upper, upper)]
        assert f["gap"] == pytest.approx(abs(r[0] - r[1]), abs=1e-9)
        assert f["gap"] <= correlation_threshold(z, y, min_part_fraction=0.05)[1] + 1e-12
        assert f["mutual_information"] == pytest.approx(mutual_information(upper * 1.0, y),
                                                        abs=1e-9)


def test_value_table_merge_is_order_independent():
    rng = np.random.default_rng(1)
    z = np.round(rng.lognormal(2, 2, 6000), 2)
    y = (rng.random(6000) < 0.2).astype(np.int64)
    parts = np.array_split(rng.permutation(6000), 7)
    tables = [selection_beam.ValueTable.from_rows(z[p], y[p], 0, cap=100) for p in parts]
    one = selection_beam.ValueTable.merge(tables, cap=100)
    other = selection_beam.ValueTable.merge(
        [selection_beam.ValueTable.merge(tables[4:], 100),
         selection_beam.ValueTable.merge(tables[:4][::-1], 100)], cap=100)
    assert one.level == other.level > 0 and len(one.keys) <= 100
    for field in ("keys", "lo", "hi", "n", "ny"):
        np.testing.assert_array_equal(getattr(one, field), getattr(other, field))
    for field in ("sz", "szz", "szy"):
        np.testing.assert_allclose(getattr(one, field), getattr(other, field), rtol=1e-12)


# Bad input ----------------------------------------------------------------------------

def _serialized(**features):
    feature = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=v)) if isinstance(v[0], int)
               else tf.train.Feature(float_list=tf.train.FloatList(value=v))
               for k, v in features.items()}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.mark.parametrize("example, message", [
    (_serialized(duration=[1.0]), "label 'conversion' is missing in 1 of 1 examples"),
    (_serialized(conversion=[2]), "label 'conversion' holds 2; expected 0/1"),
    (_serialized(conversion=[1.0]), "not tf.Examples of the data contract"),
    (_serialized(conversion=[1], duration=[1.0, 2.0]), "feature 'duration' holds 2 values"),
    (_serialized(conversion=[1], duration=[float("inf")]), "'duration' holds an infinite value"),
])
def test_bad_examples_are_named(example, message):
    with pytest.raises(ValueError, match=message):
        selection_beam.decode_examples([example], PipelineConfig().data.columns, "f.gz")


def test_bad_input_fails_the_job_with_the_feature_named(tmp_path):
    write_examples({"conversion": np.array([1, 0]), "tag": np.array([1.0, 3.0])},
                   str(tmp_path / "bad.gz"), int_columns=("conversion",))
    with pytest.raises(Exception, match="privileged_discrete feature 'tag' holds 3"):
        selection_beam.run_standalone(str(tmp_path / "*.gz"), str(tmp_path / "s.json"),
                                      PipelineConfig(), IN_MEMORY)
    with pytest.raises(FileNotFoundError, match="no file matches"):
        selection_beam.run_standalone(str(tmp_path / "nothing-*"), str(tmp_path / "s.json"),
                                      PipelineConfig(), IN_MEMORY)


# CLI hook and component -----------------------------------------------------------------

def test_cli_on_a_raw_simulated_log(sim_log, tmp_path, capsys):
    """The simulator's own TFRecords: every impression, unclicked rows skipped."""
    rows = sim_log.iloc[:6000]
    simulate.write(rows, str(tmp_path / "log"), fmt="tfrecord")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)

    def add_config_args(p):
        p.add_argument("--config")
        p.add_argument("--set", dest="overrides", action="append", default=[])

    selection_cli.add_cli_parser(sub, add_config_args)
    out = tmp_path / "out" / "sel.json"
    args = parser.parse_args(["select-features", "--data", str(tmp_path / "log" / "*.tfrecord"),
                              "--out", str(out), "--set", "selection.min_support=5",
                              "--beam-arg=--direct_running_mode=in_memory"])
    assert args.func(args) == 0
    result = load_selection(str(out))
    config = PipelineConfig(selection=SelectionConfig(min_support=5))
    want = reference(rows[rows["click"] == 1], config)
    want["rows"]["unclicked_skipped"] = int((rows["click"] == 0).sum())
    assert result == want
    assert "privileged features from" in capsys.readouterr().out
    assert (tmp_path / "out" / "sel.png").exists()


def _artifacts(examples_dir, out_uri):
    from tfx.types import standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = examples_dir
    examples.splits = ["train", "eval"]
    out = PrivilegedFeatureSelectionResult()
    out.uri = out_uri
    os.makedirs(out_uri, exist_ok=True)
    return examples, out


def test_component_interface():
    from tfx import types
    from tfx.types import standard_artifacts

    config = PipelineConfig()
    component = PrivilegedFeatureSelection(
        examples=types.Channel(type=standard_artifacts.Examples), config=config)
    assert component.outputs["selection"].type_name == "pfdx.PrivilegedFeatureSelectionResult"
    assert json.loads(component.exec_properties["selection_config"]) == json.loads(
        json.dumps(config.to_dict()["selection"]))
    assert json.loads(component.exec_properties["column_roles"])["label"] == "conversion"


def test_executor_writes_the_artifact(examples_dir, clicks, tmp_path):
    from tfx import types
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    config = PipelineConfig()
    props = PrivilegedFeatureSelection(
        examples=types.Channel(type=standard_artifacts.Examples), config=config).exec_properties
    examples, out = _artifacts(examples_dir, str(tmp_path / "selection"))
    executor = Executor(base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=IN_MEMORY, tmp_dir=str(tmp_path / "tmp"), unique_id="1"))
    executor.Do({"examples": [examples]}, {"selection": [out]}, dict(props))
    result = load_selection(out.uri)
    assert result == reference(clicks, config)  # the train split only
    assert sorted(os.listdir(out.uri)) == ["mi.png", "selection.json"]
    assert out.get_string_custom_property("selected") == ",".join(result["selected"])
    assert out.get_int_custom_property("clicked_rows") == len(clicks)

    # A schema that types the label against the data contract fails before any reading.
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx.utils import io_utils

    schema = standard_artifacts.Schema()
    schema.uri = str(tmp_path / "schema")
    io_utils.write_pbtxt_file(os.path.join(schema.uri, "schema.pbtxt"), schema_pb2.Schema(
        feature=[schema_pb2.Feature(name="conversion", type=schema_pb2.FLOAT)]))
    with pytest.raises(ValueError, match="feature 'conversion' is FLOAT, the selection needs INT"):
        executor.Do({"examples": [examples], "schema": [schema]}, {"selection": [out]}, dict(props))


def test_a_failed_write_leaves_the_previous_result(tmp_path, monkeypatch):
    result = {"features": {}, "selected": [], "label": "y",
              "policy": {"privileged_continuous": [], "privileged_discrete": []}}
    path = tmp_path / "selection.json"
    selection_report.write_report(result, str(path), str(tmp_path / "mi.png"))
    before = path.read_bytes()

    def broken_rename(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.io.gfile, "rename", broken_rename)
    with pytest.raises(OSError):
        selection_report.write_report(dict(result, selected=["x"]), str(path),
                                      str(tmp_path / "mi.png"))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["mi.png", "selection.json"]  # no temp files left


@pytest.mark.e2e
def test_in_a_local_pipeline_after_click_log_example_gen(tmp_path):
    """The data contract with the real ExampleGen: gzipped train split, absent features."""
    from tfx import v1 as tfx

    from pfdx.components.click_log_example_gen import ClickLogExampleGen

    config = PipelineConfig()
    log = simulate.simulate(60_000, seed=3)
    simulate.write(log, str(tmp_path / "log"), fmt="csv")
    example_gen = ClickLogExampleGen(input_base=str(tmp_path / "log"),
                                     data_config=config.to_dict()["data"], pattern="*.csv")
    selection = PrivilegedFeatureSelection(examples=example_gen.outputs["examples"], config=config)
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="selection", pipeline_root=str(tmp_path / "root"),
        components=[example_gen, selection], beam_pipeline_args=IN_MEMORY,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(tmp_path / "mlmd.sqlite"))))
    (uri,) = (tmp_path / "root" / "PrivilegedFeatureSelection" / "selection").iterdir()
    result = load_selection(str(uri))
    assert 0 < result["rows"]["clicked"] < log["click"].sum()  # the train split only
    assert set(result["thresholds"]) <= set(config.data.columns.privileged_continuous)
    assert result["features"]["payment_page_visit"]["reason"] == "too_informative"
