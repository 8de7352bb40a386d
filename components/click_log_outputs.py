"""What ClickLogExampleGen writes beside its examples, and reading it back: the row
counts (`row_counts.json`, also custom properties of the Examples artifact in MLMD),
the dead letter of quarantined rows, and the time range of the used rows."""
from __future__ import annotations

import collections
import json
import os
from typing import Any, Iterator, Mapping

import tensorflow as tf

from pfdx.components import log_rows
from pfdx.components.data_rules import format_dead_rows

DEAD_LETTER_DIR = "dead_letter"
COUNTS_FILE = "row_counts.json"
TIME_RANGE_FILE = "time_range.json"  # [min, max] of the time column over used rows
# Count keys of what is not a log: Spark / Hadoop markers and checksums, hidden files;
# a folder in data.path the file pattern does not reach (`subfolder:<name>`).
SIDE_FILES, SUBFOLDER = "side_files", "subfolder"


def read_row_counts(examples_uri: str) -> dict[str, int]:
    """Row counts of an ExampleGen run; all buckets present, zero when empty."""
    with open(os.path.join(examples_uri, COUNTS_FILE), encoding="utf-8") as f:
        raw = json.load(f)
    counts = collections.OrderedDict(
        (k, int(raw.get(k, 0))) for k in ("read", log_rows.USED, log_rows.UNCLICKED,
                                          log_rows.QUARANTINED, "empty_files"))
    counts.update((k, int(v)) for k, v in sorted(raw.items()) if k not in counts)
    return dict(counts)


def read_time_range(examples_uri: str) -> tuple[float, float] | None:
    """(min, max) of the time column, None when the split was by hash."""
    path = os.path.join(examples_uri, TIME_RANGE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return tuple(json.load(f))


def first_dead_rows(examples_uri: str) -> str:
    """The first dead-letter rows as a message suffix. Read before failing: TFX
    deletes a failed execution's outputs, dead letter included."""
    pattern = os.path.join(examples_uri, DEAD_LETTER_DIR, "*")

    def rows() -> Iterator[dict[str, Any]]:
        for path in sorted(tf.io.gfile.glob(pattern)):
            with tf.io.gfile.GFile(path) as f:
                yield from (json.loads(line) for line in f)

    return format_dead_rows(rows())


def not_read(counts: Mapping[str, int]) -> str:
    """What data.path holds besides log files, as a message suffix."""
    folders = [k.split(":", 1)[1] for k in counts if k.startswith(f"{SUBFOLDER}:")]
    return "".join([
        f"; skipped {counts[SIDE_FILES]} Spark/Hadoop side or hidden file(s)"
        if counts.get(SIDE_FILES) else "",
        f"; not read: the subfolder(s) {folders} of data.path (a data.file_pattern with "
        "a '/' reaches into them, e.g. '*/*.csv')" if folders else ""])
