"""HA-PFD Eq. 8 and Eq. 9 reference functions against independent computations."""
import time

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from pfdx.features.selection import correlation_threshold, mutual_information


def _pearson_two_pass(z, y):
    """Textbook r with the part's own means; 0 for < 2 rows or a constant column."""
    if len(z) < 2 or np.all(z == z[0]) or np.all(y == y[0]):
        return 0.0
    dz, dy = z - z.mean(), y - y.mean()
    return float((dz * dy).sum() / np.sqrt((dz * dz).sum() * (dy * dy).sum()))


def brute_force_threshold(values, labels, min_part_fraction=0.0):
    """O(n²) HA-PFD Eq. 8: every split between distinct values, r recomputed from scratch."""
    order = np.argsort(values, kind="stable")
    z, y = np.asarray(values, float)[order], np.asarray(labels, float)[order]
    n, best = len(z), (None, 0.0)
    for k in range(1, n):
        if z[k] == z[k - 1] or min(k, n - k) < min_part_fraction * n:
            continue
        gap = abs(_pearson_two_pass(z[:k], y[:k]) - _pearson_two_pass(z[k:], y[k:]))
        if best[0] is None or gap > best[1] + 1e-12:  # strictly better: lowest wins ties
            best = (float(z[k]), gap)
    return best


def _random_case(rng):
    n = int(rng.integers(0, 60))
    kind = rng.integers(0, 4)
    if kind == 0:  # many ties
        z = rng.integers(0, rng.integers(1, 6), n).astype(float)
    elif kind == 1:  # mostly distinct, negative and positive
        z = np.round(rng.normal(0, 10, n), 1)
    elif kind == 2:  # constant column
        z = np.full(n, 3.5)
    else:  # large offset: the running sums must stay well conditioned
        z = 1e6 + rng.integers(0, 8, n) * 0.25
    p = rng.choice([0.0, 1.0, rng.random()])  # all-zero, all-one or mixed labels
    y = (rng.random(n) < p).astype(int)
    return z, y


@pytest.mark.parametrize("min_part_fraction", [0.0, 0.01, 0.2])
def test_threshold_matches_brute_force(min_part_fraction):
    rng = np.random.default_rng(7)
    for _ in range(400):
        z, y = _random_case(rng)
        got = correlation_threshold(z, y, min_part_fraction=min_part_fraction)
        want = brute_force_threshold(z, y, min_part_fraction)
        assert got[0] == want[0], (z, y)
        assert got[1] == pytest.approx(want[1], abs=1e-9), (z, y)


@pytest.mark.parametrize("z, y, want", [
    ([], [], (None, 0.0)),
    ([5.0], [1], (None, 0.0)),
    ([1.0, 2.0], [0, 1], (2.0, 0.0)),           # two 1-row parts: both r = 0; lowest wins
    ([1.0, 2.0, 3.0], [0, 1, 1], (3.0, 1.0)),   # {1,2} r = 1 against {3} r = 0
    ([2.0, 2.0, 2.0], [0, 1, 0], (None, 0.0)),  # no split between distinct values
    ([1.0, 2.0, 3.0], [1, 1, 1], (2.0, 0.0)),   # all-one labels: every r = 0
])
def test_tiny_cases(z, y, want):
    assert correlation_threshold(np.array(z), np.array(y, int)) == want
    assert brute_force_threshold(np.array(z), np.array(y, int)) == want


def test_threshold_is_n_log_n():
    rng = np.random.default_rng(1)
    z = rng.normal(size=400_000)
    y = (rng.random(400_000) < 1 / (1 + np.exp(-z))).astype(int)
    start = time.perf_counter()
    threshold, gap = correlation_threshold(z, y, min_part_fraction=0.01)
    assert time.perf_counter() - start < 10  # O(n²) would take hours
    assert threshold is not None and 0 < gap <= 2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="labels must be 0/1"):
        correlation_threshold(np.array([1.0, 2.0]), np.array([0, 2]))
    with pytest.raises(ValueError, match="finite"):
        correlation_threshold(np.array([1.0, np.nan]), np.array([0, 1]))


def test_mutual_information_matches_sklearn():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 300))
        z = rng.integers(0, rng.integers(1, 5), n).astype(float)
        y = (rng.random(n) < rng.random()).astype(int)
        assert mutual_information(z, y) == pytest.approx(mutual_info_score(z, y), abs=1e-12)


def test_mutual_information_limits():
    y = np.array([0, 1, 1, 0, 1, 0, 0, 0])
    p = y.mean()
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))  # nats
    assert mutual_information(y.astype(float), y) == pytest.approx(entropy)
    assert mutual_information(np.ones(8), y) == 0.0
    assert mutual_information(np.array([]), np.array([], int)) == 0.0
