"""Fit the joint model on Transform-ed data and evaluate it: the one training loop.

The pipeline's Trainer (`components/trainer.py` `run_fn`, through
`models/champion.py`) and `pfdx compare` (`experiments/runs.py`) both train with a
`Fitter`; they differ only in where the raw tf.Examples come from and what happens
to the model afterwards. Data path: the Transform-ed batches of `models/datasets.py`
-> `build_model` under a tf.distribute strategy -> `model.fit` with early stopping on
the validation split -> calibration -> (refit on train + validation) -> predictions
on the eval split, scored by `models/predictions.py` `summarize`.

Impression space (`PipelineConfig.space`, TAML / UKD): the CVR metrics count clicked
rows only; UKD's teacher trains on a sample of the unclicked rows
(`models/datasets.py` `sampled_impressions`), UKD's student on its teacher's
pseudo-labels.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf
import tensorflow_transform as tft

from pfdx.config import PipelineConfig
from pfdx.models import best_epochs, calibration, impressions, registry, tuning
from pfdx.models.datasets import (DatasetFactory, count_records, in_memory, sampled_impressions,
                                  shuffled_rows, transformed_dataset, vocabularies)
from pfdx.models.model import JointModel, build_model
from pfdx.models.predictions import Predictions, predict, summarize

# Early stopping watches the served student's ranking on the validation split; the
# teacher keeps the weights of its own best epoch by its ranking there.
VALIDATION_METRIC = "student_auc"
TEACHER_METRIC = "teacher_auc"
# A refit's training name: its fit's, with this suffix (`callbacks(name)`).
REFIT_SUFFIX = "-refit"


@dataclasses.dataclass
class Result:
    """A trained model, its predictions on the eval files (None without them), its
    metrics (see `Fitter`) and its predictions on the validation split (`fit`'s:
    per-run tuning compares candidates on the same rows)."""

    model: JointModel
    predictions: Predictions | None
    metrics: dict[str, float]
    validation: Predictions | None = None


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
    then it zeroes the student's rows no gradient reached (`model.zero_untrained_rows`)
    and scores the eval split (the plain metric names, and `predictions`).

    UKD's student needs its teacher's CVR: a raw column of the examples
    (`pseudo_label_column`) or the served student of its trained teacher stage
    (`teacher`; models/registry.py `teacher_stage`). `callbacks(name)` gives each
    training its own (TensorBoard, backup).
    `initialize(config, model)` sees every model, its variables created, before it
    trains (the warm start, models/warm_start.py `Restorer`).
    """

    def __init__(self, tf_transform_output: tft.TFTransformOutput, factory: DatasetFactory,
                 splits: Splits, strategy: tf.distribute.Strategy | None = None,
                 callbacks: Callable[[str], Sequence[tf.keras.callbacks.Callback]] = lambda _: (),
                 verbose: int = 2, pseudo_label_column: str | None = None,
                 teacher: tf.keras.Model | None = None,
                 initialize: Callable[[PipelineConfig, JointModel], None] | None = None):
        self.tf_transform_output = tf_transform_output
        self.factory = factory
        self.splits = splits
        self.strategy = strategy or tf.distribute.get_strategy()
        self.callbacks = callbacks
        self.verbose = verbose
        self.pseudo_label_column = pseudo_label_column
        self.teacher = teacher
        self.initialize = initialize
        self._unshuffled: dict[tuple, tf.data.Dataset] = {}
        self._in_memory: dict[tuple, object] = {}
        self._rows: dict[tuple, int] = {}

    def _row_count(self, files) -> int:
        """Examples in `files`, counted once per Fitter (a pass over the records)."""
        key = tuple(files)
        if key not in self._rows:
            self._rows[key] = count_records(files)
        return self._rows[key]

    def _dataset(self, config: PipelineConfig, files, shuffle: bool, keep_truth: bool = False):
        # An unshuffled pass reads what every config of a run reads: it is built, and
        # its TFT layer traced (about 2 s), once, and a split of at most
        # `model.cache_rows` rows is kept in memory after its first pass. A shuffled one
        # (a split above `cache_rows`, `_train`) is built per fit, so a fit sees its
        # seed's order whatever trained before it.
        m = config.model
        key = (tuple(files), keep_truth, m.batch_size, m.cache_rows, config.space,
               config.data.columns)
        if not shuffle and key in self._unshuffled:
            return self._unshuffled[key]
        ds = self._transformed(config, files, shuffle, keep_truth)
        if not shuffle:
            if self._row_count(files) <= m.cache_rows:
                ds = ds.cache()
            self._unshuffled[key] = ds
        return ds

    def _transformed(self, config: PipelineConfig, files, shuffle: bool,
                     keep_truth: bool = False) -> tf.data.Dataset:
        ds = transformed_dataset(self.factory, files, self.tf_transform_output, config, shuffle,
                                 keep_truth, self.pseudo_label_column, self._row_count(files))
        return ds if self.teacher is None else impressions.with_pseudo_labels(self.teacher, ds)

    def _train(self, config: PipelineConfig, files) -> tf.data.Dataset:
        if registry.STRATEGIES[config.model.strategy].samples_unclicked:
            return sampled_impressions(self._dataset(config, files, shuffle=False), config.model)
        rows = self._rows_in_memory(config, files)
        if rows is None:
            return self._dataset(config, files, shuffle=True)
        return shuffled_rows(rows, config.model)

    def _rows_in_memory(self, config: PipelineConfig, files):
        """The Transform-ed rows of `files` held in memory (`in_memory`), read once per
        Fitter for every fit of a run (tuning's trials, the refit); None for a split
        above `model.cache_rows` rows, or across hosts (each worker reads its own files)."""
        m = config.model
        if self._row_count(files) > m.cache_rows or isinstance(
                self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return None
        key = (tuple(files), config.space, config.data.columns)
        if key not in self._in_memory:
            self._in_memory[key] = in_memory(self._transformed(config, files, shuffle=False))
        return self._in_memory[key]

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
            # The validation pass's spec is the training batches': every fit builds it.
            model.create_variables(
                self._dataset(config, self.splits.validation, False).element_spec)
        if self.initialize is not None:
            self.initialize(config, model)
        return model

    def predict(self, config: PipelineConfig, model: JointModel, files) -> Predictions:
        """`model`'s probabilities over `files` (any examples the Transform's raw schema
        parses: `pfdx compare` scores a click-space model on every impression)."""
        return predict(model, self._dataset(config, files, shuffle=False, keep_truth=True))

    def fit(self, config: PipelineConfig, name: str = "fit") -> Result:
        m, bins = config.model, config.evaluation.calibration_bins
        model = self._build(config)
        stopping = tf.keras.callbacks.EarlyStopping(
            monitor=f"val_{VALIDATION_METRIC}", mode="max", patience=m.early_stopping_patience)
        # The model at the student's best epoch, then a teacher with its own tables at
        # its own (models/best_epochs.py).
        keep = best_epochs.KeepWeights
        best = keep(best_epochs.whole_model, monitor=f"val_{VALIDATION_METRIC}")
        teacher = [keep(best_epochs.teacher_side, monitor=f"val_{TEACHER_METRIC}")
                   ] if model.teacher_stands_alone else []
        history = model.fit(self._train(config, self.splits.train), epochs=m.epochs,
                            validation_data=self._dataset(config, self.splits.validation, False),
                            callbacks=[*self.callbacks(name), stopping, best, *teacher],
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
            params = calibration.fit_platt(calibration.logit(clicked.student), clicked.labels)
            model.student_model().calibration.assign(params)
            metrics.update(calibration_scale=params[0], calibration_bias=params[1],
                           validation_uncalibrated_student_ece=summarize(
                               validation, bins)["student_ece"])
            validation = self.predict(config, model, self.splits.validation)
        metrics.update({f"validation_{k}": v for k, v in summarize(validation, bins).items()})
        if m.refit:  # `finish` trains a fresh model: this one is only read from now on
            model.release_optimizers()
        return Result(model, None, metrics, validation)

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
                      callbacks=[*self.callbacks(name + REFIT_SUFFIX), *keep], verbose=self.verbose)
            metrics.update(refit_epochs=epochs, refit_teacher_epochs=teacher_epochs)
            failed = best_epochs.refit_failures(
                fitted.validation.clicked(),
                self.predict(config, model, self.splits.validation).clicked(),
                separate=not model.has_teacher or model.teacher_stands_alone)
            for side in failed:
                best_epochs.copy_side(side, fitted.model, model)
            if failed:
                metrics["refit_discarded"] = ",".join(failed)
        if config.model.zero_untrained_rows:  # before scoring: what is served
            kept = model.zero_untrained_rows()
            metrics["student_trained_rows"] = sum(kept.values())
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

    def student_alone(self, config: PipelineConfig, fitted: Result) -> Result:
        """`fitted`'s student as the student alone's fit (`config`: strategy `none`): a
        `none` model holding the student's weights, with the student's validation
        predictions and metrics. `fitted` trained it without distillation beside a
        teacher on its own tables, as `none` trains it (models/tuning.py
        `student_alone`); `finish` then refits the student alone from scratch."""
        model = self._build(config)
        source = fitted.model.student.weights
        if [w.shape for w in model.student.weights] != [w.shape for w in source]:
            raise ValueError(f"{fitted.model.config.strategy!r}'s student is not the student "
                             "alone's: their weights differ in shape")
        for target, value in zip(model.student.weights, source):
            target.assign(value)
        return Result(model, None, tuning.student_metrics(fitted.metrics),
                      dataclasses.replace(fitted.validation, teacher=None))

    def fit_and_evaluate(self, config: PipelineConfig, name: str = "run") -> Result:
        """`fit` then `finish`: one config, start to end."""
        return self.finish(config, self.fit(config, name), name)

