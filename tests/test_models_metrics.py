"""AUC and calibration: numpy functions against brute force, Keras metrics against numpy."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.models import metrics


def brute_calibration(y, p, bins):
    ece, mce = 0.0, 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        if inside.any():
            gap = abs(p[inside].mean() - y[inside].mean())
            ece += inside.sum() / len(p) * gap
            mce = max(mce, gap)
    return ece, mce


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(5)
    p = rng.beta(0.6, 4.0, 5000)
    p[:3] = [0.0, 1.0, 0.5]  # bin edges
    y = (rng.random(5000) < np.clip(p * 1.3, 0, 1)).astype(float)
    return y, p


def test_calibration_errors_match_brute_force(scored):
    y, p = scored
    for bins in (10, 7):
        ece, mce = metrics.calibration_errors(y, p, bins)
        want_ece, want_mce = brute_calibration(y, p, bins)
        assert ece == pytest.approx(want_ece, rel=1e-9)
        assert mce == pytest.approx(want_mce, rel=1e-9)


def test_calibration_of_a_perfect_and_a_constant_predictor():
    y = np.array([0, 0, 1, 1, 0, 1], float)
    assert metrics.calibration_errors(y, y) == (0.0, 0.0)
    ece, mce = metrics.calibration_errors(y, np.full(6, 0.9))
    assert ece == pytest.approx(0.4) and mce == pytest.approx(0.4)


def test_auc_matches_sklearn_with_ties(scored):
    y, p = scored
    assert metrics.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    rounded = np.round(p, 1)  # many ties
    assert metrics.auc(y, rounded) == pytest.approx(roc_auc_score(y, rounded), abs=1e-12)
    assert np.isnan(metrics.auc(np.ones(3), [0.1, 0.2, 0.3]))



def _expected_auc_by_pairs(truth, scores):
    """Every ordered pair of distinct rows, weighted t_i (1 - t_j)."""
    t, s = np.asarray(truth, np.float64), np.asarray(scores, np.float64)
    w = np.outer(t, 1.0 - t)
    np.fill_diagonal(w, 0.0)
    win = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
    return (w * win).sum() / w.sum()


def test_expected_auc_matches_pairwise_reference_with_ties():
    rng = np.random.default_rng(3)
    truth = rng.uniform(0.0, 1.0, 300)
    scores = np.round(truth + rng.normal(0.0, 0.3, 300), 1)  # many ties
    assert metrics.expected_auc(truth, scores) == pytest.approx(
        _expected_auc_by_pairs(truth, scores), rel=1e-12)


def test_expected_auc_of_labels_is_auc_and_truth_ranks_best(scored):
    labels, probs = scored
    assert metrics.expected_auc(labels, probs) == pytest.approx(roc_auc_score(labels, probs))
    rng = np.random.default_rng(4)
    truth = rng.uniform(0.0, 0.3, 2000)
    noisy = truth + rng.normal(0.0, 0.05, 2000)
    assert metrics.expected_auc(truth, truth) > metrics.expected_auc(truth, noisy) > 0.5
    assert metrics.expected_auc(truth, -truth) < 0.5

def test_summary_reports_averages_and_gap():
    s = metrics.summary([0, 1, 1, 0], [0.1, 0.4, 0.8, 0.3])
    assert s["pred_avg"] == pytest.approx(0.4) and s["label_avg"] == pytest.approx(0.5)
    assert s["pred_avg_gap"] == pytest.approx(-0.1)
    assert s["auc"] == 1.0


def test_streaming_keras_metrics_equal_numpy_over_batches(scored):
    y, p = scored
    logits = np.log(np.clip(p, 1e-7, 1 - 1e-7)) - np.log1p(-np.clip(p, 1e-7, 1 - 1e-7))
    ece = metrics.ExpectedCalibrationError(num_bins=10)
    mce = metrics.MaxCalibrationError(num_bins=10, from_logits=True)
    auc = metrics.auc_metric()
    mean = metrics.PredictionMean(from_logits=True)
    for chunk in np.array_split(np.arange(len(y)), 7):
        ece.update_state(y[chunk], p[chunk])
        mce.update_state(y[chunk], logits[chunk])
        auc.update_state(y[chunk], p[chunk])
        mean.update_state(logits[chunk])
    want_ece, want_mce = metrics.calibration_errors(y, p)
    assert float(ece.result()) == pytest.approx(want_ece, abs=1e-5)
    assert float(mce.result()) == pytest.approx(want_mce, abs=1e-4)
    assert float(auc.result()) == pytest.approx(metrics.auc(y, p), abs=2e-3)
    assert float(mean.result()) == pytest.approx(p.mean(), abs=1e-5)
    ece.reset_state()
    assert float(ece.result()) == 0.0 and ece.count.numpy().sum() == 0


def test_calibration_metrics_build_from_a_tfma_style_config():
    """The Evaluator names these classes with {"num_bins": n} (pipeline/evaluation.py)."""
    for cls in (metrics.ExpectedCalibrationError, metrics.MaxCalibrationError):
        m = cls(**{"num_bins": 4})
        clone = cls.from_config(m.get_config())
        assert (clone.num_bins, clone.from_logits, clone.name) == (4, False, m.name)
        clone.update_state([1.0], [0.3])
        assert float(clone.result()) == pytest.approx(0.7)


def test_keras_calibration_metric_honours_sample_weight():
    m = metrics.ExpectedCalibrationError(num_bins=2)
    m.update_state([1.0, 0.0], [0.9, 0.2], sample_weight=[3.0, 1.0])
    # bins: 0.9 (w 3, label 1) -> gap 3*0.1; 0.2 (w 1, label 0) -> gap 0.2; / total weight 4
    assert float(m.result()) == pytest.approx((0.3 + 0.2) / 4, abs=1e-6)
    assert tf.is_tensor(m.result())
