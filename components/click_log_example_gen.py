"""ClickLogExampleGen: raw impression logs (CSV / Parquet / TFRecord) -> tf.Examples.

A FileBasedExampleGen with its own Beam executor, so it keeps TFX's file
fingerprinting (a changed log is a new input; an unchanged one is served from
cache) and Examples artifact, and adds what CVR training needs:
- types from the config's column roles (the data contract, `features/contract.py`),
  not guessed from the first rows (a numeric user id stays a categorical string);
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
- Spark / Hadoop side files skipped and counted, folders in the input counted;
- spans (docs/data-and-failures.md, Continuous training): with TFX's span
  placeholders in `data.file_pattern` (`day={SPAN}/*.csv`, `day={YYYY}-{MM}-{DD}/*.csv`)
  TFX's driver resolves the newest span (its `span` property and input fingerprint); a rolling
  range of `num_spans` > 1 adds the older spans L-N+1 .. L-1 that exist (resolved with
  TFX's `calculate_splits_fingerprint_span_and_version`, one static range each), whose
  fingerprints this component's driver adds to the cache key; the eval split comes
  from the newest span only (`components/splits.py`). The artifact records the spans
  read (`spans`, `span_pattern`).
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
from tfx import types
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import input_processor
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import proto_utils

from pfdx.components import log_rows, splits as splits_lib
from pfdx.components.splits import SPLITS
from pfdx.features import contract

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
# The exec property with the number of newest spans to read (data.spans.num_spans; a
# run parameter on Kubeflow), and the executor's list of [span, pattern] it reads.
NUM_SPANS_KEY = "num_spans"
_OLDER_SPANS_KEY = "_pfdx_older_spans"
# Custom properties of the Examples artifact besides TFX's `span`: the unresolved
# pattern, and the spans read (comma-separated, oldest first).
SPAN_PATTERN_PROPERTY, SPANS_PROPERTY = "span_pattern", "spans"


def has_span(pattern: str) -> bool:
    """Whether `pattern` holds TFX span placeholders ({SPAN}, {YYYY}-{MM}-{DD})."""
    is_span, is_date, _ = example_gen_utils.verify_split_pattern_specs(
        example_gen_pb2.Input.Split(name="logs", pattern=pattern))
    return is_span or is_date


def older_spans(input_base: str, pattern: str, newest: int,
                num_spans: int) -> list[tuple[int, str, str]]:
    """(span, resolved pattern, fingerprint) of each span newest-num_spans+1 .. newest-1
    that has files matching `pattern`, oldest first: TFX's rolling range, which
    ExampleGen's driver resolves for one span only. A span with no file is skipped
    (a day without logs); TFX's own utility resolves each (date specs, {VERSION})."""
    found = []
    for span in range(max(0, newest - num_spans + 1), newest):
        split = example_gen_pb2.Input.Split(name="logs", pattern=pattern)
        only = range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
            start_span_number=span, end_span_number=span))
        try:
            fingerprint, _, _ = example_gen_utils.calculate_splits_fingerprint_span_and_version(
                input_base, [split], only)
        except ValueError as e:
            if "Cannot find matching" not in str(e):
                raise
            logging.warning("span %d of %s is in the range of data.spans.num_spans=%d but "
                            "has no file; skipped", span, pattern, num_spans)
            continue
        found.append((span, split.pattern, fingerprint))  # the call resolved split.pattern
    return found


def _num_spans(exec_properties: Mapping[str, Any], data: Mapping[str, Any]) -> int:
    value = exec_properties.get(NUM_SPANS_KEY)
    return int(value if value is not None else data.get("spans", {}).get("num_spans", 1))


def make_custom_config(data_config: dict[str, Any],
                       space: str = contract.CLICK) -> example_gen_pb2.CustomConfig:
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
        # The newest span's pattern (TFX's driver resolved it), or the whole folder's.
        file_pattern = input_config.splits[0].pattern
        parse = _ParseFile(schema, data["format"], data["separator"])
        parsed = (pipeline
                  | "MatchLogs" >> fileio.MatchFiles(os.path.join(input_base, file_pattern))
                  | "ReadMatches" >> fileio.ReadMatches()
                  | "Reshuffle" >> beam.Reshuffle()  # spread files over workers
                  | "ParseRows" >> beam.ParDo(parse).with_outputs("dead", "count", main="used"))

        report_dir = exec_properties[_REPORT_DIR_KEY]
        fractions = float(data["eval_fraction"]), float(data["validation_fraction"])
        older = json.loads(exec_properties.get(_OLDER_SPANS_KEY) or "[]")
        newest_span_eval = data.get("spans", {}).get("eval_split") == "newest_span"
        if older:
            return self._generate_spans(pipeline, parsed, older, input_base, parse, schema,
                                        fractions, newest_span_eval, report_dir,
                                        _subfolders(input_base, file_pattern))
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

        return _write_reports(pipeline, parts, parsed.count, parsed.dead,
                              _subfolders(input_base, file_pattern), report_dir)

    def _generate_spans(self, pipeline, newest, older, input_base, parse, schema, fractions,
                        newest_span_eval, report_dir,
                        subfolders) -> dict[str, beam.PCollection]:
        """Several spans: the newest span's rows (`newest`, parsed) and the older spans'
        ([span, pattern] each); eval comes from the newest span only."""
        patterns = [os.path.join(input_base, pattern) for _, pattern in older]
        old = (pipeline
               | "OlderSpans" >> beam.Create(patterns)
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
            _ = (everything | "TimeRangeJson" >> beam.Map(json.dumps)
                 | "WriteTimeRange" >> beam.io.WriteToText(
                     os.path.join(report_dir, TIME_RANGE_FILE), shard_name_template=""))
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
        return _write_reports(pipeline, parts, counts, dead, subfolders, report_dir)

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        props = dict(exec_properties, **{_REPORT_DIR_KEY: examples.uri})
        data = read_custom_config(exec_properties)
        source = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        if has_span(data["file_pattern"]):
            newest = _resolved_newest_span(props, examples)
            older = older_spans(source, data["file_pattern"], newest,
                                _num_spans(exec_properties, data))
            props[_OLDER_SPANS_KEY] = json.dumps([[span, pattern] for span, pattern, _ in older])
            spans = [span for span, _, _ in older] + [newest]
            examples.set_string_custom_property(SPAN_PATTERN_PROPERTY, data["file_pattern"])
            examples.set_string_custom_property(SPANS_PROPERTY, ",".join(map(str, spans)))
            logging.info("reading span(s) %s of %s", spans, data["file_pattern"])
            if data.get("spans", {}).get("eval_split") == "newest_span" and not older:
                raise DataError(
                    f"data.spans.eval_split='newest_span' needs an older span to train on, "
                    f"but of data.file_pattern={data['file_pattern']!r} in {source} only the "
                    f"newest span {newest} has files within data.spans.num_spans="
                    f"{_num_spans(exec_properties, data)}")
        super().Do(input_dict, output_dict, props)
        counts = read_row_counts(examples.uri)
        for key, value in counts.items():
            examples.set_int_custom_property(f"rows_{key}", value)
        if counts["read"] == 0 and counts["empty_files"] == 0:
            raise ValueError(f"no file in {source} matches "
                             f"data.file_pattern={data['file_pattern']!r}{_not_read(counts)}")
        if counts["read"] > 0 and _not_read(counts):
            logging.warning("%s%s", source, _not_read(counts))
        check_rows(counts, data, data[_SPACE_KEY] == contract.IMPRESSION, source,
                   lambda: _first_dead_rows(examples.uri))
        check_splits(counts, data, _read_time_range(examples.uri))


def _write_reports(pipeline: beam.Pipeline, parts: list[beam.PCollection],
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


def _not_read(counts: Mapping[str, int]) -> str:
    """What data.path holds besides log files, as a message suffix."""
    folders = [k.split(":", 1)[1] for k in counts if k.startswith(f"{SUBFOLDER}:")]
    return "".join([
        f"; skipped {counts[SIDE_FILES]} Spark/Hadoop side or hidden file(s)"
        if counts.get(SIDE_FILES) else "",
        f"; not read: the subfolder(s) {folders} of data.path (a data.file_pattern with "
        "a '/' reaches into them, e.g. '*/*.csv')" if folders else ""])


def _resolved_newest_span(props: dict[str, Any], examples) -> int:
    """The newest span that TFX's driver resolved (its `span` exec property and the
    input config's pattern). Where no driver ran (an orchestrator that skips TFX's
    ExampleGen driver hook), resolved here the same way, into `props`."""
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(props[standard_component_specs.INPUT_CONFIG_KEY], input_config)
    if props.get(example_gen_utils.SPAN_PROPERTY_NAME) is not None and not has_span(
            input_config.splits[0].pattern):
        return int(props[example_gen_utils.SPAN_PROPERTY_NAME])
    processor = input_processor.FileBasedInputProcessor(
        props[standard_component_specs.INPUT_BASE_KEY], input_config.splits)
    span, version = processor.resolve_span_and_version()
    for split in input_config.splits:
        split.pattern = processor.get_pattern_for_span_version(split.pattern, span, version)
    props[standard_component_specs.INPUT_CONFIG_KEY] = proto_utils.proto_to_json(input_config)
    props[example_gen_utils.SPAN_PROPERTY_NAME] = span
    examples.set_int_custom_property(example_gen_utils.SPAN_PROPERTY_NAME, span)
    return span


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


def _split_keys(example: log_rows.Example, split: str) -> list[tuple[str, int]]:
    return [(f"{SPLIT}:{split}", 1)] + [(f"{SPLIT_POSITIVES}:{split}", 1)] * example.label


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


class Driver(example_gen_driver.FileBasedDriver):
    """TFX's FileBasedExampleGen driver (newest span, its fingerprint, its pattern), plus
    the fingerprints of the older spans a rolling range reads, so that a changed older
    span is a new input, not a cache hit. Local runs only: on Kubeflow TFX runs its own
    ExampleGen driver, whose fingerprint covers the newest span (docs/data-and-failures.md,
    Continuous training)."""

    def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
        data = read_custom_config(exec_properties)
        try:
            exec_properties = super().resolve_exec_properties(exec_properties, pipeline_info,
                                                              component_info)
        except ValueError as e:  # TFX: no file matches, or a path with no span number / date
            if not has_span(data["file_pattern"]):
                raise
            source = exec_properties[standard_component_specs.INPUT_BASE_KEY]
            raise DataError(f"cannot resolve the span of data.file_pattern="
                            f"{data['file_pattern']!r} in {source}: {e}. Each span's files match "
                            "the pattern with the span number or date in place of the "
                            "placeholders, e.g. day=3/ for 'day={SPAN}/*', day=2024-01-03/ for "
                            "'day={YYYY}-{MM}-{DD}/*'") from None
        if has_span(data["file_pattern"]):
            older = older_spans(exec_properties[standard_component_specs.INPUT_BASE_KEY],
                                data["file_pattern"],
                                int(exec_properties[example_gen_utils.SPAN_PROPERTY_NAME]),
                                _num_spans(exec_properties, data))
            key = example_gen_utils.FINGERPRINT_PROPERTY_NAME
            exec_properties[key] = "\n".join(
                [f"span {span}\n{fingerprint}" for span, _, fingerprint in older]
                + [exec_properties[key]])
        return exec_properties


class ClickLogExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    """TFX's FileBasedExampleGen spec plus `num_spans`: an exec property, so that it
    can be a run parameter on Kubeflow (a RuntimeParameter cannot sit in custom_config)."""

    PARAMETERS = {**standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
                  NUM_SPANS_KEY: ExecutionParameter(type=int, optional=True)}
    INPUTS: dict = {}
    OUTPUTS = {standard_component_specs.EXAMPLES_KEY:
               ChannelParameter(type=standard_artifacts.Examples)}


class ClickLogExampleGen(FileBasedExampleGen):
    """FileBasedExampleGen over impression logs; `data_config` is the config's `data`
    section, `space` "click" or "impression" (`PipelineConfig.space`), `num_spans` the
    number of newest spans to read (default `data_config`'s spans.num_spans; a
    RuntimeParameter on Kubeflow)."""

    SPEC_CLASS = ClickLogExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
    DRIVER_CLASS = Driver

    def __init__(self, input_base: str, data_config: dict[str, Any], pattern: str = "*",
                 space: str = contract.CLICK,
                 num_spans: int | data_types.RuntimeParameter | None = None):
        if num_spans is None:
            num_spans = int(data_config.get("spans", {}).get("num_spans", 1))
        spec = ClickLogExampleGenSpec(
            input_base=input_base,
            input_config=example_gen_pb2.Input(splits=[
                example_gen_pb2.Input.Split(name="logs", pattern=pattern)]),
            # Split names only: the executor assigns rows itself (time or hash).
            output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
                splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1)
                        for name in SPLITS])),
            # The executor reads the unresolved pattern here (TFX's driver resolves the
            # input config's to the newest span).
            custom_config=make_custom_config(dict(data_config, file_pattern=pattern), space),
            range_config=None,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            num_spans=num_spans,
            examples=types.Channel(type=standard_artifacts.Examples))
        # FileBasedExampleGen.__init__ builds TFX's spec, without num_spans: skip to its base.
        super(FileBasedExampleGen, self).__init__(spec=spec)
