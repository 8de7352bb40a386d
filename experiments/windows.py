"""The raw log -> the pipeline's three splits as time windows of tf.Example files.

The log is read with ExampleGen's own row code (`components/log_rows.py`
`read_rows`): the same typing, click space and quarantine, under ExampleGen's rows
rule (`check_rows`). Parquet is read with pyarrow there, not tensorflow-io:
tensorflow-io 0.37's `IODataset.from_parquet` aborts the whole process
("parquet::ParquetException: Unexpected end of stream", tensorflow/io#1667, #1781) on
a column with nulls, and post-click signals are null on every unclicked impression.

Clicked rows are split by time (by hash without `data.time_column`, as ExampleGen)
into TRAIN, VALIDATION (the train range's last `data.validation_fraction`) and TEST
(the last `data.eval_fraction`, the pipeline's eval split), under ExampleGen's splits
rule (`check_splits`, `components/splits.py`), and each window is written as gzip
tf.Example TFRecords. Impression-space strategies get impression windows too
(`<window>_impressions`): every impression, with its click as an int64 feature, cut
at the *same* times, which are computed from the clicked rows alone. So an impression
window's clicked rows are exactly the click-space window, row for row and in log
order, and adding impression strategies to a run changes nothing for the others.
(Impressions before the first or after the last click fall in the first or last
window; they are unclicked, checked in full and may be quarantined, as ExampleGen
does in impression space.)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

from pfdx.components import splits
from pfdx.config import PipelineConfig
from pfdx.experiments.strategies import CLICK, IMPRESSION

TRAIN, VALIDATION, TEST = "train", "validation", "test"
TELEMETRY = ["pfdx", "Compare"]  # tfx-bsl's telemetry descriptors of what compare reads


@dataclasses.dataclass(frozen=True)
class Window:
    name: str
    pattern: str  # gzip tf.Example TFRecords
    rows: int
    conversions: int
    time_range: tuple[float, float]
    space: str = CLICK
    clicks: int | None = None  # impression windows: clicked rows among `rows`


@dataclasses.dataclass
class Rows:
    """Rows of one example space, in log order: event times, serialized tf.Examples,
    conversion labels, and click labels (impression space; None in click space)."""

    times: Any
    records: list[bytes]
    labels: Any
    clicks: Any = None
    # Without a time column: each row's split index (components/splits.py, by hash).
    splits: Any = None

    def add(self, example, clicked: int, split: int | None) -> None:
        """Appends a `log_rows.Example`; `clicked` is kept in impression space only."""
        self.times.append(example.time)
        self.records.append(example.serialized)
        self.labels.append(example.label)
        if self.clicks is not None:
            self.clicks.append(clicked)
        if self.splits is not None:
            self.splits.append(split)


def window_name(window: str, space: str) -> str:
    return window if space == CLICK else f"{window}_impressions"


def log_files(path: str, config: PipelineConfig) -> list[str]:
    """The log files at `path` (a file, or a folder read with data.file_pattern),
    without the side files Spark and Hadoop write beside their data, as ExampleGen."""
    import tensorflow as tf

    from pfdx.components import log_rows

    pattern = os.path.join(path, config.data.file_pattern) if tf.io.gfile.isdir(path) else path
    files = sorted(f for f in tf.io.gfile.glob(pattern)
                   if not tf.io.gfile.isdir(f) and not log_rows.is_side_file(f))
    if not files:
        raise FileNotFoundError(f"--data: no file matches {pattern!r}")
    return files


def read_log(files: Sequence[str], config: PipelineConfig, impressions: bool = False):
    """({space: Rows}, row counts, quarantined rows ({file, row, reason})):
    ExampleGen's reader (`log_rows.read_rows`) and its rows rule (`check_rows`), in
    process. Always the clicked rows as click-space examples ("click"); with
    `impressions` also every impression as impression-space examples with the click
    feature ("impression"), and the counts and quarantine are impression space's
    (unclicked rows checked in full). Without a time column each row gets its hash
    split (`Rows.splits`)."""
    import numpy as np
    from apache_beam.io.filesystems import FileSystems

    from pfdx.components import log_rows
    from pfdx.components.data_rules import check_rows, format_dead_rows

    data = config.data
    data_dict = config.to_dict()["data"]
    click_schema = log_rows.RowSchema.from_config(data_dict, CLICK)
    schema = log_rows.RowSchema.from_config(data_dict, IMPRESSION) if impressions else click_schema
    by_hash = data.time_column is None
    counts = {"read": 0, log_rows.USED: 0, log_rows.UNCLICKED: 0, log_rows.QUARANTINED: 0}
    clicked = Rows([], [], [], splits=[] if by_hash else None)
    every = Rows([], [], [], [], splits=[] if by_hash else None)
    dead = []
    for path in files:
        with FileSystems.open(path, compression_type="uncompressed") as stream:
            _, rows = log_rows.read_rows(path, stream, data.format, data.separator, schema)
            for row in rows:
                counts["read"] += 1
                counts[row.status] += 1
                if row.status == log_rows.QUARANTINED:
                    dead.append({"file": path, "row": row.number, "reason": row.payload})
                    continue
                if row.payload is None:  # unclicked, click space
                    continue
                click_space = row.payload  # the click-space example, as without impressions
                if impressions and row.status == log_rows.USED:
                    click_space = log_rows.row_to_example(click_schema, row.record)[1]
                # A clicked row hashes its click-space example in both spaces, so an
                # impression window's clicked rows are the click window's.
                split = splits.split_by_hash(click_space.serialized, data.eval_fraction,
                                             data.validation_fraction) if by_hash else None
                if impressions:
                    every.add(row.payload, int(row.status == log_rows.USED), split)
                if row.status == log_rows.USED:
                    clicked.add(click_space, 1, split)
    check_rows(counts, data_dict, impressions, f"--data ({len(files)} file(s))",
               lambda: format_dead_rows(dead))
    out = {CLICK: clicked}
    if impressions:
        out[IMPRESSION] = every
    for rows in out.values():
        rows.times = np.asarray(rows.times, dtype=np.float64)  # None (no time column): NaN
        rows.labels = np.asarray(rows.labels)
        if rows.clicks is not None:
            rows.clicks = np.asarray(rows.clicks, dtype=np.int64)
        if rows.splits is not None:
            rows.splits = np.asarray(rows.splits, dtype=np.int64)
    return out, counts, dead


def window_masks(rows: Rows, cuts: tuple[float, float] | None) -> dict[str, Any]:
    """Boolean row masks of the pipeline's three splits (components/splits.py) at
    `cuts` (`splits.time_cuts` of the clicked rows), or by hash (`Rows.splits`) when
    `cuts` is None: TRAIN, VALIDATION and TEST (the eval split)."""
    import numpy as np

    index = rows.splits if cuts is None else np.array(
        [splits.split_by_time(t, cuts) for t in rows.times.tolist()], dtype=np.int64)
    return {TRAIN: index == 0, VALIDATION: index == 1, TEST: index == 2}


def split_windows(rows: dict[str, Rows], config: PipelineConfig, work: str,
                  log: Callable[[str], None]) -> dict[str, dict[str, Window]]:
    """{space: {window: Window}}: the pipeline's splits, by time or, without a time
    column, by hash, checked with ExampleGen's splits rule and written under `work`."""
    from pfdx.components.data_rules import SPLIT, SPLIT_POSITIVES, check_splits

    clicked, data = rows[CLICK], config.data
    time_range = None
    if data.time_column is None:
        log("no data.time_column: the windows are the pipeline's hash split of the rows")
    else:
        time_range = float(clicked.times.min()), float(clicked.times.max())
    cuts = None if time_range is None else splits.time_cuts(
        *time_range, data.eval_fraction, data.validation_fraction)
    masks = {space: window_masks(space_rows, cuts) for space, space_rows in rows.items()}
    split_counts = {}
    for w, mask in masks[CLICK].items():
        split_counts[f"{SPLIT}:{w}"] = int(mask.sum())
        split_counts[f"{SPLIT_POSITIVES}:{w}"] = int(clicked.labels[mask].sum())
    check_splits(split_counts, config.to_dict()["data"], time_range, masks[CLICK])
    return {space: {w: write_window(window_name(w, space), mask, rows[space],
                                    os.path.join(work, "examples", window_name(w, space)), space)
                    for w, mask in space_masks.items()}
            for space, space_masks in masks.items()}


def write_window(name: str, mask, rows: Rows, out_dir: str, space: str = CLICK) -> Window:
    import numpy as np
    import tensorflow as tf

    if not mask.any():
        raise ValueError(f"the {name} window holds no {'clicked ' * (space == CLICK)}rows; widen it "
                         "(data.eval_fraction, data.validation_fraction) or give more data")
    tf.io.gfile.makedirs(out_dir)
    path = os.path.join(out_dir, "examples.tfrecord.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for i in np.flatnonzero(mask):
            writer.write(rows.records[i])
    return Window(name, path, int(mask.sum()), int(rows.labels[mask].sum()),
                  (float(rows.times[mask].min()), float(rows.times[mask].max())), space,
                  None if rows.clicks is None else int(rows.clicks[mask].sum()))


def dataset_factory(files, options, schema):
    """What the Trainer's `data_accessor.tf_dataset_factory` does for tf.Example files."""
    from tfx_bsl.public import tfxio

    return tfxio.TFExampleRecord(files, schema=schema,
                                 telemetry_descriptors=TELEMETRY).TensorFlowDataset(options)
