"""End-to-end runs of the DAG's data-side components on small logs."""
import json
import os

import pytest
import tensorflow as tf

from pfdx.components.click_log_outputs import read_row_counts
from pfdx.pipeline import dag, local_runner
from pfdx.simulator import simulate
from tests.pipeline_helpers import int_props, latest, make_config, run_example_gen, store

pytestmark = pytest.mark.e2e


def _count_records(examples_uri: str, split: str) -> int:
    d = os.path.join(examples_uri, f"Split-{split}")
    return sum(1 for f in os.listdir(d) for _ in tf.data.TFRecordDataset(
        os.path.join(d, f), compression_type="GZIP"))


def test_pipeline_run_records_artifacts_and_reuses_cache(tmp_path):
    config = make_config(tmp_path, "data.simulated_rows=20000")
    first = local_runner.run(config)

    # ExampleGen's Examples: the only ones (the Transform materializes nothing, its
    # one output is the graph the Trainer applies in tf.data).
    (examples,) = store(config).get_artifacts_by_type("Examples")
    assert "rows_read" in examples.custom_properties
    transform_dir = os.path.join(config.pipeline_root, "PrivilegedTransform")
    assert [d for d in os.listdir(transform_dir) if not d.startswith(".")] == ["transform_graph"]
    counts = int_props(examples)
    assert counts["rows_read"] == 20000
    assert counts["rows_read"] == counts["rows_used"] + counts["rows_unclicked"] + counts["rows_quarantined"]
    assert counts["rows_quarantined"] == 0
    n_train, n_validation, n_eval = (_count_records(examples.uri, s)
                                     for s in ("train", "validation", "eval"))
    assert n_train + n_validation + n_eval == counts["rows_used"]
    assert 0.1 < n_eval / counts["rows_used"] < 0.3  # time split, eval_fraction 0.2
    # validation: the train range's last validation_fraction (0.2) of time
    assert 0.08 < n_validation / counts["rows_used"] < 0.25
    # eval is the later time window
    def times(split):
        d = os.path.join(examples.uri, f"Split-{split}")
        out = []
        for f in os.listdir(d):
            for raw in tf.data.TFRecordDataset(os.path.join(d, f), compression_type="GZIP"):
                out.append(tf.train.Example.FromString(raw.numpy()).features.feature["event_time"].int64_list.value[0])
        return out
    assert max(times("train")) < min(times("validation")) <= max(times("validation")) \
        < min(times("eval"))
    for type_name in ("ExampleStatistics", "Schema", "ExampleAnomalies"):
        latest(config, type_name)

    executions_before = len(store(config).get_executions())
    local_runner.run(config)  # unchanged input and config: every component is cached ...
    s = store(config)
    node_type = s.get_context_type("node").id
    rerun = {next(c.name.rsplit(".", 1)[1] for c in s.get_contexts_by_execution(e.id)
                  if c.type_id == node_type): e.last_known_state
             for e in s.get_executions()[executions_before:]}
    # ... but the resolvers, which query MLMD afresh, and the validation gate and the
    # report, whose baseline / history is the previous run's output (pipeline/dag.py).
    every_run = {"latest_validated_schema_resolver", "ValidationGate",
                 "latest_blessed_model_resolver", "latest_report_resolver", "EvaluationReport"}
    if first["blessed"]:  # the Evaluator's baseline is now the first run's model
        every_run |= {"Evaluator", "EvaluationReport", "Pusher"}
    cached = {n: state for n, state in rerun.items() if n not in every_run}
    components = {c.id for c in dag.create_components(config, str(tmp_path), str(tmp_path))}
    assert set(cached) == components - every_run, rerun
    assert set(cached.values()) == {s.get_executions()[0].CACHED}, rerun


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_example_gen_reads_every_format(tmp_path, fmt):
    frame = simulate.simulate(6000, seed=5)
    simulate.write(frame, str(tmp_path / "logs"), fmt=fmt, shards=2)
    config = make_config(tmp_path, f"data.format={fmt}")
    run_example_gen(config, str(tmp_path / "logs"))
    counts = read_row_counts(latest(config, "Examples").uri)
    assert counts["read"] == 6000
    assert counts["used"] == int(frame["click"].sum())


def test_dirty_csv_rows_are_quarantined_and_counted(tmp_path):
    frame = simulate.simulate(3000, seed=6)
    logs = tmp_path / "logs"
    simulate.write(frame, str(logs), fmt="csv")
    (path,) = logs.glob("*.csv")
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    clicked = [i for i in range(1, len(lines)) if lines[i].split(",")[header.index("click")] == "1"]
    bad_label, bad_width = clicked[0], clicked[1]
    cells = lines[bad_label].split(",")
    cells[header.index("conversion")] = "7"
    lines[bad_label] = ",".join(cells)
    lines[bad_width] = lines[bad_width] + ",extra"
    path.write_text("\n".join(lines) + "\n")
    (logs / "empty.csv").write_text("")

    config = make_config(tmp_path)
    run_example_gen(config, str(logs))
    examples = latest(config, "Examples")
    counts = int_props(examples)
    assert counts["rows_quarantined"] == 2
    assert counts["rows_empty_files"] == 1
    assert counts["rows_read"] == 3000 == counts["rows_used"] + counts["rows_unclicked"] + 2
    dead = []
    for f in (os.path.join(examples.uri, "dead_letter", n)
              for n in os.listdir(os.path.join(examples.uri, "dead_letter"))):
        dead += [json.loads(line) for line in open(f)]
    by_row = {d["row"]: d for d in dead}
    assert "'7' is not 0/1" in by_row[bad_label]["reason"]
    assert "wrong column count" in by_row[bad_width]["reason"]
    assert all(d["file"].endswith(path.name) for d in dead)


KUAIRAND = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "kuairand-kcore15")


@pytest.mark.skipif(not os.path.exists(KUAIRAND), reason="KuaiRand slice not present")
def test_kuairand_log_by_configuration_alone(tmp_path):
    config_file = os.path.join(os.path.dirname(__file__), "..", "pipeline", "configs", "kuairand.yaml")
    from pfdx.config import load_config
    from tests.pipeline_helpers import FAST
    config = load_config(config_file, [f"runner.output_root={tmp_path}", *FAST])
    run_example_gen(config, os.path.abspath(KUAIRAND))
    counts = read_row_counts(latest(config, "Examples").uri)
    assert counts["read"] == 41828 == counts["used"]


