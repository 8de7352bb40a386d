"""The impression-space pipeline: UKD's DAG variant end to end on a small simulated log.

One run (`model.strategy=ukd`, `model.serve_ctr=true`) is shared by every test:
ExampleGen keeps every impression with its click label, the click-adaptive teacher
is trained and exported, BulkInferrer (Beam) writes its CVR into every example,
the student trains on them, TFMA scores the served CVR on clicked rows only, and
the pushed student serves CVR and CTR from regular features.
"""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pfdx.components.click_log_outputs import read_row_counts
from pfdx.components.trainer import TRAINING_METRICS_FILE
from pfdx.pipeline import dag, local_runner
from pfdx.serving import export
from tests.pipeline_helpers import make_config, store
from tests.student_export_checks import TEACHER_SIDE

pytestmark = pytest.mark.e2e


def _artifact(config, type_name: str, producer: str):
    """The newest `type_name` artifact whose producing execution is `producer`."""
    mlmd = store(config)
    contexts = {c.id: c.name for c in mlmd.get_contexts()}
    for artifact in sorted(mlmd.get_artifacts_by_type(type_name), key=lambda a: -a.id):
        events = mlmd.get_events_by_artifact_ids([artifact.id])
        executions = [e.execution_id for e in events if e.type == e.OUTPUT]
        for ctx in mlmd.get_contexts_by_execution(executions[0]):
            if contexts[ctx.id].rsplit(".", 1)[-1] == producer:  # "<pipeline>.<node id>"
                return artifact
    raise AssertionError(f"no {type_name} from {producer}")


def _records(pattern: str) -> list[tf.train.Example]:
    files = sorted(glob.glob(pattern))
    assert files, pattern
    return [tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _value(example: tf.train.Example, name: str):
    feature = example.features.feature[name]
    kind = feature.WhichOneof("kind")
    return getattr(feature, kind).value[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("ukd_run"), "data.simulated_rows=30000",
                         "model.epochs=1", "model.hash_buckets=1000", "model.strategy=ukd",
                         "model.serve_ctr=true", "evaluation.max_ece=1.0",
                         "evaluation.min_auc=0.0")
    summary = local_runner.run(config)
    examples = _artifact(config, "Examples", "ClickLogExampleGen")
    labelled = _artifact(config, "Examples", "BulkInferrer")
    split = {name: {"logged": _records(os.path.join(examples.uri, f"Split-{name}", "*")),
                    "labelled": _records(os.path.join(labelled.uri, f"Split-{name}", "*"))}
             for name in ("train", "validation", "eval")}
    return config, summary, examples, split


def test_every_impression_is_an_example_with_its_click(run):
    config, summary, examples, split = run
    counts = read_row_counts(examples.uri)
    logged = [e for parts in split.values() for e in parts["logged"]]
    click, label = config.data.columns.click, config.data.columns.label
    clicks = np.array([_value(e, click) for e in logged])
    assert len(logged) == counts["read"] - counts["quarantined"] == 30000
    assert clicks.sum() == counts["used"] and (clicks == 0).sum() == counts["unclicked"] > 0
    conversions = np.array([_value(e, label) for e in logged])
    assert not (conversions & (clicks == 0)).any()
    # Post-click signals exist on clicked rows only.
    privileged = set(config.data.columns.privileged)
    assert not any(privileged & set(e.features.feature) for e, c in zip(logged, clicks) if not c)
    assert summary["rows"] == counts


def test_bulk_inferrer_labels_every_example_with_the_exported_teacher(run):
    """The Beam path (BulkInferrer over the teacher's SavedModel) against the same
    SavedModel called in memory on the same examples."""
    config, _, _, split = run
    teacher = _artifact(config, "Model", dag.UKD_TEACHER_TRAINER_ID)
    serve = tf.saved_model.load(os.path.join(teacher.uri, "Format-Serving")).signatures[
        "serving_default"]
    for name, parts in split.items():
        logged, labelled = parts["logged"], parts["labelled"]
        assert len(labelled) == len(logged), name
        pseudo = np.array([_value(e, dag.PSEUDO_LABEL_COLUMN) for e in labelled])
        # BulkInferrer keeps every logged feature and adds the column.
        for before, after in zip(logged[:50], labelled[:50]):
            del after.features.feature[dag.PSEUDO_LABEL_COLUMN]
            assert after == before
        in_memory = serve(examples=tf.constant(
            [e.SerializeToString() for e in logged]))[export.OUTPUT_KEY].numpy().reshape(-1)
        np.testing.assert_allclose(pseudo, in_memory, atol=1e-6)
        assert pseudo.std() > 0 and ((pseudo > 0) & (pseudo < 1)).all()


def test_trainer_scores_cvr_on_clicked_rows_and_ctcvr_on_impressions(run):
    config, summary, _, split = run
    student = _artifact(config, "ModelRun", "Trainer")
    with open(os.path.join(student.uri, TRAINING_METRICS_FILE), encoding="utf-8") as f:
        metrics = json.load(f)
    evaluation = split["eval"]["logged"]
    clicks = np.array([_value(e, config.data.columns.click) for e in evaluation])
    labels = np.array([_value(e, config.data.columns.label) for e in evaluation])
    assert metrics["impression_rows"] == len(evaluation)
    assert metrics["rows"] == clicks.sum()
    assert metrics["label_avg"] == pytest.approx(labels[clicks == 1].mean())
    assert 0.0 <= metrics["ctcvr_auc"] <= 1.0 and 0.0 <= metrics["ctr_auc"] <= 1.0
    assert summary["trainer_eval"] == metrics
    # The report also shows the teacher the pseudo-labels came from, on the same rows.
    teacher = summary["ukd_teacher_eval"]
    assert teacher["rows"] == metrics["rows"] and "student_auc" in teacher
    assert "UKD's click-adaptive teacher" in open(os.path.join(
        config.reports_dir, "report.md"), encoding="utf-8").read()


def test_tfma_weights_by_click_so_the_served_cvr_is_judged_on_clicked_rows(run):
    config, summary, _, split = run
    evaluation = split["eval"]["logged"]
    clicks = np.array([_value(e, config.data.columns.click) for e in evaluation])
    labels = np.array([_value(e, config.data.columns.label) for e in evaluation])
    overall = next(row for row in summary["tfma"] if row["slice"] == "overall")
    assert overall["example_count"] == clicks.sum()
    assert overall["mean_label"] == pytest.approx(labels[clicks == 1].mean())
    assert overall["auc"] == pytest.approx(summary["trainer_eval"]["student_auc"], abs=0.01)


def test_pushed_student_serves_cvr_and_ctr_from_regular_features(run):
    config, summary, _, _ = run
    assert summary["blessed"]
    (version,) = os.listdir(config.serving_dir)
    model_dir = os.path.join(config.serving_dir, version)
    names = [n for n, _ in tf.train.list_variables(os.path.join(model_dir, "variables",
                                                                "variables"))]
    assert not [n for n in names if any(w in n.lower() for w in TEACHER_SIDE)]
    loaded = tf.saved_model.load(model_dir)
    for signature in loaded.signatures.values():
        assert set(signature.structured_outputs) == {"cvr", "ctr"}
    assert set(loaded.signatures[export.RAW_SIGNATURE].structured_input_signature[1]) == set(
        config.data.columns.regular)
    check = json.load(open(os.path.join(_artifact(config, "ModelRun", "Trainer").uri,
                                        export.EXPORT_CHECK_FILE), encoding="utf-8"))
    assert set(check["outputs"]) == {"cvr", "ctr"} and check["max_abs_gap"] <= 1e-5
    assert np.std(check["outputs"]["ctr"]["served"]) > 0
