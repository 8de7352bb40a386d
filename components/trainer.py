"""The Trainer's `run_fn`: wires data, the chosen strategy's model, training and export.

Everything it does is done elsewhere (features/, models/, serving/); it only wires:
raw examples -> TFT layer -> joint teacher/student model under a tf.distribute
strategy -> checkpoints, TensorBoard, teacher/student metrics -> student export.
"""
from __future__ import annotations

import json
import os
from typing import Any

import pfdx  # noqa: F401
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from pfdx.config import PipelineConfig, from_dict
from pfdx.features import transform
from pfdx.models import metrics as model_metrics
from pfdx.models.model import build_model
from pfdx.serving import export

PIPELINE_CONFIG_KEY = "pipeline_config"
TRAINING_METRICS_FILE = "training_metrics.json"


def trainer_custom_config(config: PipelineConfig) -> dict[str, Any]:
    return {PIPELINE_CONFIG_KEY: config.to_dict()}


def _config(fn_args: tfx.components.FnArgs) -> PipelineConfig:
    """The pipeline config, with per-run hyperparameter overrides applied on top."""
    overrides = [f"model.{k}={json.dumps(v)}" for k, v in (fn_args.hyperparameters or {}).items()]
    return from_dict(fn_args.custom_config[PIPELINE_CONFIG_KEY], overrides)


def distribution_strategy(distribution: str = "auto") -> tf.distribute.Strategy:
    """The tf.distribute strategy named by `model.distribution`.

    `auto` follows TF_CONFIG, which a multi-host job sets on every replica (Vertex AI
    worker pools, a Kubeflow TFJob): more than one chief/worker -> synchronous
    all-reduce across hosts (MultiWorkerMirroredStrategy); otherwise all local GPUs
    (or the CPU) of this host (MirroredStrategy).
    """
    if distribution == "auto":
        cluster = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
        hosts = sum(cluster.num_tasks(job) for job in ("chief", "worker") if job in cluster.jobs)
        distribution = "multi_worker" if hosts > 1 else "mirrored"
    if distribution == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if distribution == "mirrored":
        return tf.distribute.MirroredStrategy()
    raise ValueError(f"model.distribution: {distribution!r} is not one of auto, mirrored, "
                     "multi_worker")


def _dataset(fn_args, files: list[str], tf_transform_output: tft.TFTransformOutput,
             label: str, batch_size: int, epochs: int | None, shuffle: bool, seed: int):
    """Raw examples -> TFT layer -> (features, label) batches."""
    dataset = fn_args.data_accessor.tf_dataset_factory(
        files, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=shuffle,
                                              shuffle_seed=seed, num_epochs=epochs,
                                              drop_final_batch=False),
        tf_transform_output.raw_metadata.schema)
    tft_layer = tf_transform_output.transform_features_layer()

    def apply(raw):
        out = tft_layer(raw)
        return out, out.pop(label)

    return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    config = _config(fn_args)
    m = config.model
    label = config.data.columns.label
    tf.keras.utils.set_random_seed(m.seed)
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    regular_cfg = transform.regular_config(config)
    transformed = tf_transform_output.transformed_feature_spec()
    privileged = sorted(k for k in transformed if k.startswith(transform.PRIVILEGED_PREFIX))
    regular_vocab, _ = transform.feature_vocab(dict(regular_cfg, privileged={}))
    privileged_vocab = {k: transform.PRIVILEGED_VOCAB for k in privileged}

    strategy = distribution_strategy()
    train = _dataset(fn_args, fn_args.train_files, tf_transform_output, label,
                     m.batch_size, 1, True, m.seed)
    evaluation = _dataset(fn_args, fn_args.eval_files, tf_transform_output, label,
                          m.batch_size, 1, False, m.seed)
    with strategy.scope():
        model = build_model(m, regular_vocab, privileged_vocab)
    callbacks = [
        tf.keras.callbacks.TensorBoard(log_dir=os.path.join(fn_args.model_run_dir, "logs")),
        # Pre-emption: a re-run of a killed Trainer resumes from the last epoch.
        tf.keras.callbacks.BackupAndRestore(os.path.join(fn_args.model_run_dir, "backup")),
    ]
    model.fit(train,
              epochs=m.epochs, validation_data=evaluation, callbacks=callbacks, verbose=2)

    summary = evaluate(model, evaluation)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, TRAINING_METRICS_FILE), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)

    warmup = _raw_examples(fn_args.eval_files, 64)
    export.export_student(model.student_model(), tf_transform_output,
                          config.data.columns.regular, fn_args.serving_model_dir,
                          [export.strip_to_regular(e, config.data.columns.regular) for e in warmup])


def evaluate(model, dataset) -> dict[str, float]:
    """Student and teacher AUC / calibration on a dataset (logged next to the model)."""
    labels, student, teacher = [], [], []
    for features, y in dataset:
        out = model.predict_both(features)
        labels.append(np.reshape(y, [-1]))
        student.append(np.reshape(out["student"], [-1]))
        teacher.append(np.reshape(out["teacher"], [-1]))
    y = np.concatenate(labels)
    s, t = np.concatenate(student), np.concatenate(teacher)
    ece, mce = model_metrics.calibration_errors(y, s)
    return {"student_auc": float(model_metrics.auc(y, s)), "teacher_auc": float(model_metrics.auc(y, t)),
            "student_ece": float(ece), "student_mce": float(mce), "label_avg": float(y.mean()),
            "student_pred_avg": float(s.mean()), "teacher_pred_avg": float(t.mean()), "rows": int(y.size)}


def _raw_examples(file_patterns: list[str], n: int) -> list[bytes]:
    files = [f for p in file_patterns for f in tf.io.gfile.glob(p)]
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").take(n)
    return [r.numpy() for r in ds]
