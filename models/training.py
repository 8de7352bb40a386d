"""Fit the joint model on Transform-ed data and evaluate it: the one training loop.

The pipeline's Trainer (`components/trainer.py` `run_fn`, through
`models/champion.py`) and `pfdx compare` (`pipeline/compare.py`) both train with a
`Fitter`; they differ only in where the raw tf.Examples come from and what happens
to the model afterwards. Data path:
raw tf.Example files -> a `DatasetFactory` (TFX's `data_accessor.tf_dataset_factory`
in the Trainer, tfx-bsl's `TFExampleRecord` in compare; the former is built on the
latter) -> the Transform graph's TFT layer -> (features, labels) batches ->
`build_model` under a tf.distribute strategy -> `model.fit` with early stopping on
the validation split -> calibration -> (refit on train + validation) -> predictions
on the eval split -> `summarize` with the numpy metrics of `models/metrics.py`.

Impression space (`PipelineConfig.space`, TAML / UKD): the examples hold every
impression, the labels are a dict {label, click} (models/model.py), and the CVR
metrics count clicked rows only. UKD's teacher trains on the clicked rows and a
sample of the unclicked ones (`model.ukd.unclicked_rate`); UKD's student reads the
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
from pfdx.models import best_epochs, calibration, impressions, registry
from pfdx.models import metrics as model_metrics
from pfdx.models.heads import CTR
from pfdx.models.model import JointModel, build_model
from pfdx.models.strategies import CLICK, LABEL, PSEUDO_LABEL

# Early stopping watches the served student's ranking on the validation split; the
# teacher keeps the weights of its own best epoch by its ranking there.
VALIDATION_METRIC = "student_auc"
TEACHER_METRIC = "teacher_auc"

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
    """A trained model, its predictions on the eval files (None without them) and
    its metrics (see `Fitter`)."""

    model: JointModel
    predictions: Predictions | None
    metrics: dict[str, float]


def vocabularies(config: PipelineConfig,
                 tf_transform_output: tft.TFTransformOutput) -> tuple[dict[str, int], dict[str, int]]:
    """(regular, privileged) model input -> number of ids. The privileged inputs are
    whatever the Transform emitted for the selection's choice, in the configured
    encoding (`model.privileged_encoding`)."""
    regular = transform.feature_vocab(transform.regular_config(config), tf_transform_output)
    privileged = transform.privileged_vocab(tf_transform_output.transformed_feature_spec(),
                                            config.model.privileged_encoding,
                                            config.model.privileged_buckets)
    return regular, privileged


def truth_column(config: PipelineConfig, tf_transform_output: tft.TFTransformOutput) -> str | None:
    """The true-probability column, when configured and present in the raw schema."""
    truth = config.data.columns.truth
    return truth if truth is not None and truth in tf_transform_output.raw_feature_spec() else None


def _float_column(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """[B] float values of a one-value raw column; NaN where an example lacks it."""
    return transform.dense(tf.cast(x, tf.float32), np.nan)


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
    impression = config.space == registry.IMPRESSION
    truth = truth_column(config, tf_transform_output) if keep_truth else None
    schema = tf_transform_output.raw_metadata.schema
    if pseudo_label_column is not None:
        schema = with_pseudo_label_column(schema, pseudo_label_column)
    raw = factory(list(files), dataset_options(files, m, shuffle), schema)
    tft_layer = tf_transform_output.transform_features_layer()

    def apply(features):
        pseudo = features.pop(pseudo_label_column) if pseudo_label_column is not None else None
        out = tft_layer(features)
        y = out.pop(label)
        if impression:
            y = {LABEL: y, CLICK: out.pop(click)}
            if pseudo is not None:
                y[PSEUDO_LABEL] = _float_column(pseudo)
        if keep_truth:
            return out, y, (_float_column(features[truth]) if truth else tf.zeros([0]))
        return out, y

    return raw.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def dataset_options(files: Sequence[str], m: ModelConfig,
                    shuffle: bool) -> tfxio.TensorFlowDatasetOptions:
    """One pass in batches of `model.batch_size`; shuffled over the whole of `files`
    (up to `model.shuffle_buffer_rows`), so a log sorted by label, user or time still
    gives mixed batches (tfx-bsl's default buffer is 10,000 rows)."""
    options = tfxio.TensorFlowDatasetOptions(
        batch_size=m.batch_size, shuffle=shuffle, shuffle_seed=m.seed, num_epochs=1,
        drop_final_batch=False)
    if shuffle:
        options = options._replace(shuffle_buffer_size=max(1, min(
            count_records(files), m.shuffle_buffer_rows)))
    return options


def count_records(file_patterns: Sequence[str]) -> int:
    """Examples in the gzip TFRecord files matching `file_patterns` (ExampleGen's and
    compare's format): one pass over the serialized records, nothing parsed."""
    files = [f for p in file_patterns for f in tf.io.gfile.glob(p)]
    if not files:
        return 0
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


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
    click-space model is scored on); added are the impression count, the CVR against
    the true probability over every impression (`impression_metrics`) and, with a
    CTR head, the AUC of the CTR on clicks and of p_CTR * p_CVR on click-and-convert
    (CTCVR, ESMM's impression-space metric)."""
    out = {}
    if p.clicks is not None:
        out.update(impression_metrics(p, num_bins))
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
    out.update(_truth_metrics(p, num_bins, "truth_rows", "truth_avg", "student_truth_"))
    return {k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in out.items()}


def impression_metrics(p: Predictions, num_bins: int) -> dict[str, float]:
    """The student's CVR over every row of impression-space predictions (clicked or
    not) against the true conversion probability: what ESMM, UKD and TAML set out
    to estimate, and what no label can score, since an unclicked impression's
    conversion is never observed. A click-space model is scored the same way on
    the same impressions (`pfdx compare` predicts them with its own Transform)."""
    out = {"impression_rows": int(p.labels.size),
           "impression_pred_avg": float(p.student.astype(np.float64).mean())}
    out.update(_truth_metrics(p, num_bins, "impression_truth_rows", "impression_truth_avg",
                              "impression_truth_"))
    return out


def _truth_metrics(p: Predictions, num_bins: int, rows: str, avg: str,
                   prefix: str) -> dict[str, float]:
    """Gap of the student to the true probability where it is known: AUC against
    outcomes drawn from it (`metrics.expected_auc`), mean |p - true|, and ECE / MCE
    with the true probability in place of the label."""
    if p.truth is None or not (known := ~np.isnan(p.truth)).any():
        return {}
    truth = p.truth[known].astype(np.float64)
    student = p.student[known].astype(np.float64)
    ece, mce = model_metrics.calibration_errors(truth, student, num_bins)
    return {rows: int(known.sum()), avg: float(truth.mean()),
            f"{prefix}auc": model_metrics.expected_auc(truth, student),
            f"{prefix}mae": float(np.abs(student - truth).mean()),
            f"{prefix}ece": ece, f"{prefix}mce": mce}


def sampled_impressions(batches: tf.data.Dataset, m: ModelConfig) -> tf.data.Dataset:
    """UKD's teacher data from unshuffled `(features, labels)` batches: every clicked
    row and a `ukd.unclicked_rate` sample of the unclicked ones (None: as many as the
    clicked ones, from the batches' observed CTR), drawn in file order and then
    shuffled, so every epoch holds the same rows in as many steps as the first (what
    Keras expects of a dataset of unknown length)."""
    rate = m.ukd.unclicked_rate
    if rate is None:
        rate = impressions.balanced_unclicked_rate(batches)
    rows = impressions.sample_unclicked(batches.unbatch(), rate, m.seed)
    # The sample is at most the split: a buffer of that many mixes a sorted log.
    return rows.shuffle(m.shuffle_buffer_rows, seed=m.seed).batch(m.batch_size)


@dataclasses.dataclass(frozen=True)
class Splits:
    """File patterns of the three splits (components/splits.py)."""

    train: Sequence[str]
    validation: Sequence[str]
    eval: Sequence[str]


class Fitter:
    """Trains configs on one set of splits: the one training procedure of the
    Trainer and of `pfdx compare`.

    `fit` trains on the train split (seeded by `model.seed`: weights and shuffling)
    for at most `model.epochs`, stopping early on the validation split's student AUC
    and keeping the best epoch's weights; it fits the post-hoc calibration
    (`evaluation.calibration`) on the validation split and scores it (metrics
    `validation_*`): what per-run tuning compares. `finish` makes the model that
    ships from a fitted one: with `model.refit`, a fresh model of the same config
    trained on train + validation for the fitted run's best number of epochs (the
    validation split is the freshest data before eval), with the fitted calibration;
    then it scores the eval split (the plain metric names, and `predictions`).

    UKD's student needs its teacher's CVR: a raw column of the examples
    (`pseudo_label_column`) or the served student of its trained teacher stage
    (`teacher`; models/registry.py `teacher_stage`). `callbacks(name)` gives each
    training its own (TensorBoard, backup).
    `initialize(config, model, train_batches)` sees every model built before it
    trains (the warm start, models/warm_start.py `Restorer`).
    """

    def __init__(self, tf_transform_output: tft.TFTransformOutput, factory: DatasetFactory,
                 splits: Splits, strategy: tf.distribute.Strategy | None = None,
                 callbacks: Callable[[str], Sequence[tf.keras.callbacks.Callback]] = lambda _: (),
                 verbose: int = 2, pseudo_label_column: str | None = None,
                 teacher: tf.keras.Model | None = None,
                 initialize: Callable[[PipelineConfig, JointModel, tf.data.Dataset], None]
                 | None = None):
        self.tf_transform_output = tf_transform_output
        self.factory = factory
        self.splits = splits
        self.strategy = strategy or tf.distribute.get_strategy()
        self.callbacks = callbacks
        self.verbose = verbose
        self.pseudo_label_column = pseudo_label_column
        self.teacher = teacher
        self.initialize = initialize

    def _dataset(self, config: PipelineConfig, files, shuffle: bool, keep_truth: bool = False):
        ds = transformed_dataset(self.factory, files, self.tf_transform_output, config, shuffle,
                                 keep_truth, self.pseudo_label_column)
        return impressions.with_pseudo_labels(self.teacher, ds) if self.teacher is not None else ds

    def _train(self, config: PipelineConfig, files) -> tf.data.Dataset:
        if registry.STRATEGIES[config.model.strategy].samples_unclicked:
            return sampled_impressions(self._dataset(config, files, shuffle=False), config.model)
        return self._dataset(config, files, shuffle=True)

    def _build(self, config: PipelineConfig) -> JointModel:
        m = config.model
        stage = registry.STRATEGIES[m.strategy].teacher_stage
        if (self.pseudo_label_column is not None) + (self.teacher is not None) != (
                stage is not None):
            raise ValueError(f"model.strategy {m.strategy!r}: the teacher's pseudo-labels come "
                             "from exactly one of a column or a teacher model, for a strategy "
                             "with a teacher stage only")
        tf.keras.utils.set_random_seed(m.seed)
        regular_vocab, privileged_vocab = vocabularies(config, self.tf_transform_output)
        with self.strategy.scope():
            model = build_model(m, regular_vocab, privileged_vocab)
        if self.initialize is not None:
            self.initialize(config, model, self._dataset(config, self.splits.train, shuffle=False))
        return model

    def predict(self, config: PipelineConfig, model: JointModel, files) -> Predictions:
        """`model`'s probabilities over `files` (any examples the Transform's raw schema
        parses: `pfdx compare` scores a click-space model on every impression)."""
        return predict(model, self._dataset(config, files, shuffle=False, keep_truth=True))

    def fit(self, config: PipelineConfig, name: str = "fit") -> Result:
        m, bins = config.model, config.evaluation.calibration_bins
        model = self._build(config)
        stopping = tf.keras.callbacks.EarlyStopping(
            monitor=f"val_{VALIDATION_METRIC}", mode="max", patience=m.early_stopping_patience,
            restore_best_weights=True)
        # A teacher with its own tables keeps its own best epoch (models/best_epochs.py),
        # after the student's restore.
        teacher = [best_epochs.KeepWeights(best_epochs.teacher_side, monitor=f"val_{TEACHER_METRIC}")
                   ] if model.teacher_stands_alone else []
        history = model.fit(self._train(config, self.splits.train), epochs=m.epochs,
                            validation_data=self._dataset(config, self.splits.validation, False),
                            callbacks=[*self.callbacks(name), stopping, *teacher],
                            verbose=self.verbose)
        # Post-hoc calibration is fitted on this fit's raw logits: a warm start restored
        # the base run's, which would otherwise be fitted over and applied twice.
        model.student_model().calibration.assign(calibration.IDENTITY)
        validation = self.predict(config, model, self.splits.validation)
        metrics = {"epochs_trained": len(history.epoch), "best_epoch": stopping.best_epoch + 1}
        if teacher and teacher[0].best_epoch is not None:
            metrics["teacher_best_epoch"] = teacher[0].best_epoch
        if config.evaluation.calibration == "platt":
            clicked = validation.clicked()
            params = calibration.fit_platt(_logit(clicked.student), clicked.labels)
            model.student_model().calibration.assign(params)
            metrics.update(calibration_scale=params[0], calibration_bias=params[1],
                           validation_uncalibrated_student_ece=summarize(
                               validation, bins)["student_ece"])
            validation = self.predict(config, model, self.splits.validation)
        metrics.update({f"validation_{k}": v for k, v in summarize(validation, bins).items()})
        return Result(model, None, metrics)

    def finish(self, config: PipelineConfig, fitted: Result, name: str = "final") -> Result:
        model, metrics = fitted.model, dict(fitted.metrics)
        bins = config.evaluation.calibration_bins
        params = fitted.model.student_model().calibration.params
        if config.model.refit:
            model = self._build(config)
            epochs = int(fitted.metrics["best_epoch"])
            teacher_epochs = int(fitted.metrics.get("teacher_best_epoch", epochs))
            # Each side for its own best epoch count: the longer run, each side's
            # weights kept after its own count.
            keep = [] if teacher_epochs == epochs else [
                best_epochs.KeepWeights(best_epochs.student_side, epoch=epochs),
                best_epochs.KeepWeights(best_epochs.teacher_side, epoch=teacher_epochs)]
            model.fit(self._train(config, [*self.splits.train, *self.splits.validation]),
                      epochs=max(epochs, teacher_epochs),
                      callbacks=[*self.callbacks(f"{name}-refit"), *keep], verbose=self.verbose)
            metrics.update(refit_epochs=epochs, refit_teacher_epochs=teacher_epochs)
        calibration_layer = model.student_model().calibration
        if config.evaluation.calibration == "platt":  # the eval split before calibration
            calibration_layer.assign(calibration.IDENTITY)
            raw = summarize(self.predict(config, model, self.splits.eval), bins)
            metrics.update(uncalibrated_student_ece=raw["student_ece"],
                           uncalibrated_student_pred_avg=raw["student_pred_avg"])
        calibration_layer.assign(params)
        predictions = self.predict(config, model, self.splits.eval)
        metrics.update(summarize(predictions, bins))
        return Result(model, predictions, metrics)

    def fit_and_evaluate(self, config: PipelineConfig, name: str = "run") -> Result:
        """`fit` then `finish`: one config, start to end."""
        return self.finish(config, self.fit(config, name), name)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-7, 1.0 - 1e-7)
    return np.log(p) - np.log1p(-p)
