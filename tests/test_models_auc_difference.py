"""An AUC lead and DeLong's standard error of it (models/auc_difference.py)
against the definition computed pair by pair."""
import numpy as np

from pfdx.models import auc_difference


def _reference_se(labels, a, b):
    """Structural components by brute force over every (positive, negative) pair."""
    pos, neg = labels == 1, labels == 0

    def components(s):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        return psi.mean(axis=1), psi.mean(axis=0)

    (a10, a01), (b10, b01) = components(a), components(b)
    m, n = pos.sum(), neg.sum()
    var = sum((np.var(x, ddof=1) + np.var(y, ddof=1) - 2 * np.cov(x, y)[0, 1]) / size
              for x, y, size in ((a10, b10, m), (a01, b01, n)))
    return np.sqrt(var)


def test_difference_se_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.3).astype(int)
    a = np.round(labels + rng.normal(0, 1.0, 300), 1)  # rounded: many ties
    b = np.round(0.5 * a + rng.normal(0, 0.8, 300), 1)
    from sklearn.metrics import roc_auc_score

    gain, se = auc_difference.lead(labels, a, b)
    np.testing.assert_allclose(se, _reference_se(labels, a, b), rtol=1e-10)
    np.testing.assert_allclose(gain, roc_auc_score(labels, a) - roc_auc_score(labels, b))


def test_identical_scores_differ_by_nothing_and_one_class_has_no_error():
    rng = np.random.default_rng(1)
    labels = (rng.random(200) < 0.5).astype(int)
    a = rng.random(200)
    assert auc_difference.lead(labels, a, a) == (0.0, 0.0)
    assert all(np.isnan(auc_difference.lead(np.ones(5), a[:5], a[:5])))


def test_the_error_shrinks_with_the_number_of_rows():
    rng = np.random.default_rng(2)

    def se(rows):
        labels = (rng.random(rows) < 0.3).astype(int)
        return auc_difference.lead(labels, labels + rng.normal(0, 1, rows),
                                   labels + rng.normal(0, 1, rows))[1]
    assert se(20_000) < se(2_000) / 2
