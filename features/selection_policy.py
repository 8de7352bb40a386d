"""The privileged-feature selection policy of HA-PFD §3.3, over per-feature statistics.

Every candidate is first reduced to a binary flag: a continuous signal by its
HA-PFD Eq. 8 threshold (z >= threshold -> 1, each part holding >= `min_part_fraction` of
the rows), a discrete one is its own 0/1 flag. What the policy then needs of a
candidate is its flag × label table of row counts (`CandidateStats`), and of an
OR-group the joint table of its members' states × label (`GroupStats`); the
numpy reference (`reference_stats`) and the Beam job produce the same ones.

`select` applies the policy in the paper's order:
1. rank the candidates alone by HA-PFD Eq. 9 mutual information (nats; name breaks ties);
2. drop the `drop_top_k` most informative (`too_informative`: the teacher would
   copy them), keep the next `keep_top_n`, drop the rest (`below_top_n`);
3. the kept members of an OR-group become one feature, the OR of the kept members
   (paper: tag|like|share -> interact, 12 kept -> 10 final); its MI and support
   are computed on that combined flag. Members that were dropped stay out of it:
   OR-ing in a too-informative member would leak it into the group;
4. a final feature whose rarer value has fewer than `min_support` rows is dropped
   (`low_support`); a group is judged on its combined flag, which is why sparse
   flags are grouped.
Candidates without values (`no_values`) or, if continuous, without an admissible
split (`no_split`) are not ranked. A missing value (absent feature on a clicked
row) is skipped for that feature and counted in `missing`; a row counts for an
OR-group only where all of its kept members are present — the same rule
features/transform.py applies.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from pfdx.config import ColumnRoles, ConfigError, SelectionConfig
from pfdx.features import selection as eq

FORMAT_VERSION = 1
CONTINUOUS, DISCRETE, OR_GROUP = "continuous", "discrete", "or_group"
EXACT, BUCKETED = "exact", "bucketed"
# Member states in an OR-group's joint table (base-3 digits of a row's pattern).
OFF, ON, MISSING = 0, 1, 2
MAX_GROUP_MEMBERS = 12  # 3**12 patterns


@dataclasses.dataclass(frozen=True)
class CandidateStats:
    """A candidate's discretised flag: `counts` [flag 0/1][y 0/1] (None: no split)."""

    name: str
    kind: str
    counts: np.ndarray | None
    present: int
    missing: int
    threshold: float | None = None
    gap: float | None = None
    mode: str = EXACT
    distinct_values: int | None = None
    buckets: int | None = None


@dataclasses.dataclass(frozen=True)
class GroupStats:
    """An OR-group's rows by member states: `counts` [pattern][y], pattern = Σ state_j·3^j."""

    name: str
    members: tuple[str, ...]
    counts: np.ndarray


@dataclasses.dataclass(frozen=True)
class SelectionStats:
    rows: int  # clicked rows read
    conversions: int
    unclicked: int  # rows skipped because the click column said 0
    candidates: tuple[CandidateStats, ...]
    groups: tuple[GroupStats, ...]


def check_config(selection: SelectionConfig, roles: ColumnRoles) -> None:
    """Raises ConfigError naming the key of a policy that cannot run."""
    if not roles.privileged:
        raise ConfigError("data.columns: no privileged_continuous or privileged_discrete "
                          "candidates to select from")
    for key, value, low in (("drop_top_k", selection.drop_top_k, 0),
                            ("keep_top_n", selection.keep_top_n, 1),
                            ("min_support", selection.min_support, 0),
                            ("max_distinct_values", selection.max_distinct_values, 2),
                            ("quantile_buckets", selection.quantile_buckets, 2)):
        if value < low:
            raise ConfigError(f"selection.{key}: {value} is below {low}")
    if not 0.0 <= selection.min_part_fraction <= 0.5:
        raise ConfigError(f"selection.min_part_fraction: {selection.min_part_fraction} "
                          "is not in [0, 0.5]")
    grouped: dict[str, str] = {}
    for group, members in selection.or_groups.items():
        where = f"selection.or_groups.{group}"
        if group in roles.privileged:
            raise ConfigError(f"{where}: the group name is already a privileged column")
        if not 1 <= len(members) <= MAX_GROUP_MEMBERS:
            raise ConfigError(f"{where}: {len(members)} members; expected 1 to "
                              f"{MAX_GROUP_MEMBERS}")
        for member in members:
            if member not in roles.privileged_discrete:
                raise ConfigError(f"{where}: member {member!r} is not a privileged_discrete "
                                  "column (OR-groups combine sparse 0/1 flags)")
            if member in grouped:
                raise ConfigError(f"{where}: member {member!r} is already in group "
                                  f"{grouped[member]!r}")
            grouped[member] = group


# Row encodings shared by the reference and the Beam job (NaN = missing) ---------

def flag_states(values: np.ndarray, name: str, where: str = "data") -> np.ndarray:
    """OFF/ON/MISSING per row of a discrete candidate; anything but 0/1 is an error."""
    z = np.asarray(values, dtype=np.float64)
    missing = np.isnan(z)
    bad = ~missing & (z != 0.0) & (z != 1.0)
    if bad.any():
        raise ValueError(f"{where}: privileged_discrete feature {name!r} holds {z[bad][0]:g}; "
                         "discrete privileged features must be 0/1 flags")
    return np.where(missing, MISSING, (z == 1.0).astype(np.int64))


def label_table(keys: np.ndarray, labels: np.ndarray, size: int) -> np.ndarray:
    """Rows by (key in [0, size), label) as a [size][2] table."""
    return np.bincount(keys * 2 + labels, minlength=2 * size).reshape(size, 2)


def group_pattern(states: list[np.ndarray]) -> np.ndarray:
    """A row's OR-group pattern: its members' states as base-3 digits."""
    pattern = np.zeros(len(states[0]), dtype=np.int64)
    for j, s in enumerate(states):
        pattern += s * 3 ** j
    return pattern


def continuous_stats(name: str, groups: eq.SplitGroups, min_part_fraction: float,
                     missing: int, mode: str = EXACT, distinct_values: int | None = None,
                     buckets: int | None = None) -> CandidateStats:
    """HA-PFD Eq. 8 on `groups`, then the flag table of the chosen split."""
    split, gap = eq.best_split(groups, min_part_fraction)
    return CandidateStats(
        name=name, kind=CONTINUOUS, present=int(groups.n.sum()), missing=missing,
        counts=None if split is None else groups.flag_counts(split),
        threshold=None if split is None else float(groups.lo[split]),
        gap=None if split is None else gap, mode=mode,
        distinct_values=distinct_values, buckets=buckets)


def discrete_stats(name: str, states_by_label: np.ndarray) -> CandidateStats:
    """From a [OFF, ON, MISSING][y] table."""
    counts = np.asarray(states_by_label, dtype=np.int64)
    return CandidateStats(name=name, kind=DISCRETE, counts=counts[:2],
                          present=int(counts[:2].sum()), missing=int(counts[2].sum()),
                          distinct_values=int((counts[:2].sum(axis=1) > 0).sum()))


# The numpy reference ----------------------------------------------------------

def reference_stats(columns: Mapping[str, np.ndarray], labels: np.ndarray,
                    selection: SelectionConfig, roles: ColumnRoles) -> SelectionStats:
    """Single-process statistics of clicked rows: `columns` are the privileged
    candidates (NaN = missing), `labels` 0/1. Always exact (no bucketing)."""
    check_config(selection, roles)
    y = eq.check_labels(labels, len(labels))
    candidates = []
    for name in roles.privileged_continuous:
        z = np.asarray(columns[name], dtype=np.float64)
        present = ~np.isnan(z)
        groups = eq.distinct_groups(z[present], y[present])
        candidates.append(continuous_stats(name, groups, selection.min_part_fraction,
                                           missing=int((~present).sum()),
                                           distinct_values=len(groups.n)))
    states = {name: flag_states(columns[name], name) for name in roles.privileged_discrete}
    for name in roles.privileged_discrete:
        candidates.append(discrete_stats(name, label_table(states[name], y, 3)))
    groups = tuple(
        GroupStats(g, tuple(members), label_table(group_pattern([states[m] for m in members]),
                                                  y, 3 ** len(members)))
        for g, members in sorted(selection.or_groups.items()))
    return SelectionStats(rows=len(y), conversions=int(y.sum()), unclicked=0,
                          candidates=tuple(candidates), groups=groups)


# The policy -------------------------------------------------------------------

def _num(x: float | None) -> float | None:
    """Statistics at 12 significant digits: the JSON stays byte-identical when a
    distributed sum's order changes its last bits."""
    return None if x is None else float(f"{x:.12g}")


def _flag_summary(counts: np.ndarray) -> dict[str, Any]:
    rows = counts.sum(axis=1)
    return {"counts": counts.tolist(), "support": int(rows.min()),
            "mutual_information": _num(eq.mutual_information_table(counts))}


def group_flag_counts(group: GroupStats, members: list[str]) -> tuple[np.ndarray, int]:
    """(flag × label table, missing rows) of the OR of `members` of `group`."""
    digits = np.arange(len(group.counts))[:, None] // 3 ** np.arange(len(group.members)) % 3
    used = digits[:, [group.members.index(m) for m in members]]
    present = (used != MISSING).all(axis=1)
    on = (used == ON).any(axis=1)
    counts = np.stack([group.counts[present & ~on].sum(axis=0),
                       group.counts[present & on].sum(axis=0)])
    return counts, int(group.counts[~present].sum())


def select(stats: SelectionStats, selection: SelectionConfig, roles: ColumnRoles) -> dict[str, Any]:
    """The selection result (plain data; the artifact's selection.json)."""
    check_config(selection, roles)
    features: dict[str, dict[str, Any]] = {}
    ranked = []
    for c in stats.candidates:
        entry = {"kind": c.kind, "present": c.present, "missing": c.missing, "rank": None,
                 "group": None, "chosen": False, "reason": None,
                 "counts": None, "support": 0, "mutual_information": None}
        if c.kind == CONTINUOUS:
            entry.update(threshold=c.threshold, gap=_num(c.gap), mode=c.mode,
                         distinct_values=c.distinct_values, buckets=c.buckets)
        else:
            entry.update(distinct_values=c.distinct_values)
        if c.present == 0:
            entry["reason"] = "no_values"
        elif c.counts is None:
            entry["reason"] = "no_split"
        else:
            entry.update(_flag_summary(c.counts))
            ranked.append((-eq.mutual_information_table(c.counts), c.name))
        features[c.name] = entry

    kept = []
    for rank, (_, name) in enumerate(sorted(ranked), start=1):
        features[name]["rank"] = rank
        if rank <= selection.drop_top_k:
            features[name]["reason"] = "too_informative"
        elif rank <= selection.drop_top_k + selection.keep_top_n:
            kept.append(name)
        else:
            features[name]["reason"] = "below_top_n"

    group_of = {m: g for g, members in selection.or_groups.items() for m in members}
    group_stats = {g.name: g for g in stats.groups}
    selected, or_groups = [], {}
    for name in kept:
        group = group_of.get(name)
        if group in features:
            continue  # the group was formed at its best-ranked kept member
        if group is None:
            final, members = name, [name]
        else:
            final, members = group, [m for m in selection.or_groups[group] if m in kept]
            counts, missing = group_flag_counts(group_stats[group], members)
            features[group] = {"kind": OR_GROUP, "members": members, "rank": None,
                               "present": int(counts.sum()), "missing": missing,
                               **_flag_summary(counts)}
        chosen = features[final]["support"] >= selection.min_support
        features[final].update(chosen=chosen, reason="selected" if chosen else "low_support")
        if group is not None:
            for m in members:
                features[m].update(chosen=chosen, group=group,
                                   reason="or_group" if chosen else "low_support")
            if chosen:
                or_groups[group] = members
        if chosen:
            selected.append(final)

    return {
        "format_version": FORMAT_VERSION,
        "label": roles.label,
        "rows": {"clicked": stats.rows, "conversions": stats.conversions,
                 "unclicked_skipped": stats.unclicked},
        "policy": policy_record(selection, roles),
        "features": features,
        "selected": selected,
        "or_groups": or_groups,
        "thresholds": {c.name: c.threshold for c in stats.candidates
                       if c.kind == CONTINUOUS and c.threshold is not None},
    }


def policy_record(selection: SelectionConfig, roles: ColumnRoles) -> dict[str, Any]:
    """The result's `policy`: the selection config and the candidate roles used."""
    return {**_plain(dataclasses.asdict(selection)),
            "privileged_continuous": list(roles.privileged_continuous),
            "privileged_discrete": list(roles.privileged_discrete)}


def _plain(value: Any) -> Any:
    """Tuples and mappings of a config as JSON lists and dicts."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
