"""The Trainer's `run_fn`: wires data, the chosen strategy's model, training and export.

Everything it does is done elsewhere (features/, models/, serving/); it only wires:
raw examples of the train / validation / eval splits -> `models/champion.py` (the
strategy tuned on validation and the student alone, each a `models/training.py` fit
with early stopping and calibration; the baseline gate picks the shipped one; the
same code `pfdx compare` trains with) plus checkpoints and TensorBoard ->
training_metrics.json -> student export, and beside it the joint models a next run
warm-starts from. With a `base_model` (the last blessed run's, pipeline/dag.py) the
models start from its joint models (models/warm_start.py).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import pfdx  # noqa: F401
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx

from pfdx.config import ConfigError, PipelineConfig, from_dict
from pfdx.components import resume, splits
from pfdx.features import selection_report
from pfdx.models import champion, datasets, registry, training, warm_start
from pfdx.models.distributed import distribution_strategy
from pfdx.serving import export

PIPELINE_CONFIG_KEY = "pipeline_config"
PSEUDO_LABEL_COLUMN_KEY = "pseudo_label_column"
TRAINING_METRICS_FILE = "training_metrics.json"
# Under the ModelRun artifact: one TensorBoard folder per training, by its name.
TENSORBOARD_DIR = "logs"


# What training reads of the pipeline config, section -> fields (None: all of it):
# the columns and the example space (`model.strategy`) of models/training.py, the
# model, per-run tuning (models/tuning.py), the calibration and its bins (fitted and
# scored on the validation split), and the baseline gate's tolerances
# (models/champion.py: the gate picks which of the two trained students this Trainer
# exports, so it stays here), and how often it backs up (components/resume.py). Only
# these are the Trainer's exec properties: editing anything else -- the Evaluator's
# thresholds and slices, the rest of runner.*, kubeflow.*, compare.* -- leaves the
# Trainer cached (and its BackupAndRestore fingerprint, components/resume.py,
# unchanged). Settings that change what the Trainer reads
# arrive through its input artifacts instead (data.* -> the examples, selection.* ->
# the Transform graph). A field training starts to read must be added here: in the
# Trainer every other field holds its default.
TRAINING_FIELDS: dict[str, tuple[str, ...] | None] = {
    "data": ("columns",),
    "model": None,
    "tuning": None,
    "evaluation": ("calibration", "calibration_bins", "baseline_auc_tolerance",
                   "baseline_ece_tolerance"),
    "runner": ("backup_seconds",),
}


def training_config(config: PipelineConfig) -> dict[str, Any]:
    """The part of `config` training reads (TRAINING_FIELDS), as plain data."""
    tree = config.to_dict()
    return {section: tree[section] if fields is None else {f: tree[section][f] for f in fields}
            for section, fields in TRAINING_FIELDS.items()}


def trainer_custom_config(config: PipelineConfig,
                          pseudo_label_column: str | None = None) -> dict[str, Any]:
    """What training reads of the config, and for UKD's student the raw column
    holding its teacher's CVR."""
    return {PIPELINE_CONFIG_KEY: training_config(config),
            PSEUDO_LABEL_COLUMN_KEY: pseudo_label_column}


def _config(fn_args: tfx.components.FnArgs) -> PipelineConfig:
    """The training part of the pipeline config (defaults elsewhere), with per-run
    hyperparameter overrides applied on top."""
    compiled = from_dict(fn_args.custom_config[PIPELINE_CONFIG_KEY])
    overrides = [f"model.{k}={json.dumps(v)}" for k, v in (fn_args.hyperparameters or {}).items()]
    config = from_dict(fn_args.custom_config[PIPELINE_CONFIG_KEY], overrides)
    # The examples and the DAG's shape (a teacher stage) were fixed at compile time.
    run, built = ((c.space, registry.STRATEGIES[c.model.strategy].teacher_stage)
                  for c in (config, compiled))
    if run != built:
        raise ConfigError(
            f"run parameter strategy={config.model.strategy!r} needs another pipeline than "
            f"the one compiled for {compiled.model.strategy!r} (impression-space examples or "
            "UKD's teacher steps); compile the pipeline with that strategy")
    return config


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    config = _config(fn_args)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    strategy = distribution_strategy(config.model.distribution)
    validation_files, eval_files = _by_split(fn_args.eval_files)

    def callbacks(name: str) -> list[tf.keras.callbacks.Callback]:
        return [
            tf.keras.callbacks.TensorBoard(
                log_dir=os.path.join(fn_args.model_run_dir, TENSORBOARD_DIR, name)),
            # Pre-emption: a re-run of a killed Trainer resumes from its last backup.
            resume.backup_and_restore(fn_args, name, config.runner.backup_seconds),
        ]

    tokens = warm_start.vocabulary_tokens(tf_transform_output,
                                          config.data.columns.regular_categorical)
    # The selection the Transform applied (components/privileged_transform.py).
    selection = os.path.join(fn_args.transform_output, selection_report.SELECTION_FILE)
    plan = warm_start.plan(fn_args.base_model, fn_args.train_files,
                           selection_report.load_selection(selection)
                           if tf.io.gfile.exists(selection) else None)
    logging.info("warm start: %s", plan.reason)
    restorer = warm_start.Restorer(plan, tokens, hashed=[
        f for f in config.data.columns.regular_categorical if f not in tokens])
    fitter = training.Fitter(
        tf_transform_output, fn_args.data_accessor.tf_dataset_factory,
        training.Splits(fn_args.train_files, validation_files, eval_files), strategy, callbacks,
        pseudo_label_column=fn_args.custom_config.get(PSEUDO_LABEL_COLUMN_KEY),
        initialize=restorer)
    if config.space == registry.CLICK:
        _, privileged = datasets.vocabularies(config, tf_transform_output)
        winner = champion.train_champion(config, fitter, bool(privileged), logging.info,
                                         plan.params)
        result, metrics = winner.shipped, winner.metrics()
        trained = {name: (side.final.model, side.tuning.best.params)
                   for name, side in winner.trained().items()}
    else:  # TAML / UKD: see models/champion.py
        result = fitter.fit_and_evaluate(config, config.model.strategy)
        metrics = result.metrics
        trained = {config.model.strategy: (result.model, {})}
    metrics["warm_start"] = restorer.summary(trained)
    joint_dir = warm_start.model_dir(fn_args.serving_model_dir)
    for name, (model, params) in trained.items():
        warm_start.save(joint_dir, name, model, params, fn_args.train_files)
    warm_start.save_inputs(joint_dir, tokens, selection)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, TRAINING_METRICS_FILE), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True, default=float)

    rows = _raw_examples(eval_files, 64)
    regular = config.data.columns.regular
    student = result.model.student_model()
    export.export_student(student, tf_transform_output, regular, fn_args.serving_model_dir,
                          [export.strip_to_regular(e, regular) for e in rows])
    # Fails the Trainer (nothing to bless or push) if the SavedModel serves differently.
    export.check_export(student, tf_transform_output, regular, fn_args.serving_model_dir, rows,
                        os.path.join(fn_args.model_run_dir, export.EXPORT_CHECK_FILE))


def _by_split(file_patterns: list[str]) -> tuple[list[str], list[str]]:
    """The Trainer's eval files (`EvalArgs(splits=[validation, eval])`) by split, from
    TFX's `.../Split-<name>/*` patterns."""
    by_split = {name: [p for p in file_patterns if f"Split-{name}" in p]
                for name in (splits.VALIDATION, splits.EVAL)}
    missing = [name for name, files in by_split.items() if not files]
    if missing:
        raise ValueError(f"the Trainer's eval files {file_patterns} lack the split(s) {missing}")
    return by_split[splits.VALIDATION], by_split[splits.EVAL]


def _raw_examples(file_patterns: list[str], n: int) -> list[bytes]:
    files = [f for p in file_patterns for f in tf.io.gfile.glob(p)]
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(n)
    return [r.numpy() for r in ds]
