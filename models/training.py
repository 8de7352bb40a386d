"""Fit the joint model on Transform-ed data and evaluate it: the one training loop.

The pipeline's Trainer (`components/trainer.py` `run_fn`) and `pfdx compare`
(`pipeline/compare.py`) both call `fit_and_evaluate`; they differ only in where the
raw tf.Examples come from and what happens to the model afterwards. Data path:
raw tf.Example files -> a `DatasetFactory` (TFX's `data_accessor.tf_dataset_factory`
in the Trainer, tfx-bsl's `TFExampleRecord` in compare; the former is built on the
latter) -> the Transform graph's TFT layer -> (features, label) batches ->
`build_model` under a tf.distribute strategy -> `model.fit` -> predictions on the
evaluation files -> `summarize` with the numpy metrics of `models/metrics.py`.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Callable, Sequence

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public import tfxio

from pfdx.config import PipelineConfig
from pfdx.features import transform
from pfdx.models import metrics as model_metrics
from pfdx.models.model import JointModel, build_model

# (file patterns, options, raw schema) -> batches of raw feature dicts.
DatasetFactory = Callable[[list[str], tfxio.TensorFlowDatasetOptions, schema_pb2.Schema],
                          tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Per evaluation example: label, student and teacher probabilities (teacher None
    for strategies without one) and the true conversion probability (None when the
    examples carry no `data.columns.truth`; NaN where an example lacks it)."""

    labels: np.ndarray
    student: np.ndarray
    teacher: np.ndarray | None
    truth: np.ndarray | None

    # .npz through a buffer: gfile paths may be remote (gs://), and zip needs seeks.
    def save(self, path: str) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: v for k, v in dataclasses.asdict(self).items() if v is not None})
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(buf.getvalue())

    @classmethod
    def load(cls, path: str) -> "Predictions":
        with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read())) as data:
            return cls(**{field.name: data[field.name] if field.name in data.files else None
                          for field in dataclasses.fields(cls)})


@dataclasses.dataclass
class Result:
    model: JointModel
    predictions: Predictions
    metrics: dict[str, float]


def vocabularies(config: PipelineConfig,
                 tf_transform_output: tft.TFTransformOutput) -> tuple[dict[str, int], dict[str, int]]:
    """(regular, privileged) model input -> number of ids. The privileged inputs are
    whatever the Transform emitted under PRIVILEGED_PREFIX (the selection's choice)."""
    regular, _ = transform.feature_vocab(dict(transform.regular_config(config), privileged={}))
    privileged = {k: transform.PRIVILEGED_VOCAB
                  for k in sorted(tf_transform_output.transformed_feature_spec())
                  if k.startswith(transform.PRIVILEGED_PREFIX)}
    return regular, privileged


def truth_column(config: PipelineConfig, tf_transform_output: tft.TFTransformOutput) -> str | None:
    """The true-probability column, when configured and present in the raw schema."""
    truth = config.data.columns.truth
    return truth if truth is not None and truth in tf_transform_output.raw_feature_spec() else None


def _dense_column(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """[B] float values of a one-value raw column; NaN where an example lacks it."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(tf.SparseTensor(x.indices, tf.cast(x.values, tf.float32),
                                               [x.dense_shape[0], 1]), default_value=np.nan)
    return tf.reshape(tf.cast(x, tf.float32), [-1])


def transformed_dataset(factory: DatasetFactory, files: Sequence[str],
                        tf_transform_output: tft.TFTransformOutput, config: PipelineConfig,
                        shuffle: bool, keep_truth: bool = False) -> tf.data.Dataset:
    """One pass over `files`: raw examples -> TFT layer -> (features, label) batches,
    or (features, label, true probability) with `keep_truth` -- an empty [0] tensor
    per batch when the examples have no true-probability column."""
    m = config.model
    label = config.data.columns.label
    truth = truth_column(config, tf_transform_output) if keep_truth else None
    raw = factory(list(files), tfxio.TensorFlowDatasetOptions(
        batch_size=m.batch_size, shuffle=shuffle, shuffle_seed=m.seed, num_epochs=1,
        drop_final_batch=False), tf_transform_output.raw_metadata.schema)
    tft_layer = tf_transform_output.transform_features_layer()

    def apply(features):
        out = tft_layer(features)
        y = out.pop(label)
        if keep_truth:
            return out, y, (_dense_column(features[truth]) if truth else tf.zeros([0]))
        return out, y

    return raw.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def predict(model: JointModel, dataset: tf.data.Dataset) -> Predictions:
    """Student (and teacher) probabilities over a `keep_truth` dataset."""
    labels, student, teacher, truth = [], [], [], []
    for features, y, t in dataset:
        out = model.predict_both(features)
        labels.append(np.reshape(y, [-1]))
        student.append(np.reshape(out["student"], [-1]))
        if "teacher" in out:
            teacher.append(np.reshape(out["teacher"], [-1]))
        truth.append(t.numpy())
    truth_values = np.concatenate(truth)
    return Predictions(np.concatenate(labels).astype(np.int64), np.concatenate(student),
                       np.concatenate(teacher) if teacher else None,
                       truth_values if truth_values.size else None)


def summarize(p: Predictions, num_bins: int) -> dict[str, float]:
    """Paper §4.1 metrics of the student (and teacher); with a true probability, the
    student's gap to it: mean |p - true|, and ECE / MCE with the true probability in
    place of the label (how far each prediction bin is from the real CVR, free of the
    label noise that keeps even a perfect model's label ECE above 0)."""
    y = p.labels
    s = model_metrics.summary(y, p.student, num_bins)
    out = {"rows": int(y.size), "label_avg": s["label_avg"], "student_auc": s["auc"],
           "student_ece": s["ece"], "student_mce": s["mce"], "student_pred_avg": s["pred_avg"],
           "student_pred_avg_gap": s["pred_avg_gap"]}
    if p.teacher is not None:
        t = model_metrics.summary(y, p.teacher, num_bins)
        out.update(teacher_auc=t["auc"], teacher_pred_avg=t["pred_avg"],
                   teacher_pred_avg_gap=t["pred_avg_gap"])
    if p.truth is not None:
        known = ~np.isnan(p.truth)
        if known.any():
            truth = p.truth[known].astype(np.float64)
            student = p.student[known].astype(np.float64)
            ece, mce = model_metrics.calibration_errors(truth, student, num_bins)
            out.update(truth_rows=int(known.sum()), truth_avg=float(truth.mean()),
                       student_truth_mae=float(np.abs(student - truth).mean()),
                       student_truth_ece=ece, student_truth_mce=mce)
    return {k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in out.items()}


def fit_and_evaluate(config: PipelineConfig, tf_transform_output: tft.TFTransformOutput,
                     factory: DatasetFactory, train_files: Sequence[str],
                     eval_files: Sequence[str], strategy: tf.distribute.Strategy | None = None,
                     callbacks: Sequence[tf.keras.callbacks.Callback] = (),
                     validate_each_epoch: bool = True, verbose: int = 2) -> Result:
    """Trains `config.model` for `model.epochs` on `train_files` (seeded by
    `model.seed`: weights and shuffling), then predicts and scores `eval_files`.
    `validate_each_epoch` also has Keras log the eval files' streaming metrics
    after every epoch (one more pass over them per epoch)."""
    m = config.model
    tf.keras.utils.set_random_seed(m.seed)
    regular_vocab, privileged_vocab = vocabularies(config, tf_transform_output)
    train = transformed_dataset(factory, train_files, tf_transform_output, config, shuffle=True)
    evaluation = transformed_dataset(factory, eval_files, tf_transform_output, config,
                                     shuffle=False)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(m, regular_vocab, privileged_vocab)
    model.fit(train, epochs=m.epochs, validation_data=evaluation if validate_each_epoch else None,
              callbacks=list(callbacks), verbose=verbose)
    predictions = predict(model, transformed_dataset(
        factory, eval_files, tf_transform_output, config, shuffle=False, keep_truth=True))
    return Result(model, predictions, summarize(predictions, config.evaluation.calibration_bins))
