"""ClickLogExampleGen: raw impression logs (CSV / Parquet / TFRecord) -> tf.Examples.

A FileBasedExampleGen with its own Beam executor, so it keeps TFX's file
fingerprinting (a changed log is a new input; an unchanged one is served from
cache) and Examples artifact, and adds what CVR training needs:
- types from the config's column roles, not guessed from the first rows
  (a numeric user id stays a categorical string);
- click space: only clicked impressions become examples; impression space (the
  TAML / UKD strategies): every impression does, with its click label;
- a time split (last `eval_fraction` of the time range is eval) or a hash split;
- a dead-letter output: every rejected row with file, row and reason, and counts
  that reconcile (read = used + unclicked + quarantined), stored as custom
  properties of the Examples artifact in MLMD and as `row_counts.json`;
- a failed run, not a quietly smaller one, when no clicked row survives or more
  than `data.max_quarantined_fraction` of them is quarantined (a drifted or
  misread log): the message names the first dead-letter rows (file, row, field).
"""
from __future__ import annotations

import collections
import json
import os
import zlib
from typing import Any, Iterable

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

from pfdx.components import log_rows

TRAIN, EVAL = "train", "eval"
DEAD_LETTER_DIR = "dead_letter"
COUNTS_FILE = "row_counts.json"
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
    """One readable file -> tagged rows: 'used' (time, bytes), 'dead' JSON, 'count' keys."""

    def __init__(self, schema: log_rows.RowSchema, fmt: str, separator: str):
        self._schema, self._fmt, self._sep = schema, fmt, separator

    def process(self, readable: fileio.ReadableFile) -> Iterable[Any]:
        path = readable.metadata.path
        rows = 0
        with readable.open(compression_type="uncompressed") as stream:
            if self._fmt == "csv":
                it = log_rows.read_csv(path, stream, self._sep, self._schema)
            elif self._fmt == "parquet":
                it = log_rows.read_parquet(path, stream, self._schema)
            else:
                it = log_rows.read_tfrecord(path, stream, self._schema)
            # CSV/Parquet name their columns in a header; a TFRecord's show per record.
            unknown = set(self._unknown_columns(path)) if self._fmt in ("csv", "parquet") else set()
            for row, record in it:
                rows += 1
                yield beam.pvalue.TaggedOutput("count", "read")
                if isinstance(record, str):
                    status, payload = log_rows.QUARANTINED, record
                else:
                    if self._fmt == "tfrecord":
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

    def _unknown_columns(self, path: str) -> list[str]:
        # Headers are cheap to re-read; this keeps the row readers single-purpose.
        import pyarrow.parquet as pq
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path, compression_type="uncompressed") as f:
            if self._fmt == "parquet":
                header = pq.ParquetFile(f).schema_arrow.names
            else:
                first = f.readline().decode("utf-8", "replace").rstrip("\r\n")
                header = [h.strip() for h in first.split(self._sep)] if first else []
        return [c for c in header if c not in self._schema.known]


def _eval_cutoff(bounds: tuple[float, float], eval_fraction: float) -> float:
    lo, hi = bounds
    return hi - eval_fraction * (hi - lo)


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


def _by_time(record, n, cutoff):
    return int(record[0] >= cutoff)


def _by_hash(record, n, eval_fraction):
    # crc32 of the serialized example: deterministic across runs and workers.
    return int((zlib.crc32(record[1]) % 10_000) < eval_fraction * 10_000)


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
        pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY],
                               input_config.splits[0].pattern)
        parsed = (pipeline
                  | "MatchLogs" >> fileio.MatchFiles(pattern)
                  | "ReadMatches" >> fileio.ReadMatches()
                  | "Reshuffle" >> beam.Reshuffle()  # spread files over workers
                  | "ParseRows" >> beam.ParDo(_ParseFile(schema, data["format"], data["separator"]))
                  .with_outputs("dead", "count", main="used"))

        report_dir = exec_properties[_REPORT_DIR_KEY]
        _ = (parsed.dead
             | "WriteDeadLetter" >> beam.io.WriteToText(
                 os.path.join(report_dir, DEAD_LETTER_DIR, "rows"), file_name_suffix=".jsonl"))
        _ = (parsed.count
             | "CountRows" >> beam.combiners.Count.PerElement()
             | "ToDict" >> beam.combiners.ToDict()
             | "CountsJson" >> beam.Map(lambda d: json.dumps(dict(sorted(d.items())), indent=2))
             | "WriteCounts" >> beam.io.WriteToText(
                 os.path.join(report_dir, COUNTS_FILE), shard_name_template=""))

        eval_fraction = float(data["eval_fraction"])
        if schema.time is not None:
            bounds = (parsed.used | "Times" >> beam.Map(lambda r: r[0])
                      | "TimeRange" >> beam.CombineGlobally(_MinMax()))
            cutoff = bounds | "Cutoff" >> beam.Map(_eval_cutoff, eval_fraction)
            splits = parsed.used | "SplitByTime" >> beam.Partition(
                _by_time, 2, beam.pvalue.AsSingleton(cutoff))
        else:
            splits = parsed.used | "SplitByHash" >> beam.Partition(_by_hash, 2, eval_fraction)
        return {name: split | f"Payload[{name}]" >> beam.Map(lambda r: r[1])
                for name, split in zip((TRAIN, EVAL), splits)}

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
                             f"data.file_pattern={data['file_pattern']!r}")
        if counts["used"] == 0:
            raise ValueError(f"no clicked rows were read from {source} (row counts: {counts})"
                             f"{_first_dead_rows(examples.uri)}")
        bad, limit = counts[log_rows.QUARANTINED], float(data["max_quarantined_fraction"])
        kept = counts[log_rows.USED] + (
            counts[log_rows.UNCLICKED] if data[_SPACE_KEY] == "impression" else 0)
        if bad > limit * (kept + bad):
            raise ValueError(
                f"{bad} of the {kept + bad} usable or unusable rows read "
                f"from {source} were quarantined, more than "
                f"data.max_quarantined_fraction={limit:g} (row counts: {counts})"
                f"{_first_dead_rows(examples.uri)}")


def _first_dead_rows(examples_uri: str, n: int = 5) -> str:
    """The first `n` dead-letter rows as message lines (file:row: reason). Read
    before failing: TFX deletes a failed execution's outputs, dead letter included."""
    pattern = os.path.join(examples_uri, DEAD_LETTER_DIR, "*")
    lines = []
    for path in sorted(tf.io.gfile.glob(pattern)):
        with tf.io.gfile.GFile(path) as f:
            for line in f:
                dead = json.loads(line)
                lines.append(f"\n  {dead['file']}:{dead['row']}: {dead['reason']}")
                if len(lines) == n:
                    break
        if len(lines) == n:
            break
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
                splits=[example_gen_pb2.SplitConfig.Split(name=TRAIN, hash_buckets=1),
                        example_gen_pb2.SplitConfig.Split(name=EVAL, hash_buckets=1)])),
            custom_config=make_custom_config(data_config, space))
