"""Eq. 8 (correlation threshold) and Eq. 9 (mutual information) of HA-PFD §3.3, in numpy.

HA-PFD Eq. 8 only ever needs, for each candidate split, the Pearson r of the rows below
and above it. Rows are therefore reduced to `SplitGroups`: runs of rows in
ascending value order (one group per distinct value; the Beam job may use
quantile buckets instead) with their sufficient statistics (rows, Σy, Σz, Σz²,
Σzy; y² = y). One cumulative-sum pass over the groups then gives every split's
two r's exactly: O(n log n) for the sort, O(groups) after it. The reference
functions here and the Beam job (features/selection_beam.py) share that scan,
so they agree to the bit on the same groups.
"""
from __future__ import annotations

import dataclasses

import numpy as np

# Gaps this close are equal: the same gap computed along different summation
# orders differs in the last bits, and equal gaps must go to the lowest threshold.
GAP_TIE_TOLERANCE = 1e-12


@dataclasses.dataclass(frozen=True)
class SplitGroups:
    """Rows grouped by value, groups in ascending order.

    `lo`/`hi` are each group's smallest/largest value (equal for a distinct value);
    `n`/`ny` its rows and positive labels (exact integers); `sz`, `szz`, `szy` are
    Σ(z−c), Σ(z−c)², Σ(z−c)·y for one centre c shared by all groups — r does not
    depend on c. Raw sums (c = 0) add up across tables (the Beam job's
    `ValueTable`); `centred()` moves c to the mean, which keeps the running sums
    of the scan well conditioned.
    """

    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray
    ny: np.ndarray
    sz: np.ndarray
    szz: np.ndarray
    szy: np.ndarray

    # The additive statistics: a merged group's are the sums of its parts'.
    SUMS = ("n", "ny", "sz", "szz", "szy")

    @classmethod
    def from_distinct(cls, values: np.ndarray, n: np.ndarray, ny: np.ndarray) -> "SplitGroups":
        """Groups of one distinct value each: the float sums follow from (value, n, Σy)."""
        values = np.asarray(values, dtype=np.float64)
        n = np.asarray(n, dtype=np.int64)
        ny = np.asarray(ny, dtype=np.int64)
        centre = float(np.dot(values, n) / n.sum()) if n.sum() else 0.0
        d = values - centre
        return cls(values, values, n, ny, d * n, d * d * n, d * ny)

    def centred(self) -> "SplitGroups":
        """The same groups with c moved to the mean of z (a plain SplitGroups, also
        from a subclass)."""
        n = np.asarray(self.n, dtype=np.int64)
        ny = np.asarray(self.ny, dtype=np.int64)
        centre = float(np.sum(self.sz) / n.sum()) if n.sum() else 0.0
        return SplitGroups(np.asarray(self.lo, np.float64), np.asarray(self.hi, np.float64),
                           n, ny, self.sz - centre * n,
                           self.szz - 2.0 * centre * self.sz + centre * centre * n,
                           self.szy - centre * ny)

    def flag_counts(self, split: int) -> np.ndarray:
        """The discretised feature × label table of a split: rows are flag 0 (below
        the split) and flag 1 (at or above it), columns y = 0 and y = 1."""
        below_n, below_y = int(self.n[:split].sum()), int(self.ny[:split].sum())
        above_n, above_y = int(self.n[split:].sum()), int(self.ny[split:].sum())
        return np.array([[below_n - below_y, below_y], [above_n - above_y, above_y]], np.int64)


def _pearson(n, ny, sz, szz, szy, z_varies):
    """Pearson r of each part from its sums; 0 where z or y is constant (or < 2 rows)."""
    nf = np.maximum(n, 1).astype(np.float64)
    sxx = szz - sz * sz / nf
    syy = ny - ny * ny / nf
    sxy = szy - sz * ny / nf
    # Constancy is decided exactly (values and integer counts), never from the
    # rounded variances; a rounded variance <= 0 of a varying part is also r = 0.
    ok = z_varies & (ny > 0) & (ny < n) & (sxx > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(ok, sxy / np.sqrt(np.where(ok, sxx * syy, 1.0)), 0.0)
    return np.clip(r, -1.0, 1.0)


def best_split(groups: SplitGroups, min_part_fraction: float = 0.0) -> tuple[int | None, float]:
    """HA-PFD Eq. 8 over groups: (index of the first group of the upper part, gap).

    Splits lie between groups; a split is admissible when both parts hold at least
    `min_part_fraction` of the rows. Ties go to the lowest split. (None, 0.0)
    when no split is admissible (fewer than two groups, or all too unbalanced).
    """
    total = int(groups.n.sum())
    if len(groups.n) < 2:
        return None, 0.0

    def below(a):  # sums over groups [0, k) for k = 1 .. G-1
        return np.cumsum(a)[:-1]

    def above(a):  # sums over groups [k, G): summed from the top, not total - below,
        return np.cumsum(a[::-1])[::-1][1:]  # so the upper part keeps its own precision

    stats = (groups.n, groups.ny, groups.sz, groups.szz, groups.szy)
    n_lo = below(groups.n)
    r_lo = _pearson(*map(below, stats), groups.lo[0] != groups.hi[:-1])
    r_up = _pearson(*map(above, stats), groups.lo[1:] != groups.hi[-1])
    gap = np.abs(r_lo - r_up)
    admissible = (n_lo >= min_part_fraction * total) & (total - n_lo >= min_part_fraction * total)
    if not admissible.any():
        return None, 0.0
    best = gap[admissible].max()
    k = int(np.flatnonzero(admissible & (gap >= best - GAP_TIE_TOLERANCE))[0])
    return k + 1, float(gap[k])


def check_labels(labels: np.ndarray, size: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != size:
        raise ValueError(f"labels: expected a 1-D array of {size} values, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0/1, got {np.unique(y)[:10].tolist()}")
    return y.astype(np.int64)


def _check_values(values: np.ndarray, name: str) -> np.ndarray:
    z = np.asarray(values, dtype=np.float64)
    if z.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError(f"{name}: values must be finite (drop missing rows first)")
    return z + 0.0  # -0.0 -> 0.0: one value, one spelling in the threshold


def distinct_groups(values: np.ndarray, labels: np.ndarray) -> SplitGroups:
    """One group per distinct value of `values` (finite), with `labels` (0/1)."""
    z = _check_values(values, "values")
    y = check_labels(labels, len(z))
    distinct, inverse = np.unique(z, return_inverse=True)
    n = np.bincount(inverse, minlength=len(distinct))
    ny = np.bincount(inverse[y == 1], minlength=len(distinct))
    return SplitGroups.from_distinct(distinct, n, ny)


def correlation_threshold(values: np.ndarray, labels: np.ndarray, *,
                          min_part_fraction: float = 0.0) -> tuple[float | None, float]:
    """HA-PFD Eq. 8: (threshold, gap). z >= threshold is the upper part.

    Rows are ranked by value and split only between distinct values; each part's
    Pearson r uses that part's own means; a part with < 2 rows or a constant z or y
    has r = 0; the split maximising |r_lower − r_upper| wins, the lowest on ties.
    The threshold is the smallest value of the upper part; (None, 0.0) when there
    is no split (fewer than two distinct values). `min_part_fraction` (0: the
    exact, unguarded HA-PFD Eq. 8) is the selection policy's guard on each part's size.
    """
    groups = distinct_groups(values, labels)
    split, gap = best_split(groups, min_part_fraction)
    return (None if split is None else float(groups.lo[split])), gap


def mutual_information_table(counts: np.ndarray) -> float:
    """HA-PFD Eq. 9 in nats from a value × label table of row counts."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total == 0:
        return 0.0
    expected = c.sum(axis=1, keepdims=True) * c.sum(axis=0, keepdims=True)
    seen = c > 0
    mi = np.sum(c[seen] / total * np.log(c[seen] * total / expected[seen]))
    return max(float(mi), 0.0)  # rounding can leave -1e-17 for independent columns


def mutual_information(feature: np.ndarray, labels: np.ndarray) -> float:
    """HA-PFD Eq. 9: I(z; y) in nats for a discrete feature and 0/1 labels."""
    z = _check_values(feature, "feature")
    y = check_labels(labels, len(z))
    _, inverse = np.unique(z, return_inverse=True)
    counts = np.bincount(inverse * 2 + y, minlength=2 * (inverse.max(initial=-1) + 1))
    return mutual_information_table(counts.reshape(-1, 2))
