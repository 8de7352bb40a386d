"""The full local run ships a student that TF Serving can load: checked in a fresh process.

One pipeline run (simulated log -> ... -> Pusher) is shared by every test here. The
blessing bounds are opened so the small log's model is pushed; the contract, not
the model's quality, is under test.
"""
import base64
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pfdx.features import transform
from pfdx.pipeline import local_runner
from pfdx.serving import client, export
from pfdx.simulator import schema as S
from tests import serving_stub
from tests.pipeline_helpers import latest, make_config
from tests.student_export_checks import TEACHER_SIDE

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full_run")
    config = make_config(tmp, "data.simulated_rows=30000", "model.epochs=1",
                         "model.hash_buckets=1000", "evaluation.max_ece=1.0",
                         "evaluation.min_auc=0.0", "model.privileged_encoding=quantiles")
    summary = local_runner.run(config)
    (version,) = os.listdir(config.serving_dir)
    model_run = latest(config, "ModelRun")
    with open(os.path.join(model_run.uri, export.EXPORT_CHECK_FILE), encoding="utf-8") as f:
        check = json.load(f)
    return config, summary, os.path.join(config.serving_dir, version), check


# Runs in a new interpreter: nothing of the training process (graphs, Keras
# objects, the TFT layer's cache) can make the pushed model look right.
FRESH_PROCESS = r"""
import base64, json, sys
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

model_dir, check_file, instances_file = sys.argv[1:]
check = json.load(open(check_file))
instances = json.load(open(instances_file))
loaded = tf.saved_model.load(model_dir)
out = {"signatures": {}}
for name, fn in loaded.signatures.items():
    out["signatures"][name] = {k: s.dtype.name for k, s in fn.structured_input_signature[1].items()}
examples = [base64.b64decode(e) for e in check["examples_b64"]]
out["serving_default"] = loaded.signatures["serving_default"](
    examples=tf.constant(examples))["cvr"].numpy().tolist()
raw = loaded.signatures["predict_raw"]
specs = raw.structured_input_signature[1]
columns = {k: tf.constant([i[k] for i in instances], specs[k].dtype) for k in specs}
out["predict_raw"] = raw(**columns)["cvr"].numpy().tolist()
warmup = []
for record in tf.data.TFRecordDataset(model_dir + "/assets.extra/tf_serving_warmup_requests"):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    warmup.append({"signature": request.model_spec.signature_name,
                   "batch": len(tf.make_ndarray(request.inputs["examples"]))})
out["warmup"] = warmup
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fresh(run, tmp_path_factory):
    config, _, model_dir, check = run
    examples = [base64.b64decode(e) for e in check["examples_b64"]]
    # REST "instances" JSON: a text round trip, as the request body would be.
    instances = json.loads(json.dumps(client.instances_from_examples(
        examples, config.data.columns.regular)))
    tmp = tmp_path_factory.mktemp("fresh")
    (tmp / "instances.json").write_text(json.dumps(instances))
    model_run = latest(config, "ModelRun")
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, model_dir,
         os.path.join(model_run.uri, export.EXPORT_CHECK_FILE), str(tmp / "instances.json")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pushed_model_is_blessed_and_in_the_serving_layout(run):
    config, summary, model_dir, _ = run
    assert summary["blessed"]
    assert os.path.basename(model_dir).isdigit()  # <serving_dir>/<version>/
    assert os.path.exists(os.path.join(model_dir, "saved_model.pb"))
    assert latest(config, "PushedModel").uri
    for name in ("report.md", "metrics.json", "reliability.png"):
        assert os.path.getsize(os.path.join(config.reports_dir, name)) > 0
    assert summary["rows"]["read"] == 30000


def test_hashed_tables_are_sized_to_the_train_split_ids(run):
    """The Transform sized each hashed table to the distinct values of the examples'
    train split (counted here from the examples themselves, not TFDV's statistics),
    and recorded the sizes the Trainer built with."""
    config, *_ = run
    examples = glob.glob(os.path.join(latest(config, "Examples").uri, "Split-train", "*"))
    values = {name: set() for name in config.data.columns.regular_categorical}
    for record in tf.data.TFRecordDataset(examples, compression_type="GZIP"):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        for name, seen in values.items():
            seen.update(features[name].bytes_list.value if name in features else ())
    with open(os.path.join(latest(config, "TransformGraph").uri, transform.HASH_ROWS_FILE)) as f:
        rows = json.load(f)
    m = config.model
    assert rows == {name: transform.hash_rows(len(seen), m.hash_rows_per_id, m.hash_buckets)
                    for name, seen in values.items()}
    assert rows["device"] == 64 and rows["user_id"] == m.hash_buckets  # 3 values; capped


def test_signatures_ask_for_regular_features_only(run, fresh):
    config, *_ = run
    regular = set(config.data.columns.regular)
    assert set(fresh["signatures"]) == {"serving_default", export.RAW_SIGNATURE}
    assert fresh["signatures"]["serving_default"] == {"examples": "string"}
    raw = fresh["signatures"][export.RAW_SIGNATURE]
    assert set(raw) == regular
    assert not set(raw) & set(config.data.columns.privileged)
    for name in config.data.columns.regular_categorical:
        assert raw[name] == "string"


def test_saved_model_holds_no_teacher_side_weight(run):
    _, _, model_dir, _ = run
    names = [n for n, _ in tf.train.list_variables(os.path.join(model_dir, "variables", "variables"))]
    assert names
    assert not [n for n in names if any(w in n.lower() for w in TEACHER_SIDE)]


def test_fresh_process_predictions_match_the_trained_student(run, fresh):
    _, _, _, check = run
    stripped = [tf.train.Example.FromString(base64.b64decode(e)) for e in check["examples_b64"]]
    assert stripped and not any(set(S.PRIVILEGED_DISCRETE + S.PRIVILEGED_CONTINUOUS) & set(e.features.feature) for e in stripped)
    assert not any(S.LABEL in e.features.feature for e in stripped)
    trained = np.array(check["student"])
    assert trained.std() > 0  # not a constant model, so a match means something
    np.testing.assert_allclose(fresh["serving_default"], trained, atol=export.EXPORT_TOLERANCE)
    np.testing.assert_allclose(fresh["predict_raw"], trained, atol=export.EXPORT_TOLERANCE)


def test_warmup_file_is_prediction_log_records(fresh):
    assert [w["signature"] for w in fresh["warmup"]] == ["serving_default"] * 2
    assert [w["batch"] for w in fresh["warmup"]] == [1, 64]


def test_rest_and_grpc_clients_against_loopback_servers(run):
    config, _, model_dir, check = run
    examples = [base64.b64decode(e) for e in check["examples_b64"]][:8]
    trained = check["student"][:8]
    url, stop_rest = serving_stub.start_rest(model_dir)
    target, stop_grpc = serving_stub.start_grpc(model_dir)
    try:
        rest = client.rest_predict(url, client.instances_from_examples(
            examples, config.data.columns.regular))
        grpc = client.grpc_predict(target, examples)
        with pytest.raises(client.ServingError, match="Servable not found"):
            client.rest_predict(url, [{}], model_name="other")
    finally:
        stop_rest()
        stop_grpc()
    np.testing.assert_allclose(rest, trained, atol=export.EXPORT_TOLERANCE)
    np.testing.assert_allclose(grpc, trained, atol=export.EXPORT_TOLERANCE)


def test_export_check_fails_on_a_model_that_serves_differently(run, tmp_path):
    """The Trainer's export check is what stops a skewed model; prove it can fail."""
    config, _, model_dir, _ = run
    import tensorflow_transform as tft

    files = glob.glob(os.path.join(config.pipeline_root, "ClickLogExampleGen", "examples", "*",
                                   "Split-eval", "*"))
    rows = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(8)]
    regular = config.data.columns.regular

    class ConstantStudent:  # not the student the SavedModel was made from
        def predictions(self, features):
            return {"cvr": tf.fill([tf.shape(features[regular[0]])[0]], 0.5)}

    transform = tft.TFTransformOutput(latest(config, "TransformGraph").uri)
    with pytest.raises(export.ExportMismatchError, match="differs from the trained student"):
        export.check_export(ConstantStudent(), transform, regular, model_dir, rows,
                            str(tmp_path / "check.json"))
    assert json.loads((tmp_path / "check.json").read_text())["max_abs_gap"] > 1e-3

    class TwoOutputStudent:  # predicts a CTR the SavedModel does not serve
        def predictions(self, features):
            cvr = tf.fill([tf.shape(features[regular[0]])[0]], 0.5)
            return {"cvr": cvr, "ctr": cvr}

    with pytest.raises(export.ExportMismatchError, match=r"serves \['cvr'\]"):
        export.check_export(TwoOutputStudent(), transform, regular, model_dir, rows,
                            str(tmp_path / "check2.json"))
