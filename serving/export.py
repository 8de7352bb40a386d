"""Export of the student as a TF Serving SavedModel: signatures and warm-up records.

Signatures (inputs are the data contract's serving inputs, `DataContract.serving_inputs`
in `features/contract.py`: regular features only; the TFT graph is applied inside):
- ``serving_default``: ``examples`` = serialized tf.Example -> ``cvr`` probability
  (and ``ctr`` for a TAML / UKD student exported with `model.serve_ctr`). Each
  feature may come in any tf.Example type, as the log held it (an int64 `weekday`,
  an int64 `user_past_clicks`, a numeric as text): `serving/parsing.py` casts it to
  the raw schema's type (text for categoricals, float for numerics) before the TFT
  graph, so a row replayed from a CSV, Parquet or TFRecord log is served as the
  canonical example ExampleGen stores. Each feature reaches the TFT graph in its
  raw-schema kind (`serving_feature_spec`): an absent feature the raw schema declares
  variable-length (one that may be absent in training) is a missing value, which the
  preprocessing_fn maps as in training (a numeric to its own bucket); an absent
  fixed-length one is its default ("" / 0).
- ``predict_raw``: one named tensor per regular feature (strings for categorical,
  floats for numeric) -> the same outputs; the shape TF Serving's REST "instances"
  JSON takes. Its input types are fixed, so a JSON client sends categoricals as
  strings (`client.instances_from_examples(..., categorical=...)` converts a logged
  row the way `serving_default` does). A NaN numeric (JSON `NaN`, which TF Serving
  reads) is a missing value, served as an absent feature in `serving_default`; a
  missing categorical is "", which the preprocessing_fn hashes as it hashes a
  missing value.
The student Keras model holds the regular-feature embeddings and the student tower
only; nothing of the teacher, the privileged embeddings or the mapping nets is
tracked by the exported module.
"""
from __future__ import annotations

import base64
import json
import os
from typing import Iterable, Mapping

import numpy as np

import pfdx  # noqa: F401
import tensorflow as tf
import tensorflow_transform as tft

from pfdx.serving import parsing

OUTPUT_KEY = "cvr"
# Beside the model in the Trainer's model_run dir: rows, their in-training student
# predictions and what the exported SavedModel answered for them.
EXPORT_CHECK_FILE = "export_check.json"
EXPORT_TOLERANCE = 1e-5
EXAMPLES_INPUT = "examples"
RAW_SIGNATURE = "predict_raw"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def serving_feature_spec(tf_transform_output: tft.TFTransformOutput,
                         regular_features: Iterable[str]
                         ) -> dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature]:
    """Parsing spec of the serving inputs `regular_features` (`DataContract.serving_inputs`):
    the raw schema's own spec, so the TFT graph gets at serving the tensor kinds it gets
    in training and maps a missing value as training does. A feature that may be absent
    (a VarLenFeature: SchemaGen's for a feature some examples lack, every one in
    `pfdx compare`'s raw schema) is a SparseTensor with no entry for a missing value; a
    fixed-length one (present in every training example) parses a missing value as its
    default, or "" / 0 when it has none (as an ad server may omit a field).
    `serving_default` parses with `parsing.parse_examples` on these specs, which gives
    what `tf.io.parse_example` gives for canonically typed examples."""
    raw = tf_transform_output.raw_feature_spec()
    return {name: parsing.column_spec(name, raw[name]) for name in regular_features}


def raw_to_spec(values: tf.Tensor, spec: tf.io.FixedLenFeature | tf.io.VarLenFeature
                ) -> tf.Tensor | tf.SparseTensor:
    """`predict_raw`'s [B] values of one feature in the TFT graph's input kind (`spec`);
    a NaN in a numeric is an absent value (no entry / the default), as an absent
    feature of a tf.Example in `serving_default`; text is a value as is."""
    if spec.dtype == tf.string:
        present = tf.ones_like(values, tf.bool)
    else:
        present = tf.logical_not(tf.math.is_nan(values))
    return parsing.to_spec(values, present, spec)


class StudentServingModule(tf.Module):
    """Tracks only the student model and the TFT layer, so only they are saved.
    `student` is a `models.model.Student`: `predictions` gives what it serves. Its
    tables are saved without their zero rows (`FeatureEmbeddings.without_zero_rows`):
    the rows training never reached, zeroed at its end, are most of a hashed table."""

    def __init__(self, student: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                 regular_features: Iterable[str]):
        super().__init__()
        self.student = student.with_parts(embeddings=student.embeddings.without_zero_rows())
        self.tft_layer = tf_transform_output.transform_features_layer()
        self._regular = tuple(regular_features)
        self._spec = serving_feature_spec(tf_transform_output, self._regular)

    def _predict(self, raw: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        transformed = self.tft_layer(dict(raw))
        return self.student.predictions({k: transformed[k] for k in self._regular})

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        # Plain graph code (no tensor-dependent Python control flow): without autograph's
        # source transform of the parser, the TFT layer and the student, the signatures
        # trace in a fraction of the time.
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)],
                     autograph=False)
        def serve_examples(examples):
            return self._predict(parsing.parse_examples(examples, self._spec))

        raw_specs = {name: tf.TensorSpec([None], f.dtype, name=name)
                     for name, f in self._spec.items()}

        @tf.function(input_signature=[raw_specs], autograph=False)
        def serve_raw(features):
            return self._predict({k: raw_to_spec(v, self._spec[k]) for k, v in features.items()})

        return {"serving_default": serve_examples.get_concrete_function(),
                RAW_SIGNATURE: serve_raw.get_concrete_function()}


def export_student(student: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                   regular_features: Iterable[str], export_dir: str,
                   warmup_examples: Iterable[bytes] = ()) -> str:
    """Saves the serving SavedModel to `export_dir` with warm-up records."""
    module = StudentServingModule(student, tf_transform_output, regular_features)
    tf.saved_model.save(module, export_dir, signatures=module.signatures())
    write_warmup_requests(export_dir, list(warmup_examples))
    return export_dir


def write_warmup_requests(export_dir: str, serialized_examples: list[bytes],
                          model_name: str = "pfdx") -> None:
    """TF Serving warm-up: a TFRecord of PredictionLog (at most 1000 records)."""
    if not serialized_examples:
        return
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for batch_size in (1, min(len(serialized_examples), 64)):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default"))
            request.inputs[EXAMPLES_INPUT].CopyFrom(
                tf.make_tensor_proto(serialized_examples[:batch_size], dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def strip_to_regular(serialized: bytes, regular_features: Iterable[str]) -> bytes:
    """A tf.Example with only the regular features: what an ad server can send."""
    example = tf.train.Example.FromString(serialized)
    keep = set(regular_features)
    for name in list(example.features.feature):
        if name not in keep:
            del example.features.feature[name]
    return example.SerializeToString()


class ExportMismatchError(RuntimeError):
    """The exported SavedModel does not predict what the trained student predicts."""


def check_export(student: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                 regular_features: Iterable[str], export_dir: str,
                 serialized_examples: list[bytes], record_path: str) -> dict:
    """Reloads the SavedModel and compares it with the in-training student.

    The in-training side parses the *full* logged examples (privileged features
    included) through the training transform graph into the Keras student; the
    exported side gets the same rows stripped to regular features through
    `serving_default`. Any gap beyond EXPORT_TOLERANCE (a serving signature that
    parses or transforms differently, or reads a privileged feature) fails the
    Trainer before the model can be blessed or pushed. The record is written to
    `record_path` so a later process can check the pushed copy the same way.
    """
    regular = tuple(regular_features)
    raw = tf.io.parse_example(tf.constant(serialized_examples),
                              tf_transform_output.raw_feature_spec())
    transformed = tf_transform_output.transform_features_layer()(raw)
    trained = student.predictions({k: transformed[k] for k in regular})
    stripped = [strip_to_regular(e, regular) for e in serialized_examples]
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    served = serve(**{EXAMPLES_INPUT: tf.constant(stripped)})
    if set(served) != set(trained):
        raise ExportMismatchError(f"exported model at {export_dir} serves {sorted(served)}; "
                                  f"the trained student predicts {sorted(trained)}")
    # Every output (cvr, and ctr when served) within the tolerance.
    outputs = {k: {"student": np.asarray(trained[k]).reshape(-1).tolist(),
                   "served": served[k].numpy().reshape(-1).tolist()} for k in trained}
    gaps = [np.max(np.abs(np.subtract(v["student"], v["served"])), initial=0.0)
            for v in outputs.values()]
    gap = float(max(gaps))
    record = {"tolerance": EXPORT_TOLERANCE, "max_abs_gap": gap,
              "examples_b64": [base64.b64encode(e).decode("ascii") for e in stripped],
              "student": outputs[OUTPUT_KEY]["student"], "served": outputs[OUTPUT_KEY]["served"],
              "outputs": outputs}
    with tf.io.gfile.GFile(record_path, "w") as f:
        json.dump(record, f)
    if not gap <= EXPORT_TOLERANCE:
        raise ExportMismatchError(
            f"exported model at {export_dir} differs from the trained student by {gap:.3g} "
            f"(> {EXPORT_TOLERANCE}) on {len(stripped)} eval rows; see {record_path}")
    return record
