"""Predictions on a split and the metrics they score: the student's (and teacher's)
probabilities over evaluation examples, and HA-PFD §4.1's metrics of them (with
`models/metrics.py`), on clicked rows and, in impression space, over every impression.
"""
from __future__ import annotations

import dataclasses
import io

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import numpy as np
import tensorflow as tf

from pfdx.models import metrics as model_metrics
from pfdx.models.heads import CTR
from pfdx.models.model import JointModel
from pfdx.models.strategy_base import CLICK, LABEL


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


def predict(model: JointModel, dataset: tf.data.Dataset) -> Predictions:
    """Probabilities over a `keep_truth` dataset: the student's are the exported
    student's (EKTF's best head, say, not the ensemble it trained in), the teacher's
    and the CTR those of the joint model."""
    columns: dict[str, list[np.ndarray]] = {k: [] for k in (
        "labels", "clicks", "student", "teacher", CTR, "truth")}
    outputs = model.evaluation_function(dataset.element_spec[0])
    for features, y, t in dataset:
        out = outputs(features)
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
    """HA-PFD §4.1 metrics of the student (and teacher); with a true probability, the
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
