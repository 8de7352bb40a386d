"""EvaluationReport: a human-readable report of one run (Markdown + reliability diagram).

Reads what the run recorded — TFMA metrics per slice and the calibration plot of the
student, the Trainer's teacher/student metrics (and UKD's teacher Trainer's),
ExampleGen's row counts and the blessing — and writes `report.md`, `metrics.json` and `reliability.png`.

History: each report's artifact carries, as the MLMD custom property `history`, the
span, AUC, ECE, blessing and warm start of the last HISTORY_RUNS runs; the next run
gets the previous report from MLMD (a resolver, pipeline/dag.py), appends its own
row and plots them (`history.png`).

No `from __future__ import annotations` here: TFX 1.16 reads a @component's
annotations as objects and rejects the string "None" as a return type.
"""

import datetime
import json
import os

from tfx import v1 as tfx
from tfx.types import artifact

from pfdx.models import registry
from pfdx.reports import plots
from pfdx.reports.tables import markdown_table, number

_ROW_KEYS = ("read", "used", "unclicked", "quarantined", "empty_files")
# Runs the history shows: two weeks of daily runs.
HISTORY_RUNS = 14
HISTORY_PROPERTY = "history"
# metrics.json's key for `teacher_run`: the teacher stage's name and "_eval". The report
# is not told the strategy; the registry's one teacher stage (UKD's) is the one the DAG
# wires in, and a second would fail this unpacking rather than mislabel a teacher.
(_TEACHER_STAGE,) = {s.teacher_stage for s in registry.STRATEGIES.values()} - {None}
TEACHER_EVAL_KEY = f"{_TEACHER_STAGE}_eval"


class EvaluationReportArtifact(artifact.Artifact):
    TYPE_NAME = "pfdx.EvaluationReport"


def _slice_name(slice_key) -> str:
    return "overall" if not slice_key else ", ".join(f"{k}={v}" for k, v in slice_key)


def _metric_table(eval_result) -> list[dict]:
    rows = []
    for slice_key, per_output in eval_result.slicing_metrics:
        values = per_output.get("", {}).get("", {})
        row = {"slice": _slice_name(slice_key)}
        for name, v in values.items():
            num = v.get("doubleValue")
            if num is not None:
                row[name] = num
        rows.append(row)
    rows.sort(key=lambda r: (r["slice"] != "overall", r["slice"]))
    return rows


def _calibration_buckets(eval_result) -> list[tuple[float, float, float]]:
    """(mean prediction, mean label, weight) per non-empty bucket, overall slice."""
    for slice_key, plots in eval_result.plots:
        if slice_key:
            continue
        plot = plots.get("", {}).get("", {}).get("calibrationHistogramBuckets", {})
        out = []
        for b in plot.get("buckets", []):
            # TFMA's JSON form of the plot proto: plain numbers, zeros omitted.
            w = float(b.get("numWeightedExamples", 0.0))
            if w > 0:
                out.append((float(b.get("totalWeightedRefinedPrediction", 0.0)) / w,
                            float(b.get("totalWeightedLabel", 0.0)) / w, w))
        return out
    return []


def _blessing_failures(evaluation_uri: str) -> list[str]:
    """Why the Evaluator did not bless: one line per failed threshold."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation_uri)
    lines = []
    for per_slice in result.metric_validations_per_slice:
        keys = per_slice.slice_key.single_slice_keys
        where = ", ".join(f"{k.column}={k.bytes_value.decode() or k.int64_value}"
                          for k in keys) or "overall"
        for f in per_slice.failures:
            t = f.metric_threshold
            if f.metric_key.is_diff:
                rule = f"change vs the last blessed model, at least {t.change_threshold.absolute.value:+.4g}"
            else:
                bounds = t.value_threshold
                rule = " and ".join(
                    ([f">= {bounds.lower_bound.value:g}"] if bounds.HasField("lower_bound") else [])
                    + ([f"<= {bounds.upper_bound.value:g}"] if bounds.HasField("upper_bound") else []))
            lines.append(f"{f.metric_key.name} = {f.metric_value.double_value.value:.5f} "
                         f"({where}) fails: {rule}")
    return lines


def _span_label(span: int, pattern: str) -> str:
    """A date span (days since 1970-01-01, `{YYYY}-{MM}-{DD}` patterns) as its date."""
    if span and "{YYYY}" in pattern:
        return (datetime.date(1970, 1, 1) + datetime.timedelta(days=span)).isoformat()
    return str(span)


def history(previous_rows: list, examples, table: list, blessed: bool, training: dict) -> list:
    """The previous report's rows plus this run's (eval split, overall): at most
    HISTORY_RUNS, oldest first."""
    overall = next((r for r in table if r["slice"] == "overall"), {})
    # ExampleGen records the span as a custom property (MLMD), as TFX's own does.
    span = examples.get_int_custom_property("span")
    row = {"span": _span_label(span, examples.get_string_custom_property("span_pattern")),
           "auc": overall.get("auc"), "ece": overall.get("expected_calibration_error"),
           "blessed": blessed,
           "warm_start": bool(training.get("warm_start", {}).get("warm"))}
    return (list(previous_rows) + [row])[-HISTORY_RUNS:]


def _history_section(rows: list, warm: dict | None) -> list:
    lines = ["## Continuous training", ""]
    if warm is not None:
        steps = ", ".join(f"{name} {s['before']} -> {s['after']}"
                          for name, s in sorted(warm["steps"].items()))
        lines += [f"Warm start: {warm['reason']}.",
                  f"Optimizer steps (restored -> after this run): {steps}.", ""]
    lines.append(markdown_table(
        ["span", "AUC", "ECE", "blessed", "warm start"],
        [[r["span"], _cell(r, "auc"), _cell(r, "ece"), "yes" if r["blessed"] else "no",
          "yes" if r["warm_start"] else "no"] for r in rows]))
    return lines + ["", "![history](history.png)", ""]


_SIDE_COLUMNS = (("AUC", "student_auc"), ("ECE", "student_ece"),
                 ("ECE before calibration", "uncalibrated_student_ece"), ("MCE", "student_mce"),
                 ("pred avg", "student_pred_avg"), ("label avg", "label_avg"),
                 ("epochs", "refit_epochs"))


def _cell(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return number(value) if value is None or isinstance(value, float) else str(value)


def _shipping_section(training: dict) -> list[str]:
    """Teacher, distilled student and student alone side by side (eval split, the
    Trainer's numbers), which one shipped and why, and the values tuning chose."""
    if "shipped" not in training:  # TAML / UKD: one student, no gate
        return []
    sides = [("student alone (`none`)", training["student_alone"])]
    if "distilled" in training:
        sides.insert(0, ("distilled student", training["distilled"]))
    rows = [["teacher", number(training["teacher_auc"])] + ["-"] * len(_SIDE_COLUMNS)
            ] if "teacher_auc" in training else []
    rows += [[name, *(_cell(side["metrics"], k) for _, k in _SIDE_COLUMNS),
              json.dumps(side["chosen"], sort_keys=True) if side["chosen"] else "configured values"]
             for name, side in sides]
    lines = ["## Which student ships", "",
             f"Shipped: **{training['shipped'].replace('_', ' ')}**: {training['ship_reason']}.",
             "", markdown_table(["model", *(c for c, _ in _SIDE_COLUMNS), "tuned values"], rows),
             "", "Each student's values were tuned on the validation split (every trial: "
              "`metrics.json`, trainer_eval); ECE is after the post-hoc calibration "
              "(evaluation.calibration).", ""]
    return lines


@tfx.dsl.components.component
def EvaluationReport(
    evaluation: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    model_run: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelRun],
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    blessing: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    report: tfx.dsl.components.OutputArtifact[EvaluationReportArtifact],
    # UKD's teacher Trainer: how good the pseudo-labels the student learnt from were.
    # (TFX 1.16: an optional input is `InputArtifact[T] = None`, not Optional[...].)
    teacher_run: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelRun] = None,
    # The previous run's report (None on a first run): its `history` property.
    previous: tfx.dsl.components.InputArtifact[EvaluationReportArtifact] = None,
) -> None:
    import tensorflow_model_analysis as tfma

    from pfdx.components.click_log_outputs import read_row_counts
    from pfdx.components.trainer import TRAINING_METRICS_FILE

    def training_metrics(run) -> dict:
        with open(os.path.join(run.uri, TRAINING_METRICS_FILE), encoding="utf-8") as f:
            return json.load(f)

    result = tfma.load_eval_result(evaluation.uri)
    table = _metric_table(result)
    training = training_metrics(model_run)
    teacher = training_metrics(teacher_run) if teacher_run is not None else None
    counts = read_row_counts(examples.uri)
    blessed = os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    failures = [] if blessed else _blessing_failures(evaluation.uri)
    buckets = _calibration_buckets(result)

    before = json.loads(previous.get_string_custom_property(HISTORY_PROPERTY) or "[]"
                        ) if previous is not None else []
    rows = history(before, examples, table, blessed, training)
    report.set_string_custom_property(HISTORY_PROPERTY, json.dumps(rows))

    os.makedirs(report.uri, exist_ok=True)
    student = plots.Curve("student", [b[0] for b in buckets], [b[1] for b in buckets])
    for name, png in (
            ("reliability.png", plots.reliability_png(
                [("observed conversion rate", [student])], "Reliability diagram (eval split)",
                xlabel="mean predicted CVR (bucket)")),
            ("history.png", plots.history_png(
                [r["span"] + (" (w)" if r["warm_start"] else "") for r in rows],
                {"AUC": [r["auc"] for r in rows], "ECE": [r["ece"] for r in rows]},
                "Student on each run's eval split (w: warm start)"))):
        with open(os.path.join(report.uri, name), "wb") as f:
            f.write(png)
    summary = {"blessed": blessed, "blessing_failures": failures, "rows": counts,
               "trainer_eval": training, "tfma": table}
    if teacher is not None:
        summary[TEACHER_EVAL_KEY] = teacher
    with open(os.path.join(report.uri, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    # What shipped and the tuned values, queryable in MLMD beside the lineage.
    if "shipped" in training:
        report.set_string_custom_property("shipped", training["shipped"])
        report.set_string_custom_property("ship_reason", training["ship_reason"])
        for side in ("distilled", "student_alone"):
            if side in training:
                report.set_string_custom_property(f"{side}_tuned_values", json.dumps(
                    training[side]["chosen"], sort_keys=True))

    cols = ["slice", "example_count", "auc", "expected_calibration_error",
            "max_calibration_error", "mean_label", "mean_prediction"]
    lines = ["# pfdx run report", "",
             f"Blessed for push: **{'yes' if blessed else 'no'}**", "",
             *(f"- {line}" for line in failures), *([""] if failures else []),
             "## Rows", "",
             markdown_table(_ROW_KEYS, [[str(counts.get(k, 0)) for k in _ROW_KEYS]]), "",
             "## Student on the eval split (TFMA, exported SavedModel)", "",
             markdown_table(cols, [[row["slice"], *(number(row.get(c), 5) for c in cols[1:])]
                                   for row in table])]
    lines += ["", *_shipping_section(training),
              *_history_section(rows, training.get("warm_start"))]
    for title, values in (("Shipped student and teacher (Trainer, eval split)", training),
                          ("UKD's click-adaptive teacher (its Trainer, eval split)", teacher)):
        if values is None:
            continue
        lines += ["", f"## {title}", "", markdown_table(
            ["metric", "value"], [[k, number(v, 5) if isinstance(v, float) else str(v)]
                                  for k, v in sorted(values.items()) if not isinstance(v, dict)])]
    lines += ["", "![reliability diagram](reliability.png)", ""]
    with open(os.path.join(report.uri, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
