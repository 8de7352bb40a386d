"""ClickLogExampleGen's Beam transforms: log files -> typed rows, the dead letter and
counts (`ParseLogFile`, rows by `components/log_rows.py`), rows -> train / validation /
eval (`split_rows`, `split_span_rows`, rules in `components/splits.py`), and the
report files beside the examples (`write_reports`, `components/click_log_outputs.py`)."""
from __future__ import annotations

import collections
import json
import os
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.io import fileio

from pfdx.components import log_rows, splits as splits_lib
from pfdx.components.click_log_outputs import (COUNTS_FILE, DEAD_LETTER_DIR, SIDE_FILES,
                                               SUBFOLDER, TIME_RANGE_FILE)
from pfdx.components.data_rules import SPLIT, SPLIT_POSITIVES
from pfdx.components.splits import SPLITS

Fractions = tuple[float, float]  # data.eval_fraction, data.validation_fraction


class ParseLogFile(beam.DoFn):
    """One readable file -> tagged rows: 'used' `log_rows.Example`, 'dead' JSON, and
    'count' (key, n) pairs, counted per file: an element per row and count would be
    most of the component's time on a log of mostly unclicked impressions."""

    def __init__(self, schema: log_rows.RowSchema, fmt: str, separator: str):
        self._schema, self._fmt, self._sep = schema, fmt, separator

    def process(self, readable: fileio.ReadableFile) -> Iterable[Any]:
        path = readable.metadata.path
        if log_rows.is_side_file(path):
            yield beam.pvalue.TaggedOutput("count", (SIDE_FILES, 1))
            return
        counts: collections.Counter[str] = collections.Counter()
        with readable.open(compression_type="uncompressed") as stream:
            unknown, records = log_rows.read_rows(path, stream, self._fmt, self._sep,
                                                  self._schema)
            for row in records:
                counts[row.status] += 1
                if row.status == log_rows.QUARANTINED:
                    counts[f"{log_rows.QUARANTINED}:{log_rows.reason_key(row.payload)}"] += 1
                    yield beam.pvalue.TaggedOutput(
                        "dead", json.dumps({"file": path, "row": row.number,
                                            "reason": row.payload}))
                elif row.payload is not None:  # a clicked row, or any row in impression space
                    yield row.payload
        counts["read"] = sum(counts[status] for status in log_rows.STATUSES)
        counts.update(f"unknown_column:{col}" for col in unknown)
        if counts["read"] == 0:
            counts["empty_files"] = 1
        for key, n in counts.items():
            if n:
                yield beam.pvalue.TaggedOutput("count", (key, n))


class _MinMax(beam.CombineFn):
    def create_accumulator(self):
        return (float("inf"), float("-inf"))

    def add_input(self, acc, t):
        return (min(acc[0], t), max(acc[1], t))

    def merge_accumulators(self, accs):
        accs = list(accs)
        return (min(a[0] for a in accs), max(a[1] for a in accs))

    def extract_output(self, acc):
        return acc


def read_logs(pipeline: beam.Pipeline, pattern: str, parse: ParseLogFile):
    """The files matching `pattern`, parsed: tagged outputs used / dead / count."""
    return (pipeline
            | "MatchLogs" >> fileio.MatchFiles(pattern)
            | "ReadMatches" >> fileio.ReadMatches()
            | "Reshuffle" >> beam.Reshuffle()  # spread files over workers
            | "ParseRows" >> beam.ParDo(parse).with_outputs("dead", "count", main="used"))


def split_rows(parsed, schema: log_rows.RowSchema, fractions: Fractions,
               report_dir: str) -> list[beam.PCollection]:
    """One span's rows (`read_logs`) -> a PCollection per split of SPLITS: by time
    when there is a time column, else by hash."""
    if schema.time is None:
        return parsed.used | "SplitByHash" >> beam.Partition(
            lambda r, n: splits_lib.split_by_hash(r.serialized, *fractions), len(SPLITS))
    bounds = (parsed.used | "Times" >> beam.Map(lambda r: r.time)
              | "TimeRange" >> beam.CombineGlobally(_MinMax()))
    _write_time_range(bounds, report_dir)
    cuts = bounds | "Cuts" >> beam.Map(lambda b: splits_lib.time_cuts(*b, *fractions))
    return parsed.used | "SplitByTime" >> beam.Partition(
        lambda r, n, c: splits_lib.split_by_time(r.time, c), len(SPLITS),
        beam.pvalue.AsSingleton(cuts))


def split_span_rows(pipeline: beam.Pipeline, newest, older_patterns: list[str],
                    parse: ParseLogFile, schema: log_rows.RowSchema, fractions: Fractions,
                    newest_span_eval: bool, report_dir: str):
    """Several spans: the newest span's rows (`newest`, from `read_logs`) and the older
    spans' (their resolved `older_patterns`) -> (a PCollection per split of SPLITS,
    counts, dead letter); eval comes from the newest span only."""
    old = (pipeline
           | "OlderSpans" >> beam.Create(older_patterns)
           | "MatchOlderLogs" >> fileio.MatchAll()
           | "ReadOlderMatches" >> fileio.ReadMatches()
           | "ReshuffleOlder" >> beam.Reshuffle()
           | "ParseOlderRows" >> beam.ParDo(parse).with_outputs("dead", "count", main="used"))
    rows = ((newest.used | "TagNewest" >> beam.Map(lambda r: (True, r)),
             old.used | "TagOlder" >> beam.Map(lambda r: (False, r)))
            | "AllSpans" >> beam.Flatten())
    if schema.time is not None:
        def time_range(name, pcoll):
            return (pcoll | f"Times[{name}]" >> beam.Map(lambda r: r.time)
                    | f"TimeRange[{name}]" >> beam.CombineGlobally(_MinMax()))

        everything = time_range("all", rows | "Rows" >> beam.Values())
        _write_time_range(everything, report_dir)
        newest_range = time_range("newest", newest.used)
        older_range = time_range("older", old.used)

        def cuts(all_range, newest_range, older_range):
            # An empty side is (inf, -inf); check_splits reports the empty split.
            return splits_lib.span_time_cuts(all_range, newest_range, older_range,
                                             *fractions, newest_span_eval)

        cut = everything | "Cuts" >> beam.Map(
            cuts, beam.pvalue.AsSingleton(newest_range), beam.pvalue.AsSingleton(older_range))
        parts = rows | "SplitBySpanTime" >> beam.Partition(
            lambda nr, n, c: splits_lib.split_by_span_time(nr[1].time, nr[0], c),
            len(SPLITS), beam.pvalue.AsSingleton(cut))
    else:
        parts = rows | "SplitBySpanHash" >> beam.Partition(
            lambda nr, n: splits_lib.split_by_span_hash(nr[1].serialized, nr[0], *fractions,
                                                        newest_span_eval), len(SPLITS))
    parts = [part | f"Untag[{name}]" >> beam.Values() for name, part in zip(SPLITS, parts)]
    counts = (newest.count, old.count) | "SpanCounts" >> beam.Flatten()
    dead = (newest.dead, old.dead) | "SpanDeadLetter" >> beam.Flatten()
    return parts, counts, dead


def _write_time_range(bounds: beam.PCollection, report_dir: str) -> None:
    _ = (bounds | "TimeRangeJson" >> beam.Map(json.dumps)
         | "WriteTimeRange" >> beam.io.WriteToText(
             os.path.join(report_dir, TIME_RANGE_FILE), shard_name_template=""))


def write_reports(pipeline: beam.Pipeline, parts: list[beam.PCollection],
                  count: beam.PCollection, dead: beam.PCollection, subfolders: list[str],
                  report_dir: str) -> dict[str, beam.PCollection]:
    """Writes row_counts.json (every count key, per-split rows and positives, folders
    not read) and the dead letter; returns the serialized examples of each split."""
    split_counts = [part | f"SplitCounts[{name}]" >> beam.FlatMap(_split_keys, name)
                    for name, part in zip(SPLITS, parts)]
    folders = [(f"{SUBFOLDER}:{name}", 1) for name in subfolders]
    _ = ((count, *split_counts, pipeline | "Subfolders" >> beam.Create(folders))
         | "AllCounts" >> beam.Flatten()
         | "CountRows" >> beam.CombinePerKey(sum)
         | "ToDict" >> beam.combiners.ToDict()
         | "CountsJson" >> beam.Map(lambda d: json.dumps(dict(sorted(d.items())), indent=2))
         | "WriteCounts" >> beam.io.WriteToText(
             os.path.join(report_dir, COUNTS_FILE), shard_name_template=""))
    _ = (dead
         | "WriteDeadLetter" >> beam.io.WriteToText(
             os.path.join(report_dir, DEAD_LETTER_DIR, "rows"), file_name_suffix=".jsonl"))
    return {name: part | f"Payload[{name}]" >> beam.Map(lambda r: r.serialized)
            for name, part in zip(SPLITS, parts)}


def _split_keys(example: log_rows.Example, split: str) -> list[tuple[str, int]]:
    return [(f"{SPLIT}:{split}", 1)] + [(f"{SPLIT_POSITIVES}:{split}", 1)] * example.label
