"""The data rules of ClickLogExampleGen and `pfdx compare`: data that cannot train fails
the run, with a message naming the source, the counts and the rule, rather than
training quietly on fewer or misread rows."""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Mapping

from pfdx.components import log_rows
from pfdx.components.splits import SPLITS

# Count keys per split: its rows and its positive labels (`split:<name>`).
SPLIT, SPLIT_POSITIVES = "split", "split_positives"


class DataError(ValueError):
    """Data that cannot train: the message names the source, the counts and the rule."""


def check_rows(counts: Mapping[str, int], data: Mapping[str, Any], impressions: bool,
               source: str, first_dead: Callable[[], str] = str) -> None:
    """The rows rule: some clicked row, and no more than `data.max_quarantined_fraction`
    of the rows that would be used quarantined. `first_dead()`: the first quarantined
    rows, as a message suffix."""
    if counts[log_rows.USED] == 0:
        raise DataError(f"no clicked rows were read from {source} (row counts: {dict(counts)})"
                        f"{first_dead()}")
    bad, limit = counts[log_rows.QUARANTINED], float(data["max_quarantined_fraction"])
    kept = counts[log_rows.USED] + (counts[log_rows.UNCLICKED] if impressions else 0)
    if bad > limit * (kept + bad):
        raise DataError(
            f"{bad} of the {kept + bad} usable or unusable rows read "
            f"from {source} were quarantined, more than "
            f"data.max_quarantined_fraction={limit:g} (row counts: {dict(counts)})"
            f"{first_dead()}")


def check_splits(counts: Mapping[str, int], data: Mapping[str, Any],
                 time_range: tuple[float, float] | None, names: Iterable[str] = SPLITS) -> None:
    """The splits rule: the label has two classes, and each split of `names` (counted
    as `split:<name>` / `split_positives:<name>`; absent when zero) holds at least
    `data.min_split_rows` rows and `data.min_split_positives` positive labels.
    `time_range`: (min, max) of the time column when split by time."""
    label = data["columns"]["label"]
    stats = {name: (counts.get(f"{SPLIT}:{name}", 0), counts.get(f"{SPLIT_POSITIVES}:{name}", 0))
             for name in names}
    rows, positives = (sum(column) for column in zip(*stats.values()))
    if positives in (0, rows):
        raise DataError(f"the label column {label!r} has one class: all {rows} used rows are "
                        f"{int(positives > 0)}, so AUC is undefined and there is nothing to "
                        "learn; check data.columns.label")
    min_rows, min_positives = int(data["min_split_rows"]), int(data["min_split_positives"])
    for name, (n, pos) in stats.items():
        if n >= min_rows and pos >= min_positives:
            continue
        if time_range is None:
            how = ("The split is by a hash of each row (no data.time_column): give more rows or "
                   "larger data.eval_fraction / data.validation_fraction.")
        else:
            how = (f"The split is by time: data.time_column {data['time_column']!r} ranges from "
                   f"{time_range[0]:.0f} to {time_range[1]:.0f}; equal times, or a few rows far "
                   "from the rest (e.g. milliseconds among seconds), leave a split (nearly) empty.")
        raise DataError(f"the {name} split holds {n} rows with {pos} positive {label!r} labels; "
                        f"each split needs data.min_split_rows={min_rows} rows and "
                        f"data.min_split_positives={min_positives} positives. {how}")


def format_dead_rows(dead: Iterable[Mapping[str, Any]], n: int = 5) -> str:
    """The first `n` quarantined rows ({file, row, reason}) as message lines
    (file:row: reason)."""
    lines = [f"\n  {d['file']}:{d['row']}: {d['reason']}" for d in itertools.islice(dead, n)]
    return "; first quarantined rows:" + "".join(lines) if lines else ""
