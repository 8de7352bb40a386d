"""What `pfdx compare` writes: compare.csv / compare.md (each strategy's mean and
sample std over seeds), runs.csv, tuning.csv, compare.json and reliability.png.

The CVR columns count the clicked test rows for every strategy (an impression-space
model is scored on the same rows as a click-space one); the true-CVR columns and the
oracle row appear when the log has the simulator's true CVR (`data.columns.truth`),
the impression table when runs were scored over every test impression.
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any

from pfdx.config import EvaluationConfig, ModelConfig, PipelineConfig, from_dict
from pfdx.experiments.strategies import IMPRESSION, space_of
from pfdx.experiments.windows import TEST, TRAIN, window_name
from pfdx.models import champion
from pfdx.models.registry import STRATEGIES
from pfdx.reports.tables import markdown_table, number

# Columns of compare.csv (each as <name>_mean, <name>_std) and runs.csv, in the
# order of HA-PFD's Tables 2-5, then the gap to the true CVR, the impression-space
# metrics (empty for click-space strategies) and the run time.
METRICS = ("student_auc", "teacher_auc", "label_avg", "student_pred_avg",
           "student_pred_avg_gap", "teacher_pred_avg", "teacher_pred_avg_gap",
           "student_ece", "student_mce", "truth_avg", "student_truth_mae",
           "student_truth_ece", "student_truth_mce", "student_truth_auc", "impression_rows",
           "impression_pred_avg", "impression_truth_avg", "impression_truth_auc",
           "impression_truth_mae", "impression_truth_ece", "impression_truth_mce",
           "ctr_auc", "ctcvr_auc", "seconds")
# A bin with fewer pooled rows is not drawn: its mean label is mostly noise (ECE and
# MCE in the table still count every bin).
MIN_BIN_ROWS = 20


def load_predictions(out: str, run_row: dict[str, Any]):
    from pfdx.models.predictions import Predictions

    return Predictions.load(os.path.join(out, run_row["predictions"]))


def write_outputs(out: str, summary: dict[str, Any], config: PipelineConfig) -> None:
    import tensorflow as tf

    def write_csv(name: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        with tf.io.gfile.GFile(os.path.join(out, name), "w") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, dict)
                                 else ("" if v is None else v) for k, v in r.items()})

    write_csv("compare.csv", summary["table"],
              ["strategy", "seeds", "params"] + [f"{m}_{s}" for m in METRICS
                                                 for s in ("mean", "std")])
    write_csv("runs.csv", summary["runs"], ["strategy", "seed", "params", "rows", "truth_rows"]
              + list(METRICS) + ["predictions", "teacher_run"])
    if summary["tuning"]:
        write_csv("tuning.csv", summary["tuning"], list(dict.fromkeys(
            k for row in summary["tuning"] for k in row)))
    with tf.io.gfile.GFile(os.path.join(out, "compare.md"), "w") as f:
        f.write(markdown(summary))
    with tf.io.gfile.GFile(os.path.join(out, "compare.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=str)
    with tf.io.gfile.GFile(os.path.join(out, "reliability.png"), "wb") as f:
        f.write(reliability_chart(out, summary, config.evaluation.calibration_bins))


def _cell(entry: dict[str, Any], metric: str, digits: int = 4) -> str:
    mean, std = entry.get(f"{metric}_mean"), entry.get(f"{metric}_std")
    if mean is None:
        return "-"
    return number(mean, digits) + (f" ± {number(std, digits)}" if std is not None else "")


def _gate_cell(entry: dict[str, Any], baseline: dict[str, Any] | None,
               evaluation: EvaluationConfig) -> str:
    """What the pipeline's baseline gate would ship, judged on the seeds' means."""
    if baseline is None or entry is baseline:
        return "-"
    decision = champion.gate(
        *({k: e[f"{k}_mean"] for k in ("student_auc", "student_ece")} for e in (entry, baseline)),
        evaluation)
    return "ships" if decision.shipped == champion.DISTILLED else "student alone ships"


def impression_truth_table(table: list[dict[str, Any]], oracle: dict[str, Any] | None) -> list[str]:
    """Markdown: each strategy's CVR against the true CVR on the clicked test rows and
    over every test impression (empty when the runs were not scored on impressions)."""
    if not any(e.get("impression_truth_auc_mean") is not None for e in table):
        return []
    rows = [[e["strategy"], _cell(e, "student_truth_auc"), _cell(e, "impression_truth_auc"),
             f"{_cell(e, 'impression_pred_avg')} ({number(e['impression_truth_avg_mean'])})",
             _cell(e, "impression_truth_mae"), _cell(e, "impression_truth_ece"),
             _cell(e, "impression_truth_mce")] for e in table]
    if oracle is not None and "impression_truth_auc" in oracle:
        rows.append(["true CVR (oracle)", number(oracle["truth_auc"]),
                     number(oracle["impression_truth_auc"]),
                     number(oracle["impression_truth_avg"]), "0", "0", "0"])
    return ["", "CVR against the true CVR (the simulator's `true_cvr`), on the clicked test "
            "rows and over every test impression, clicked or not: AUC against outcomes "
            "drawn from the true CVR (its expectation, `models/metrics.py` "
            "`expected_auc`), mean prediction against mean true CVR, mean |p − true|, and "
            "ECE / MCE with the true CVR in place of the label. Sample-selection bias "
            "shows as the gap between the two: a model of clicked rows that ranks and "
            "calibrates well there but not over all impressions.", "",
            markdown_table(["strategy", "AUC vs true, clicked", "AUC vs true, all impressions",
                            "pred avg, all (true avg)", "mean abs(p − true), all",
                            "ECE vs true, all", "MCE vs true, all"], rows)]


def _staged_notes(names: list[str], model: ModelConfig) -> str:
    """What the compare.md note says of the strategies in `names` that sample the
    unclicked impressions or learn from a teacher stage (UKD's two)."""
    rate = model.ukd.unclicked_rate
    sample = (f"a {rate} sample" if rate is not None
              else "as many as its clicked ones (1:1, from the observed CTR)")
    notes = [f"{n}'s unclicked rows are {sample}" for n in names
             if STRATEGIES[n].samples_unclicked]
    notes += [f"{n} is pseudo-labelled by the {STRATEGIES[n].teacher_stage} of the same seed, "
              "whose time its s / run excludes" for n in names
              if STRATEGIES[n].teacher_stage is not None]
    return " " + "; ".join(notes) + "." if notes else ""


def _id_tables(model: dict[str, Any]) -> str:
    """The categorical ids' tables as the config made them (a summary written before
    `hash_rows_per_id` existed used `hash_buckets` rows)."""
    if model.get("categorical_encoding") == "vocabulary":
        return f"ids in a vocabulary of at most {model['max_vocabulary']}"
    if model.get("hash_rows_per_id"):
        return (f"hashed ids in {model['hash_rows_per_id']} rows per id, at most "
                f"{model['hash_buckets']}")
    return f"hash buckets {model['hash_buckets']}"


def markdown(summary: dict[str, Any]) -> str:
    table, windows, oracle = summary["table"], summary["windows"], summary["oracle_true_cvr"]
    model = summary["config"]["model"]
    truth = any(e.get("student_truth_mae_mean") is not None for e in table)
    impressions = any(space_of(e["strategy"]) == IMPRESSION for e in table)
    seeds = max(e["seeds"] for e in table)
    cols = ["strategy", "AUC", "teacher AUC", "label avg", "pred avg (gap)",
            "teacher pred avg (gap)", "ECE", "MCE"]
    if truth:
        cols += ["mean abs(p − true CVR)", "ECE vs true CVR", "MCE vs true CVR"]
    if impressions:
        cols += ["CTR AUC", "CTCVR AUC"]
    cols += ["baseline gate", "params", "s / run"]
    baseline = next((e for e in table if e["strategy"] == champion.BASELINE), None)
    typed = from_dict(summary["config"])  # the settings the gate and the notes read
    lines = [
        "# pfdx compare", "",
        f"Test window: {windows[TEST]['rows']} clicked rows ({windows[TEST]['conversions']} "
        f"conversions), after a train window of {windows[TRAIN]['rows']} rows "
        f"({windows[TRAIN]['conversions']} conversions); split by time. "
        f"{seeds} seed(s) per strategy: each cell is the mean"
        + (" ± the sample standard deviation over seeds" if seeds > 1 else "") + ". "
        f"Model: hidden {model['hidden_units']}, at most {model['epochs']} epoch(s) with "
        f"early stopping on the validation window (patience "
        f"{model['early_stopping_patience']}), batch {model['batch_size']}, {_id_tables(model)}, "
        f"calibration {summary['config']['evaluation']['calibration']}"
        f"; configured lr {model['learning_rate']}, γ {model['kd']['gamma']}, "
        f"λ {model['kd']['lam']}, alignment weight {model['alignment']['weight']}. "
        f"Privileged features (selected on the train window): "
        f"{', '.join(summary['selection']['selected'])}.", ""]
    if impressions:
        train = windows[window_name(TRAIN, IMPRESSION)]
        test = windows[window_name(TEST, IMPRESSION)]
        names = [e["strategy"] for e in table if space_of(e["strategy"]) == IMPRESSION]
        lines += [
            f"Impression-space strategies ({', '.join(names)}) "
            f"train on every impression of the same time range: {train['rows']} "
            f"({train['clicks']} clicked), and predict the {test['rows']} test impressions "
            f"({test['clicks']} clicked). For every strategy the CVR columns (AUC to MCE, "
            f"and the true-CVR ones) count the clicked test rows only, the same rows "
            f"for all; CTR AUC scores p_CTR against the click and CTCVR AUC "
            f"p_CTR · p_CVR against click-and-convert, over every test impression "
            f"(\"-\": no CTR head)." + _staged_notes(names, typed.model), ""]
    rows = []
    for e in table:
        cells = [e["strategy"], _cell(e, "student_auc"), _cell(e, "teacher_auc"),
                 _cell(e, "label_avg"),
                 f"{_cell(e, 'student_pred_avg')} ({number(e['student_pred_avg_gap_mean'])})",
                 "-" if e["teacher_pred_avg_mean"] is None else
                 f"{_cell(e, 'teacher_pred_avg')} ({number(e['teacher_pred_avg_gap_mean'])})",
                 _cell(e, "student_ece"), _cell(e, "student_mce")]
        if truth:
            cells += [_cell(e, "student_truth_mae"), _cell(e, "student_truth_ece"),
                      _cell(e, "student_truth_mce")]
        if impressions:
            cells += [_cell(e, "ctr_auc"), _cell(e, "ctcvr_auc")]
        rows.append(cells + [_gate_cell(e, baseline, typed.evaluation),
                             json.dumps(e["params"], sort_keys=True) if e["params"] else "-",
                             number(e["seconds_mean"], 0)])
    if oracle is not None:
        cells = ["true CVR (oracle)", number(oracle["auc"]), "-", number(oracle["label_avg"]),
                 f"{number(oracle['pred_avg'])} ({number(oracle['pred_avg_gap'])})", "-",
                 number(oracle["ece"]), number(oracle["mce"])]
        if truth:
            cells += ["0", "0", "0"]
        if impressions:
            cells += ["-", "-"]
        rows.append(cells + ["-", "-", "-"])
    lines.append(markdown_table(cols, rows))
    if oracle is not None:
        lines += ["", "The oracle row scores the simulator's hidden true CVR as if it were a "
                  "model: the best AUC any model can reach on this window, and the ECE / MCE "
                  "that label noise alone produces."]
    lines += impression_truth_table(table, oracle)
    if not summary["config"]["tuning"]["enabled"]:
        lines += ["", "No per-run tuning (`--fixed`): every strategy at its configured values."]
    elif summary["tuning"]:
        lines += ["", f"Per-run tuning: each strategy's values were chosen on the validation "
                  f"window by {summary['config']['tuning']['metric']} among the no-distillation "
                  f"point, the configured values and up to "
                  f"{summary['config']['tuning']['max_trials']} grid points, distillation "
                  f"only when ahead by more than "
                  f"{summary['config']['tuning'].get('min_gain_se', 0):g} standard error(s) of the "
                  f"paired AUC difference (tuning.csv has every trial, `validation_gain` and "
                  f"`validation_gain_se` for the rival; the params column shows the choice)."]
    if summary.get("skipped"):
        lines += ["", f"No privileged feature survived selection: nothing to distil, so "
                  f"{', '.join(summary['skipped'])} were skipped."]
    lines += ["", "![reliability diagram](reliability.png)", ""]
    return "\n".join(lines)


def reliability_chart(out: str, summary: dict[str, Any], num_bins: int) -> bytes:
    """PNG: per strategy (all seeds pooled) mean label -- and mean true CVR when known --
    against mean prediction in each of `num_bins` equal-width bins."""
    import numpy as np

    from pfdx.models import metrics as model_metrics
    from pfdx.reports.plots import Curve, reliability_png

    pooled: dict[str, dict[str, list]] = {}
    for run_row in summary["runs"]:
        p = load_predictions(out, run_row).clicked()
        parts = pooled.setdefault(run_row["strategy"], {"student": [], "labels": [], "truth": []})
        parts["student"].append(p.student)
        parts["labels"].append(p.labels)
        parts["truth"].append(p.truth)
    with_truth = all(t is not None and not np.isnan(t).any()
                     for parts in pooled.values() for t in parts["truth"])
    targets = [("labels", "mean label (observed conversion rate)")]
    if with_truth:
        targets.append(("truth", "mean true CVR (simulator)"))

    def curve(name: str, parts: dict[str, list], field: str) -> Curve:
        student, target = np.concatenate(parts["student"]), np.concatenate(parts[field])
        b = model_metrics.bin_index(student, num_bins)
        n = np.bincount(b, minlength=num_bins)
        drawn = n >= MIN_BIN_ROWS
        return Curve(name, np.bincount(b, student, num_bins)[drawn] / n[drawn],
                     np.bincount(b, target, num_bins)[drawn] / n[drawn])

    return reliability_png(
        [(ylabel, [curve(name, parts, field) for name, parts in pooled.items()])
         for field, ylabel in targets],
        f"Student reliability on the test window ({num_bins} equal-width bins, seeds "
        f"pooled; bins under {MIN_BIN_ROWS} rows not drawn)")
