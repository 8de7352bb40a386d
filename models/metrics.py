"""Ranking and calibration metrics of HA-PFD §4.1: AUC, ECE, MCE, prediction vs label average.

Two forms of the same definitions:
- numpy functions (`auc`, `expected_auc`, `calibration_errors`, `summary`) for evaluation code;
- streaming Keras metrics (`auc_metric`, `ExpectedCalibrationError`,
  `MaxCalibrationError`, `PredictionMean`) for training. Their state is sums and
  counts, which Keras keeps as SUM-aggregated sync-on-read variables, so results
  are exact under MirroredStrategy.

Calibration uses `num_bins` equal-width probability bins on [0, 1] (a prediction of
exactly 1 falls in the last bin): ECE = sum_b n_b/N |mean pred_b - mean label_b|,
MCE = the largest |mean pred_b - mean label_b| over non-empty bins.
"""
from __future__ import annotations

import numpy as np
import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf
from scipy import stats

# Evenly spaced thresholds, so Keras' AUC updates in O(batch + thresholds); fine
# enough for CVRs that crowd the low end of [0, 1].
AUC_THRESHOLDS = 1000


# numpy -----------------------------------------------------------------------

def _flat(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels for {p.size} predictions")
    return y, p


def auc(labels, probs) -> float:
    """Exact ROC AUC (Mann-Whitney; tied scores count one half); NaN for a single class."""
    y, p = _flat(labels, probs)
    positive = y > 0.5
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(p)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))



def expected_auc(truth, probs) -> float:
    """AUC against outcomes drawn from `truth`, in expectation: each row is a positive
    with weight t and a negative with weight 1 - t, over all pairs of distinct rows
    (tied scores count one half). With 0/1 `truth` it is `auc`; with a simulator's
    true conversion probability it scores ranking on rows whose outcome was never
    observed (unclicked impressions), free of the draw's noise."""
    t, p = _flat(truth, probs)
    pos, neg = t, 1.0 - t
    self_pairs = float((pos * neg).sum())  # a row is never paired with itself
    total = pos.sum() * neg.sum() - self_pairs
    if t.size < 2 or total <= 0:
        return float("nan")
    scores, group = np.unique(p, return_inverse=True)
    pos_g = np.bincount(group, pos, scores.size)
    neg_g = np.bincount(group, neg, scores.size)
    below = np.cumsum(neg_g) - neg_g  # negative weight of strictly lower scores
    wins = float((pos_g * below).sum()) + 0.5 * (float((pos_g * neg_g).sum()) - self_pairs)
    return wins / total

def bin_index(probs: np.ndarray, num_bins: int) -> np.ndarray:
    return np.clip(np.floor(probs * num_bins).astype(np.int64), 0, num_bins - 1)


def calibration_errors(labels, probs, num_bins: int = 10) -> tuple[float, float]:
    """(ECE, MCE) over `num_bins` equal-width probability bins."""
    y, p = _flat(labels, probs)
    if y.size == 0:
        return float("nan"), float("nan")
    b = bin_index(p, num_bins)
    count = np.bincount(b, minlength=num_bins)
    gap = np.abs(np.bincount(b, p, num_bins) - np.bincount(b, y, num_bins))
    filled = count > 0
    return float(gap.sum() / y.size), float(np.max(gap[filled] / count[filled]))


def summary(labels, probs, num_bins: int = 10) -> dict[str, float]:
    """AUC, ECE, MCE, prediction and label averages and their gap (pred - label)."""
    y, p = _flat(labels, probs)
    ece, mce = calibration_errors(y, p, num_bins)
    return {"auc": auc(y, p), "ece": ece, "mce": mce, "pred_avg": float(p.mean()),
            "label_avg": float(y.mean()), "pred_avg_gap": float(p.mean() - y.mean())}


# Keras -----------------------------------------------------------------------

def _probs(y_pred: tf.Tensor, from_logits: bool) -> tf.Tensor:
    y_pred = tf.reshape(tf.cast(y_pred, tf.float32), [-1])
    return tf.sigmoid(y_pred) if from_logits else y_pred


def auc_metric(name: str = "auc", from_logits: bool = False) -> tf.keras.metrics.AUC:
    return tf.keras.metrics.AUC(num_thresholds=AUC_THRESHOLDS, from_logits=from_logits, name=name)


class PredictionMean(tf.keras.metrics.Mean):
    """Average predicted probability (logits are passed through a sigmoid first)."""

    def __init__(self, name: str = "pred_avg", from_logits: bool = False, **kwargs):
        super().__init__(name=name, **kwargs)
        self.from_logits = from_logits

    def update_state(self, y_pred, sample_weight=None):
        return super().update_state(_probs(y_pred, self.from_logits), sample_weight)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


class _CalibrationBins(tf.keras.metrics.Metric):
    """Streaming per-bin weight, prediction sum and label sum."""

    def __init__(self, num_bins: int = 10, from_logits: bool = False, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_bins = int(num_bins)
        self.from_logits = from_logits
        self.count = self.add_weight("count", shape=[self.num_bins], initializer="zeros")
        self.pred_sum = self.add_weight("pred_sum", shape=[self.num_bins], initializer="zeros")
        self.label_sum = self.add_weight("label_sum", shape=[self.num_bins], initializer="zeros")

    def update_state(self, y_true, y_pred, sample_weight=None):
        p = _probs(y_pred, self.from_logits)
        y = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        w = tf.ones_like(p) if sample_weight is None else tf.broadcast_to(
            tf.reshape(tf.cast(sample_weight, tf.float32), [-1]), tf.shape(p))
        b = tf.clip_by_value(tf.cast(tf.floor(p * self.num_bins), tf.int32), 0, self.num_bins - 1)
        return tf.group(
            self.count.assign_add(tf.math.unsorted_segment_sum(w, b, self.num_bins)),
            self.pred_sum.assign_add(tf.math.unsorted_segment_sum(w * p, b, self.num_bins)),
            self.label_sum.assign_add(tf.math.unsorted_segment_sum(w * y, b, self.num_bins)))

    def reset_state(self):
        # Keras' default assigns a scalar 0, which does not fit vector state.
        for v in self.variables:
            v.assign(tf.zeros_like(v))

    def _gaps(self) -> tf.Tensor:
        return tf.abs(self.pred_sum - self.label_sum)

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins, "from_logits": self.from_logits}


class ExpectedCalibrationError(_CalibrationBins):
    def __init__(self, num_bins: int = 10, from_logits: bool = False, name: str = "ece", **kwargs):
        super().__init__(num_bins, from_logits, name=name, **kwargs)

    def result(self):
        return tf.math.divide_no_nan(tf.reduce_sum(self._gaps()), tf.reduce_sum(self.count))


class MaxCalibrationError(_CalibrationBins):
    def __init__(self, num_bins: int = 10, from_logits: bool = False, name: str = "mce", **kwargs):
        super().__init__(num_bins, from_logits, name=name, **kwargs)

    def result(self):
        # Empty bins have a zero gap, and every gap is >= 0, so they never win the max.
        return tf.reduce_max(tf.math.divide_no_nan(self._gaps(), self.count))
