"""Is one model's AUC clearly ahead of another's on the same rows? DeLong's paired
test (DeLong, DeLong & Clarke-Pearson 1988), in the midrank form of Sun & Xu (2014).

Each positive's structural component is the share of negatives it outscores (ties
half), each negative's the share of positives that outscore it; an AUC is their
mean, and the variance of the difference of two AUCs on the same rows follows from
the components' 2x2 covariances over positives and over negatives. Per-run tuning
(models/tuning.py) keeps the no-distillation point unless distillation beats it by
more than `tuning.min_gain_se` of these standard errors; a refit side two standard
errors below its fitted model is discarded (models/best_epochs.py).
"""
from __future__ import annotations

import numpy as np
from scipy import stats


def _components(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(components over positives [m], over negatives [n]) of one score vector."""
    pos, neg = labels == 1, labels == 0
    m, n = int(pos.sum()), int(neg.sum())
    ranks = stats.rankdata(scores)
    v10 = (ranks[pos] - stats.rankdata(scores[pos])) / n
    v01 = 1.0 - (ranks[neg] - stats.rankdata(scores[neg])) / m
    return v10, v01


def lead(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(AUC(a) - AUC(b), its standard error) on the rows `labels` (0/1) of both; NaNs
    when a class has fewer than two rows."""
    labels = np.asarray(labels).reshape(-1)
    m, n = int((labels == 1).sum()), int((labels == 0).sum())
    if m < 2 or n < 2:
        return float("nan"), float("nan")
    (a10, a01), (b10, b01) = (_components(labels, np.asarray(s, np.float64).reshape(-1))
                              for s in (a, b))
    variance = 0.0
    for (x, y), size in (((a10, b10), m), ((a01, b01), n)):
        cov = np.cov(np.stack([x, y]))
        variance += (cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]) / size
    return float(a10.mean() - b10.mean()), float(np.sqrt(max(variance, 0.0)))
