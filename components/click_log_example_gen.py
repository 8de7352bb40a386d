"""ClickLogExampleGen: raw impression logs (CSV / Parquet / TFRecord) -> tf.Examples.

A FileBasedExampleGen with its own Beam executor, so it keeps TFX's file
fingerprinting (a changed log is a new input; an unchanged one is served from
cache) and Examples artifact, and adds what CVR training needs:
- types from the config's column roles, not guessed from the first rows
  (a numeric user id stays a categorical string);
- click space: only clicked impressions become examples; impression space (the
  TAML / UKD strategies): every impression does, with its click label;
- train / validation / eval splits by time or by hash (`components/splits.py`);
- a dead-letter output: every rejected row with file, row and reason, and counts
  that reconcile (read = used + unclicked + quarantined), stored as custom
  properties of the Examples artifact in MLMD and as `row_counts.json`;
- a failed run, not a quietly smaller one, when no clicked row survives or more
  than `data.max_quarantined_fraction` of them is quarantined (a drifted or
  misread log): the message names the first dead-letter rows (file, row, field);
  and when the label has one class or a split is (nearly) empty (`check_splits`);
- Spark / Hadoop side files skipped and counted, folders in the input counted.
`pfdx compare` applies the same rules (`check_rows`, `check_splits`).
"""
from __future__ import annotations

import collections
import itertools
import json
import logging
import os
from typing import Any, Callable, Iterable, Iterator, Mapping

import apache_beam as beam
import tensorflow as tf
from apache_beam.io import fileio
from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from pfdx.components import log_rows, splits as splits_lib
from pfdx.components.splits import SPLITS

DEAD_LETTER_DIR = "dead_letter"
COUNTS_FILE = "row_counts.json"
# Counted files that are not logs: Spark / Hadoop markers and checksums, hidden files.
SIDE_FILES = "side_files"
# Count keys: a folder in data.path the file pattern does not reach; per split, its
# rows and positive labels.
SUBFOLDER, SPLIT, SPLIT_POSITIVES = "subfolder", "split", "split_positives"
TIME_RANGE_FILE = "time_range.json"  # [min, max] of the time column over used rows
_REPORT_DIR_KEY = "_pfdx_report_dir"


_SPACE_KEY = "space"


def make_custom_config(data_config: dict[str, Any],
                       space: str = "click") -> example_gen_pb2.CustomConfig:
    """Packs the pipeline's `data` config section and the example space ("click" or
    "impression", `PipelineConfig.space`) into ExampleGen's CustomConfig."""
    struct = struct_pb2.Struct()
    struct.update(json.loads(json.dumps(dict(data_config, **{_SPACE_KEY: space}))))
    packed = any_pb2.Any()
    packed.Pack(struct)
    return example_gen_pb2.CustomConfig(custom_config=packed)


def read_custom_config(exec_properties: dict[str, Any]) -> dict[str, Any]:
    custom = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.CUSTOM_CONFIG_KEY], custom)
    struct = struct_pb2.Struct()
    custom.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


class _ParseFile(beam.DoFn):
    """One readable file -> tagged rows: 'used' `log_rows.Example`, 'dead' JSON, 'count' keys."""

    def __init__(self, schema: log_rows.RowSchema, fmt: str, separator: str):
        self._schema, self._fmt, self._sep = schema, fmt, separator

    def process(self, readable: fileio.ReadableFile) -> Iterable[Any]:
        path = readable.metadata.path
        if log_rows.is_side_file(path):
            yield beam.pvalue.TaggedOutput("count", SIDE_FILES)
            return
        rows = 0
        with readable.open(compression_type="uncompressed") as stream:
            header_unknown, records = log_rows.read_file(path, stream, self._fmt, self._sep,
                                                         self._schema)
            unknown = set(header_unknown)
            for row, record in records:
                rows += 1
                yield beam.pvalue.TaggedOutput("count", "read")
                if isinstance(record, str):
                    status, payload = log_rows.QUARANTINED, record
                else:
                    # A TFRecord has no header: its columns show per record.
                    unknown.update(c for c in record if c not in self._schema.known)
                    status, payload = log_rows.row_to_example(self._schema, record)
                yield beam.pvalue.TaggedOutput("count", status)
                if status == log_rows.QUARANTINED:
                    yield beam.pvalue.TaggedOutput(
                        "count", f"{log_rows.QUARANTINED}:{log_rows.reason_key(payload)}")
                    yield beam.pvalue.TaggedOutput(
                        "dead", json.dumps({"file": path, "row": row, "reason": payload}))
                elif payload is not None:  # a clicked row, or any row in impression space
                    yield payload
        for col in sorted(unknown):
            yield beam.pvalue.TaggedOutput("count", f"unknown_column:{col}")
        if rows == 0:
            yield beam.pvalue.TaggedOutput("count", "empty_files")


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


class Executor(BaseExampleGenExecutor):
    """Reads, validates, filters to clicks, splits; see the module docstring."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("ClickLogExampleGen overrides GenerateExamplesByBeam")

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline,
                               exec_properties: dict[str, Any]) -> dict[str, beam.PCollection]:
        data = read_custom_config(exec_properties)
        schema = log_rows.RowSchema.from_config(data, data[_SPACE_KEY])
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                                  input_config)
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        file_pattern = input_config.splits[0].pattern
        parsed = (pipeline
                  | "MatchLogs" >> fileio.MatchFiles(os.path.join(input_base, file_pattern))
                  | "ReadMatches" >> fileio.ReadMatches()
                  | "Reshuffle" >> beam.Reshuffle()  # spread files over workers
                  | "ParseRows" >> beam.ParDo(_ParseFile(schema, data["format"], data["separator"]))
                  .with_outputs("dead", "count", main="used"))

        report_dir = exec_properties[_REPORT_DIR_KEY]
        fractions = float(data["eval_fraction"]), float(data["validation_fraction"])
        if schema.time is not None:
            bounds = (parsed.used | "Times" >> beam.Map(lambda r: r.time)
                      | "TimeRange" >> beam.CombineGlobally(_MinMax()))
            _ = (bounds | "TimeRangeJson" >> beam.Map(json.dumps)
                 | "WriteTimeRange" >> beam.io.WriteToText(
                     os.path.join(report_dir, TIME_RANGE_FILE), shard_name_template=""))
            cuts = bounds | "Cuts" >> beam.Map(lambda b: splits_lib.time_cuts(*b, *fractions))
            parts = parsed.used | "SplitByTime" >> beam.Partition(
                lambda r, n, c: splits_lib.split_by_time(r.time, c), len(SPLITS),
                beam.pvalue.AsSingleton(cuts))
        else:
            parts = parsed.used | "SplitByHash" >> beam.Partition(
                lambda r, n: splits_lib.split_by_hash(r.serialized, *fractions), len(SPLITS))

        split_counts = [part | f"SplitCounts[{name}]" >> beam.FlatMap(_split_keys, name)
                        for name, part in zip(SPLITS, parts)]
        folders = [f"{SUBFOLDER}:{name}" for name in _subfolders(input_base, file_pattern)]
        _ = ((parsed.count, *split_counts, pipeline | "Subfolders" >> beam.Create(folders))
             | "AllCounts" >> beam.Flatten()
             | "CountRows" >> beam.combiners.Count.PerElement()
             | "ToDict" >> beam.combiners.ToDict()
             | "CountsJson" >> beam.Map(lambda d: json.dumps(dict(sorted(d.items())), indent=2))
             | "WriteCounts" >> beam.io.WriteToText(
                 os.path.join(report_dir, COUNTS_FILE), shard_name_template=""))
        _ = (parsed.dead
             | "WriteDeadLetter" >> beam.io.WriteToText(
                 os.path.join(report_dir, DEAD_LETTER_DIR, "rows"), file_name_suffix=".jsonl"))
        return {name: part | f"Payload[{name}]" >> beam.Map(lambda r: r.serialized)
                for name, part in zip(SPLITS, parts)}

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        props = dict(exec_properties, **{_REPORT_DIR_KEY: examples.uri})
        super().Do(input_dict, output_dict, props)
        counts = read_row_counts(examples.uri)
        for key, value in counts.items():
            examples.set_int_custom_property(f"rows_{key}", value)
        data = read_custom_config(exec_properties)
        source = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        if counts["read"] == 0 and counts["empty_files"] == 0:
            raise ValueError(f"no file in {source} matches "
                             f"data.file_pattern={data['file_pattern']!r}{_not_read(counts)}")
        if counts["read"] > 0 and _not_read(counts):
            logging.warning("%s%s", source, _not_read(counts))
        check_rows(counts, data, data[_SPACE_KEY] == "impression", source,
                   lambda: _first_dead_rows(examples.uri))
        check_splits(counts, data, _read_time_range(examples.uri))


def _not_read(counts: Mapping[str, int]) -> str:
    """What data.path holds besides log files, as a message suffix."""
    folders = [k.split(":", 1)[1] for k in counts if k.startswith(f"{SUBFOLDER}:")]
    return "".join([
        f"; skipped {counts[SIDE_FILES]} Spark/Hadoop side or hidden file(s)"
        if counts.get(SIDE_FILES) else "",
        f"; not read: the subfolder(s) {folders} of data.path (a data.file_pattern with "
        "a '/' reaches into them, e.g. '*/*.csv')" if folders else ""])


class DataError(ValueError):
    """Data that cannot train: the message names the source, the counts and the rule."""


def check_rows(counts: Mapping[str, int], data: Mapping[str, Any], impressions: bool,
               source: str, first_dead: Callable[[], str] = str) -> None:
    """The rows rule of ExampleGen and `pfdx compare`: some clicked row, and no more
    than `data.max_quarantined_fraction` of the rows that would be used quarantined.
    `first_dead()`: the first quarantined rows, as a message suffix."""
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
    """The splits rule of ExampleGen and `pfdx compare`: the label has two classes, and
    each split of `names` (counted as `split:<name>` / `split_positives:<name>`; absent
    when zero) holds at least `data.min_split_rows` rows and `data.min_split_positives`
    positive labels. `time_range`: (min, max) of the time column when split by time."""
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


def _split_keys(example: log_rows.Example, split: str) -> list[str]:
    return [f"{SPLIT}:{split}"] + [f"{SPLIT_POSITIVES}:{split}"] * example.label


def _subfolders(input_base: str, pattern: str) -> list[str]:
    """Folders directly in data.path, unless `pattern` reaches into folders ('/')."""
    if "/" in pattern:
        return []
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(input_base)
                  if tf.io.gfile.isdir(os.path.join(input_base, name)))


def _read_time_range(examples_uri: str) -> tuple[float, float] | None:
    path = os.path.join(examples_uri, TIME_RANGE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return tuple(json.load(f))


def _first_dead_rows(examples_uri: str) -> str:
    """The first dead-letter rows as a message suffix. Read before failing: TFX
    deletes a failed execution's outputs, dead letter included."""
    pattern = os.path.join(examples_uri, DEAD_LETTER_DIR, "*")

    def rows() -> Iterator[dict[str, Any]]:
        for path in sorted(tf.io.gfile.glob(pattern)):
            with tf.io.gfile.GFile(path) as f:
                yield from (json.loads(line) for line in f)

    return format_dead_rows(rows())


def format_dead_rows(dead: Iterable[Mapping[str, Any]], n: int = 5) -> str:
    """The first `n` quarantined rows ({file, row, reason}) as message lines
    (file:row: reason)."""
    lines = [f"\n  {d['file']}:{d['row']}: {d['reason']}" for d in itertools.islice(dead, n)]
    return "; first quarantined rows:" + "".join(lines) if lines else ""


def read_row_counts(examples_uri: str) -> dict[str, int]:
    """Row counts of an ExampleGen run; all buckets present, zero when empty."""
    with open(os.path.join(examples_uri, COUNTS_FILE), encoding="utf-8") as f:
        raw = json.load(f)
    counts = collections.OrderedDict(
        (k, int(raw.get(k, 0))) for k in ("read", log_rows.USED, log_rows.UNCLICKED,
                                          log_rows.QUARANTINED, "empty_files"))
    counts.update((k, int(v)) for k, v in sorted(raw.items()) if k not in counts)
    return dict(counts)


class ClickLogExampleGen(FileBasedExampleGen):
    """FileBasedExampleGen over impression logs; `data_config` is the config's `data`
    section, `space` "click" or "impression" (`PipelineConfig.space`)."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, input_base: str, data_config: dict[str, Any], pattern: str = "*",
                 space: str = "click"):
        super().__init__(
            input_base=input_base,
            input_config=example_gen_pb2.Input(splits=[
                example_gen_pb2.Input.Split(name="logs", pattern=pattern)]),
            # Split names only: the executor assigns rows itself (time or hash).
            output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
                splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1)
                        for name in SPLITS])),
            custom_config=make_custom_config(data_config, space))
