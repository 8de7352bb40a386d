"""Crashes, re-runs, drift and determinism on one tiny pipeline (issue 7).

One module-scoped scenario, shared by the tests: the DAG up to the Trainer runs in a
subprocess that is SIGKILLed once the Trainer has written a backup; the same
pipeline is then re-run here, as a user would after a pre-emption.
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from google.protobuf import json_format
from tfx import v1 as tfx
from tfx.components.trainer import executor as trainer_executor
from tfx.types import artifact_utils, standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.utils import io_utils

from pfdx.components import privileged_feature_selection as pfs
from pfdx.components import resume, splits, trainer, validation_gate
from pfdx.config import from_dict
from pfdx.features import selection_report
from pfdx.pipeline import dag
from pfdx.simulator import simulate
from tests.pipeline_helpers import make_config, store

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 8  # enough that the kill lands mid-training
# A few columns and a small model: neither is what is under test, and both set how
# long TFX and Keras take. The log's other columns are counted as unknown.
SMALL = ["data.columns.regular_categorical=[user_id,ad_id,device,region,placement]",
         "data.columns.regular_numeric=[bid]",
         "data.columns.privileged_continuous=[duration,click_leave_time]",
         "data.columns.privileged_discrete=[page_jump,play_2s,tag,like,share,payment_page_visit]",
         "runner.backup_seconds=0",  # a backup every epoch: the kill test waits for one
         "model.hash_buckets=1000", "model.batch_size=64", "model.hidden_units=[64,32]",
         "model.alignment.mapping_hidden_units=[32]", f"model.epochs={EPOCHS}",
         # One training per student, for all its epochs: resuming is under test, not
         # tuning, refitting or early stopping.
         "tuning.enabled=false", "model.refit=false", f"model.early_stopping_patience={EPOCHS}"]
# Metrics of two trainings on the same data, config and seed agree to this on CPU
# (float reductions may be ordered differently by Eigen's thread pool).
METRIC_TOLERANCE = 1e-6


def prefix_pipeline(config, logs: str, last: str) -> tfx.dsl.Pipeline:
    """The DAG of `dag.create_components` up to and including node `last`."""
    components = dag.create_components(config, logs, config.serving_dir)
    ids = [c.id for c in components]
    keep = components[:ids.index(last) + 1]
    for c in keep:
        for d in list(c.downstream_nodes):
            if d not in keep:
                c.remove_downstream_node(d)
    return tfx.dsl.Pipeline(
        pipeline_name=config.runner.pipeline_name, pipeline_root=config.pipeline_root,
        components=keep, enable_cache=config.runner.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path),
        beam_pipeline_args=config.beam_pipeline_args)


def _main(config_file: str, logs: str, last: str) -> None:
    """Subprocess entry point: run the DAG up to `last`."""
    with open(config_file, encoding="utf-8") as f:
        config = from_dict(json.load(f))
    tfx.orchestration.LocalDagRunner().run(prefix_pipeline(config, logs, last))


def _executions(config, component_id: str):
    s = store(config)
    (ctx,) = [c for c in s.get_contexts_by_type("node") if c.name.endswith("." + component_id)]
    return sorted(s.get_executions_by_context(ctx.id), key=lambda e: e.id)


def _output(config, component_id: str, key: str):
    """Output `key` of the component's latest execution (cached ones included)."""
    s = store(config)
    execution = _executions(config, component_id)[-1]
    (artifact_id,) = [e.artifact_id for e in s.get_events_by_execution_ids([execution.id])
                      if e.type == e.OUTPUT and e.path.steps[0].key == key]
    return s.get_artifacts_by_id([artifact_id])[0]


def _scalars(event_dir: str, tag: str) -> dict[int, float]:
    out = {}
    for path in sorted(glob.glob(os.path.join(event_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                if v.tag == tag:
                    out[event.step] = float(tf.make_ndarray(v.tensor))
    return out


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    logs = str(root / "logs")
    simulate.write(simulate.simulate(30_000, seed=3), logs, fmt="csv")
    config = make_config(root, *SMALL)
    config_file = root / "config.json"
    config_file.write_text(config.to_json())

    # Run 1, killed: a subprocess, so SIGKILL stops the Trainer as a pre-emption would.
    log_file = root / "killed.log"
    with open(log_file, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from tests.test_reliability_pipeline import "
             "_main; _main(*sys.argv[1:])", str(config_file), logs, "Trainer"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        pattern = os.path.join(config.pipeline_root, "Trainer", resume.BACKUP_DIR, "*",
                               "*", "chief", "checkpoint")  # <fingerprint>/<training>/
        deadline = time.monotonic() + 600
        while not glob.glob(pattern):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"no Trainer backup before the run ended:\n{log_file.read_text()[-3000:]}")
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (checkpoint,) = glob.glob(pattern)
    backup = os.path.dirname(os.path.dirname(checkpoint))
    reader = tf.train.load_checkpoint(os.path.dirname(checkpoint))
    (epoch_key,) = [k for k in reader.get_variable_to_shape_map() if "ckpt_saved_epoch" in k]
    saved_epoch = int(reader.get_tensor(epoch_key))

    # Run 2: the same pipeline, re-run after the kill.
    tfx.orchestration.LocalDagRunner().run(prefix_pipeline(config, logs, "Trainer"))
    # URIs now: later tests add runs on other data to the same MLMD.
    uris = {key: _output(config, component, key).uri for component, key in (
        ("ClickLogExampleGen", "examples"), ("SchemaGen", "schema"),
        ("PrivilegedTransform", "transform_graph"), ("PrivilegedFeatureSelection", "selection"))}
    return {"root": root, "logs": logs, "config": config, "backup": backup,
            "training": os.path.basename(backup),
            "saved_epoch": saved_epoch, "killed_log": log_file.read_text(), "uris": uris}


def test_killed_trainer_resumes_from_its_last_backup(scenario):
    config, saved = scenario["config"], scenario["saved_epoch"]
    assert scenario["killed_log"].count(f"/{EPOCHS}\n") < EPOCHS  # killed mid-training
    assert 0 <= saved < EPOCHS - 1
    killed, resumed = _executions(config, "Trainer")
    # The killed execution never completed: nothing it wrote is an output in MLMD.
    assert killed.last_known_state == killed.RUNNING
    assert resumed.last_known_state == resumed.COMPLETE
    s = store(config)
    assert [e.execution_id for e in s.get_events_by_execution_ids([killed.id])
            if e.type == e.OUTPUT] == []
    # Everything upstream of the Trainer was served from cache on the re-run; the
    # gate re-ran by design (its baseline is the previous run's output).
    for component in ("ClickLogExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                      "PrivilegedFeatureSelection", "PrivilegedTransform"):
        assert _executions(config, component)[-1].last_known_state == killed.CACHED, component

    model_run = _output(config, "Trainer", "model_run").uri
    logs = os.path.join(model_run, "logs", scenario["training"])  # the killed training's
    epochs = _scalars(os.path.join(logs, "train"), "epoch_loss")
    assert sorted(epochs) == list(range(saved + 1, EPOCHS))  # continued, not restarted
    # The optimizer state came back too: its step count continues from the backup
    # (a fresh start would count about one epoch's steps here).
    steps = sorted(_scalars(os.path.join(logs, "validation"),
                            "evaluation_loss_vs_iterations"))
    per_epoch = steps[1] - steps[0]
    assert steps[0] >= (saved + 2) * per_epoch
    assert os.listdir(scenario["backup"]) == []  # deleted once training completed
    model = _output(config, "Trainer", "model").uri
    assert os.path.exists(os.path.join(model, "Format-Serving", "saved_model.pb"))


def test_drift_stops_the_run_before_training_until_overridden(scenario):
    config, root = scenario["config"], scenario["root"]
    frame = simulate.simulate(30_000, seed=3)
    frame.loc[frame.index % 2 == 0, "device"] = "smart_tv"  # a category never seen before
    frame["region"] = None  # a column that stopped being logged
    drifted = str(root / "drifted")
    simulate.write(frame, drifted, fmt="csv")
    before = {c: len(_executions(config, c))
              for c in ("PrivilegedFeatureSelection", "PrivilegedTransform", "Trainer")}

    with pytest.raises(validation_gate.DataValidationError) as failure:
        tfx.orchestration.LocalDagRunner().run(prefix_pipeline(config, drifted, "Trainer"))
    message = str(failure.value)
    assert "feature 'device': Unexpected string values" in message and "smart_tv" in message
    assert "feature 'region': Column dropped" in message
    assert "--set runner.allow_anomalies=true" in message
    assert {c: len(_executions(config, c)) for c in before} == before  # nothing downstream ran

    # Re-running the stopped run changes nothing: a failed gate published no baseline.
    with pytest.raises(validation_gate.DataValidationError):
        tfx.orchestration.LocalDagRunner().run(prefix_pipeline(config, drifted, "ValidationGate"))

    allowed = make_config(root, *SMALL, "runner.allow_anomalies=true")
    tfx.orchestration.LocalDagRunner().run(prefix_pipeline(allowed, drifted, "ValidationGate"))
    verdict = _output(config, "ValidationGate", validation_gate.VALIDATED_KEY)
    assert verdict.custom_properties["overridden"].int_value == 1
    recorded = json.loads(verdict.custom_properties["anomalies"].string_value)
    assert recorded and all(("'device'" in line or "'region'" in line) for line in recorded)
    assert recorded == message.split("\n- ", 1)[1].split("\nFix the data", 1)[0].split("\n- ")

    # The accepted schema is the new baseline: the same data now passes untouched.
    tfx.orchestration.LocalDagRunner().run(prefix_pipeline(config, drifted, "ValidationGate"))
    verdict = _output(config, "ValidationGate", validation_gate.VALIDATED_KEY)
    assert verdict.custom_properties["num_anomalies"].int_value == 0


def test_anomalies_against_a_curated_schema_stop_the_run(scenario, tmp_path):
    schema = io_utils.SchemaReader().read(os.path.join(scenario["uris"]["schema"], "schema.pbtxt"))
    (device,) = [d for d in schema.string_domain if d.name == "device"]
    assert "desktop" in device.value
    device.value.remove("desktop")  # the curator's view: desktop traffic is not expected
    curated = str(tmp_path / "curated.pbtxt")
    io_utils.write_pbtxt_file(curated, schema)
    config = make_config(scenario["root"], *SMALL, f"data.schema_path={curated}")
    with pytest.raises(validation_gate.DataValidationError,
                       match=r"split 'train' against this run's schema, feature 'device': "
                             r"Unexpected string values: .*desktop"):
        tfx.orchestration.LocalDagRunner().run(
            prefix_pipeline(config, scenario["logs"], "ValidationGate"))
    assert _executions(config, "ImportSchemaGen")[-1].last_known_state == \
        _executions(config, "ImportSchemaGen")[-1].COMPLETE


def test_selection_artifact_is_byte_identical_when_recomputed(scenario, tmp_path):
    config, uris = scenario["config"], scenario["uris"]
    examples = standard_artifacts.Examples()
    examples.uri = uris["examples"]
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    again = pfs.PrivilegedFeatureSelectionResult()
    again.uri = str(tmp_path)
    component = pfs.PrivilegedFeatureSelection(
        examples=tfx.dsl.Channel(type=standard_artifacts.Examples), config=config)
    pfs.Executor(pfs.Executor.Context(beam_pipeline_args=config.beam_pipeline_args,
                                      tmp_dir=str(tmp_path / "tmp"), unique_id="1")).Do(
        {specs.EXAMPLES_KEY: [examples]}, {pfs.SELECTION_KEY: [again]},
        component.exec_properties)
    name = selection_report.SELECTION_FILE
    selection = uris["selection"]
    with open(os.path.join(selection, name), "rb") as a, open(tmp_path / name, "rb") as b:
        assert a.read() == b.read()


def _train(config, scenario, trainer_dir, run: int) -> dict:
    """The TFX Trainer executor with pfdx's run_fn, on the scenario's artifacts; outputs
    laid out as TFX does: <trainer_dir>/<output>/<execution id>."""
    def artifact(cls, uri, splits=None):
        a = cls()
        a.uri = uri
        if splits:
            a.split_names = artifact_utils.encode_split_names(splits)
        return a

    uris = scenario["uris"]
    inputs = {
        specs.EXAMPLES_KEY: [artifact(standard_artifacts.Examples, uris["examples"],
                                      list(splits.SPLITS))],
        specs.TRANSFORM_GRAPH_KEY: [artifact(standard_artifacts.TransformGraph,
                                             uris["transform_graph"])],
    }
    model_run = trainer_dir / "model_run" / str(run)
    outputs = {specs.MODEL_KEY: [artifact(standard_artifacts.Model,
                                          str(trainer_dir / "model" / str(run)))],
               specs.MODEL_RUN_KEY: [artifact(standard_artifacts.ModelRun, str(model_run))]}
    props = {specs.RUN_FN_KEY: "pfdx.components.trainer.run_fn",
             specs.CUSTOM_CONFIG_KEY: json.dumps(trainer.trainer_custom_config(config)),
             specs.TRAIN_ARGS_KEY: json_format.MessageToJson(
                 tfx.proto.TrainArgs(splits=[splits.TRAIN])),
             specs.EVAL_ARGS_KEY: json_format.MessageToJson(
                 tfx.proto.EvalArgs(splits=[splits.VALIDATION, splits.EVAL]))}
    trainer_executor.GenericExecutor().Do(inputs, outputs, props)
    with open(model_run / trainer.TRAINING_METRICS_FILE, encoding="utf-8") as f:
        return json.load(f)


def _leaves(tree, prefix=""):
    """{"a.b.0.c": value} for every scalar of a JSON tree (the Trainer's metrics
    nest each student's tuning trials)."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    return {k: v for key, value in items for k, v in _leaves(value, f"{prefix}{key}.").items()}


def test_same_data_config_and_seed_give_the_same_metrics(scenario, tmp_path):
    config = make_config(scenario["root"], *SMALL, "model.epochs=2")
    # Same inputs, same Trainer dir: the same backup, so the second training also
    # shows that a completed one leaves nothing to "resume".
    first = _train(config, scenario, tmp_path / "Trainer", 1)
    second = _train(config, scenario, tmp_path / "Trainer", 2)
    # (Wall-clock seconds of the tuning trials aside.)
    first, second = ({k: v for k, v in _leaves(m).items() if not k.endswith(".seconds.")}
                     for m in (first, second))
    assert sorted(first) == sorted(second)
    for key, value in first.items():
        if isinstance(value, float):
            assert second[key] == pytest.approx(value, abs=METRIC_TOLERANCE), key
        else:
            assert second[key] == value, key
    epochs = _scalars(str(tmp_path / "Trainer" / "model_run" / "2" / "logs" / "ha_pfd_v2-setup-0"
                          / "train"), "epoch_loss")
    assert sorted(epochs) == [0, 1]
