"""Training runs: per strategy, per-run tuning on the first seed as the Trainer does it
(`models/tuning.py`), then every seed fitted, refitted and calibrated with the
Trainer's own `models/training.py` `Fitter` on the TRAIN / VALIDATION / TEST windows,
its test predictions saved.

Impression-space strategies train at their configured values, as in the Trainer.
A strategy with a teacher stage (`ukd`) needs it trained (`ukd_teacher`): per seed
the teacher trains first, and its served student pseudo-labels the student's batches
in memory (`teacher=`); both are reported (the teacher is a CVR model in its own
right). The student's time excludes its teacher's. When impression windows exist,
click-space runs are also scored over every test impression (`impression_*`), through
their own Transform.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Sequence

from pfdx.config import PipelineConfig
from pfdx.experiments.strategies import CLICK, IMPRESSION, run_order, space_of, teacher_stage
from pfdx.experiments.windows import TEST, TRAIN, VALIDATION, Window, dataset_factory
from pfdx.reports.tables import number

PREDICTIONS_DIR = "predictions"


def fitter(config: PipelineConfig, tf_transform_output, windows: dict[str, Window],
           teacher=None):
    """The Trainer's `Fitter` on the TRAIN / VALIDATION / TEST windows (a strategy
    with a teacher stage: pseudo-labels from `teacher`, its trained stage's served
    student, in memory)."""
    from pfdx.models import training
    from pfdx.models.distributed import distribution_strategy

    return training.Fitter(
        tf_transform_output, dataset_factory,
        training.Splits([windows[TRAIN].pattern], [windows[VALIDATION].pattern],
                        [windows[TEST].pattern]),
        distribution_strategy(config.model.distribution), verbose=0, teacher=teacher)


def train(config: PipelineConfig, names: Sequence[str], windows: dict[str, dict[str, Window]],
          tft_output: dict[str, Any], out: str, log: Callable[[str], None],
          start: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Every strategy x seed of `config.compare`: (runs.csv rows, tuning.csv rows,
    {strategy: the values its tuning chose}); predictions under `out/predictions`."""
    import tensorflow as tf

    from pfdx.models import predictions, tuning

    bins = config.evaluation.calibration_bins
    runs, tuning_rows, chosen = [], [], {}
    order = run_order(names, [config.model.seed + k for k in range(config.compare.seeds)])
    # (teacher stage, seed) -> (its served student, its run's predictions)
    teachers: dict[tuple[str, int], tuple[Any, str]] = {}
    stages = {teacher_stage(n) for n in names}
    for i, (name, seed) in enumerate(order, start=1):
        space = space_of(name)
        run_config = config.with_model({"strategy": name, "seed": seed})
        if space == IMPRESSION:  # trained at their configured values, as in the Trainer
            run_config = dataclasses.replace(
                run_config, tuning=dataclasses.replace(run_config.tuning, enabled=False))
        stage = teacher_stage(name)
        teacher, teacher_run = teachers.pop((stage, seed)) if stage else (None, None)
        fit = fitter(run_config, tft_output[space], windows[space], teacher)
        tf.keras.backend.clear_session()  # drop the previous run's graphs and variables
        # s / run: the chosen point's fit and finish (not the other tuning trials).
        if name not in chosen:  # the first seed tunes, as the Trainer does
            outcome = tuning.tune(run_config, fit.fit,
                                  lambda line: log(f"  [tuning {name}] {line}"))
            chosen[name] = outcome.best.params
            tuning_rows += [{"strategy": name, **row} for row in outcome.table()]
            fitted, seconds = outcome.best_result, outcome.best.seconds
        else:
            tic = time.perf_counter()
            fitted = fit.fit(run_config.with_model(chosen[name]))
            seconds = time.perf_counter() - tic
        tic = time.perf_counter()
        result = fit.finish(run_config.with_model(chosen[name]), fitted)
        seconds += time.perf_counter() - tic
        del fitted
        if space == CLICK and IMPRESSION in windows:  # the same impressions as the others
            result.metrics.update(predictions.impression_metrics(fit.predict(
                run_config, result.model, [windows[IMPRESSION][TEST].pattern]), bins))
        path = os.path.join(out, PREDICTIONS_DIR, f"{name}-seed{seed}.npz")
        result.predictions.save(path)
        runs.append({"strategy": name, "seed": seed, "params": chosen[name], "seconds": seconds,
                     "predictions": os.path.relpath(path, out), "teacher_run": teacher_run,
                     **result.metrics})
        if name in stages:
            teachers[(name, seed)] = (result.model.student_model(), runs[-1]["predictions"])
        del result, teacher
        log(_progress(f"[{i:>{len(str(len(order)))}}/{len(order)}] {name:<15} seed {seed}",
                      runs[-1], seconds) + f"  [{time.perf_counter() - start:.0f}s]")
    return runs, tuning_rows, chosen


def _progress(prefix: str, metrics: dict[str, float], seconds: float) -> str:
    line = (f"{prefix}  {seconds:6.1f}s  AUC {number(metrics['student_auc'])}  teacher "
            f"{number(metrics.get('teacher_auc'))}  pred {number(metrics['student_pred_avg'])} "
            f"(label {number(metrics['label_avg'])})  ECE {number(metrics['student_ece'])}  "
            f"MCE {number(metrics['student_mce'])}")
    if "student_truth_mae" in metrics:
        line += (f"  |p-true| {number(metrics['student_truth_mae'])}  "
                 f"ECE(true) {number(metrics['student_truth_ece'])}")
    if "impression_truth_auc" in metrics:
        line += (f"  impressions {metrics['impression_rows']}: AUC(true) "
                 f"{number(metrics['impression_truth_auc'])} ECE(true) "
                 f"{number(metrics['impression_truth_ece'])}")
    if "ctr_auc" in metrics:
        line += f"  CTR AUC {number(metrics['ctr_auc'])}  CTCVR AUC {number(metrics['ctcvr_auc'])}"
    return line
