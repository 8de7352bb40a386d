"""Fit the joint model on Transform-ed data and evaluate it: the one training loop.

The pipeline's Trainer (`components/trainer.py` `run_fn`) and `pfdx compare`
(`pipeline/compare.py`) both call `fit_and_evaluate`; they differ only in where the
raw tf.Examples come from and what happens to the model afterwards. Data path:
raw tf.Example files -> a `DatasetFactory` (TFX's `data_accessor.tf_dataset_factory`
in the Trainer, tfx-bsl's `TFExampleRecord` in compare; the former is built on the
latter) -> the Transform graph's TFT layer -> (features, labels) batches ->
`build_model` under a tf.distribute strategy -> `model.fit` -> predictions on the
evaluation files -> `summarize` with the numpy metrics of `models/metrics.py`.

Impression space (`PipelineConfig.space`, TAML / UKD): the examples hold every
impression, the labels are a dict {label, click} (models/model.py), and the CVR
metrics count clicked rows only. UKD's teacher trains on the clicked rows and a
sample of the unclicked ones (`model.ukd_unclicked_rate`); UKD's student reads the
teacher's CVR as `pseudo_label`, either from a raw column written by a batch
inference step (the pipeline's BulkInferrer) or from a teacher model in memory.
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

from pfdx.config import ModelConfig, PipelineConfig
from pfdx.features import transform
from pfdx.models import impressions
from pfdx.models import metrics as model_metrics
from pfdx.models.heads import CTR
from pfdx.models.model import JointModel, build_model
from pfdx.models.strategies import CLICK, LABEL, PSEUDO_LABEL

# Rows in the shuffle buffer: tfx-bsl's default for TFXIO datasets.
SHUFFLE_BUFFER_ROWS = tfxio.TensorFlowDatasetOptions(batch_size=1).shuffle_buffer_size

# (file patterns, options, raw schema) -> batches of raw feature dicts.
DatasetFactory = Callable[[list[str], tfxio.TensorFlowDatasetOptions, schema_pb2.Schema],
                          tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Per evaluation example: label, student and teacher probabilities (teacher None
    for strategies without one) and the true conversion probability (None when the
    examples carry no `data.columns.truth`; NaN where an example lacks it). In
    impression space also the click label and, for a student with a CTR head, its
    CTR (None otherwise)."""

    labels: np.ndarray
    student: np.ndarray
    teacher: np.ndarray | None
    truth: np.ndarray | None
    clicks: np.ndarray | None = None
    ctr: np.ndarray | None = None

    # .npz through a buffer: gfile paths may be remote (gs://), and zip needs seeks.
    def save(self, path: str) -> None:
        buf = io.BytesIO()
        np.savez(buf, **{k: v for k, v in dataclasses.asdict(self).items() if v is not None})
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(buf.getvalue())

    def clicked(self) -> "Predictions":
        """The clicked rows: what CVR is scored on (click-space predictions are all clicks)."""
        if self.clicks is None:
            return self
        keep = self.clicks == 1
        return Predictions(*(None if v is None else v[keep]
                             for v in (getattr(self, f.name) for f in dataclasses.fields(self))))

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


def with_pseudo_label_column(schema: schema_pb2.Schema, column: str) -> schema_pb2.Schema:
    """`schema` plus a float `column`: the raw examples of UKD's student carry the
    teacher's CVR, written by batch inference after the Transform was fitted."""
    out = schema_pb2.Schema()
    out.CopyFrom(schema)
    feature = out.feature.add(name=column, type=schema_pb2.FLOAT)
    feature.value_count.min = feature.value_count.max = 1
    return out


def transformed_dataset(factory: DatasetFactory, files: Sequence[str],
                        tf_transform_output: tft.TFTransformOutput, config: PipelineConfig,
                        shuffle: bool, keep_truth: bool = False,
                        pseudo_label_column: str | None = None) -> tf.data.Dataset:
    """One pass over `files`: raw examples -> TFT layer -> (features, labels) batches,
    or (features, labels, true probability) with `keep_truth` -- an empty [0] tensor
    per batch when the examples have no true-probability column. `labels` is the
    conversion, or in impression space {label, click} (+ the raw
    `pseudo_label_column` as "pseudo_label")."""
    m = config.model
    label, click = config.data.columns.label, config.data.columns.click
    impression = config.space == "impression"
    truth = truth_column(config, tf_transform_output) if keep_truth else None
    schema = tf_transform_output.raw_metadata.schema
    if pseudo_label_column is not None:
        schema = with_pseudo_label_column(schema, pseudo_label_column)
    raw = factory(list(files), tfxio.TensorFlowDatasetOptions(
        batch_size=m.batch_size, shuffle=shuffle, shuffle_seed=m.seed, num_epochs=1,
        drop_final_batch=False), schema)
    tft_layer = tf_transform_output.transform_features_layer()

    def apply(features):
        pseudo = features.pop(pseudo_label_column) if pseudo_label_column is not None else None
        out = tft_layer(features)
        y = out.pop(label)
        if impression:
            y = {LABEL: y, CLICK: out.pop(click)}
            if pseudo is not None:
                y[PSEUDO_LABEL] = _dense_column(pseudo)
        if keep_truth:
            return out, y, (_dense_column(features[truth]) if truth else tf.zeros([0]))
        return out, y

    return raw.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def predict(model: JointModel, dataset: tf.data.Dataset) -> Predictions:
    """Probabilities over a `keep_truth` dataset: the student's are the exported
    student's (EKTF's best head, say, not the ensemble it trained in), the teacher's
    and the CTR those of the joint model."""
    columns: dict[str, list[np.ndarray]] = {k: [] for k in (
        "labels", "clicks", "student", "teacher", CTR, "truth")}
    served = model.student_model()
    for features, y, t in dataset:
        out = model.predict_both(features)
        if served is not model.student:  # a strategy serving part of its head
            out = dict(out, student=served(features))
        if isinstance(y, dict):
            columns["clicks"].append(np.reshape(y[CLICK], [-1]))
            y = y[LABEL]
        columns["labels"].append(np.reshape(y, [-1]))
        for key in ("student", "teacher", CTR):
            if key in out:
                columns[key].append(np.reshape(out[key], [-1]))
        columns["truth"].append(t.numpy())
    joined = {k: np.concatenate(v) if v else None for k, v in columns.items()}
    if not joined["truth"].size:
        joined["truth"] = None
    for key in ("labels", "clicks"):
        if joined[key] is not None:
            joined[key] = joined[key].astype(np.int64)
    return Predictions(**joined)


def summarize(p: Predictions, num_bins: int) -> dict[str, float]:
    """Paper §4.1 metrics of the student (and teacher); with a true probability, the
    student's gap to it: mean |p - true|, and ECE / MCE with the true probability in
    place of the label (how far each prediction bin is from the real CVR, free of the
    label noise that keeps even a perfect model's label ECE above 0).

    Impression space: those CVR metrics count the clicked rows only (the rows a
    click-space model is scored on); added are the impression count and, with a CTR
    head, the AUC of the CTR on clicks and of p_CTR * p_CVR on click-and-convert
    (CTCVR, ESMM's impression-space metric)."""
    out = {}
    if p.clicks is not None:
        out["impression_rows"] = int(p.clicks.size)
        if p.ctr is not None:
            out.update(ctr_auc=model_metrics.auc(p.clicks, p.ctr),
                       ctcvr_auc=model_metrics.auc(p.labels * p.clicks, p.ctr * p.student))
        p = p.clicked()
    y = p.labels
    s = model_metrics.summary(y, p.student, num_bins)
    out.update(rows=int(y.size), label_avg=s["label_avg"], student_auc=s["auc"],
               student_ece=s["ece"], student_mce=s["mce"], student_pred_avg=s["pred_avg"],
               student_pred_avg_gap=s["pred_avg_gap"])
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


def sampled_impressions(batches: tf.data.Dataset, m: ModelConfig) -> tf.data.Dataset:
    """UKD's teacher data from unshuffled `(features, labels)` batches: every clicked
    row and a `ukd_unclicked_rate` sample of the unclicked ones, drawn in file order
    and then shuffled, so every epoch holds the same rows in as many steps as the
    first (what Keras expects of a dataset of unknown length)."""
    rows = impressions.sample_unclicked(batches.unbatch(), m.ukd_unclicked_rate, m.seed)
    return rows.shuffle(SHUFFLE_BUFFER_ROWS, seed=m.seed).batch(m.batch_size)


def fit_and_evaluate(config: PipelineConfig, tf_transform_output: tft.TFTransformOutput,
                     factory: DatasetFactory, train_files: Sequence[str],
                     eval_files: Sequence[str], strategy: tf.distribute.Strategy | None = None,
                     callbacks: Sequence[tf.keras.callbacks.Callback] = (),
                     validate_each_epoch: bool = True, verbose: int = 2,
                     pseudo_label_column: str | None = None,
                     teacher: tf.keras.Model | None = None) -> Result:
    """Trains `config.model` for `model.epochs` on `train_files` (seeded by
    `model.seed`: weights and shuffling), then predicts and scores `eval_files`.
    `validate_each_epoch` also has Keras log the eval files' streaming metrics
    after every epoch (one more pass over them per epoch). UKD's student needs its
    teacher's CVR: a raw column of the examples (`pseudo_label_column`) or the
    served student of a trained `ukd_teacher` model (`teacher`)."""
    m = config.model
    if (pseudo_label_column is not None) + (teacher is not None) != (m.strategy == "ukd"):
        raise ValueError(f"model.strategy {m.strategy!r}: the teacher's pseudo-labels come "
                         "from exactly one of a column or a teacher model, for 'ukd' only")
    tf.keras.utils.set_random_seed(m.seed)
    regular_vocab, privileged_vocab = vocabularies(config, tf_transform_output)

    def dataset(files, shuffle, keep_truth=False):
        ds = transformed_dataset(factory, files, tf_transform_output, config, shuffle,
                                 keep_truth, pseudo_label_column)
        return impressions.with_pseudo_labels(teacher, ds) if teacher is not None else ds

    if m.strategy == "ukd_teacher":
        train = sampled_impressions(dataset(train_files, shuffle=False), m)
    else:
        train = dataset(train_files, shuffle=True)
    evaluation = dataset(eval_files, shuffle=False)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(m, regular_vocab, privileged_vocab)
    model.fit(train, epochs=m.epochs, validation_data=evaluation if validate_each_epoch else None,
              callbacks=list(callbacks), verbose=verbose)
    predictions = predict(model, dataset(eval_files, shuffle=False, keep_truth=True))
    return Result(model, predictions, summarize(predictions, config.evaluation.calibration_bins))
