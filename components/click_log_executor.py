"""ClickLogExampleGen's executor: TFX's ExampleGen executor with its own Beam job
(`components/click_log_transforms.py`), the spans to read (`components/click_log_spans.py`),
and the data rules checked on the counts the job wrote (`components/data_rules.py`)."""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from pfdx.components import click_log_outputs as outputs
from pfdx.components import click_log_spans as spans
from pfdx.components import click_log_transforms as transforms
from pfdx.components import log_rows
from pfdx.components.click_log_spec import SPACE_KEY, read_custom_config
from pfdx.components.data_rules import check_rows, check_splits
from pfdx.features import contract

# Exec properties Do hands its Beam job: the Examples artifact's folder, where the
# report files go, and the older spans' [span, resolved pattern].
_REPORT_DIR_KEY = "_pfdx_report_dir"
_OLDER_SPANS_KEY = "_pfdx_older_spans"


class Executor(BaseExampleGenExecutor):
    """Reads, validates, filters to clicks, splits; see components/click_log_example_gen.py."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("ClickLogExampleGen overrides GenerateExamplesByBeam")

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline,
                               exec_properties: dict[str, Any]) -> dict[str, beam.PCollection]:
        data = read_custom_config(exec_properties)
        schema = log_rows.RowSchema.from_config(data, data[SPACE_KEY])
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                                  input_config)
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        # The newest span's pattern (TFX's driver resolved it), or the whole folder's.
        file_pattern = input_config.splits[0].pattern
        parse = transforms.ParseLogFile(schema, data["format"], data["separator"])
        parsed = transforms.read_logs(pipeline, os.path.join(input_base, file_pattern), parse)

        report_dir = exec_properties[_REPORT_DIR_KEY]
        fractions = float(data["eval_fraction"]), float(data["validation_fraction"])
        older = json.loads(exec_properties.get(_OLDER_SPANS_KEY) or "[]")
        if older:
            parts, counts, dead = transforms.split_span_rows(
                pipeline, parsed, [os.path.join(input_base, pattern) for _, pattern in older],
                parse, schema, fractions,
                data.get("spans", {}).get("eval_split") == "newest_span", report_dir)
        else:
            parts = transforms.split_rows(parsed, schema, fractions, report_dir)
            counts, dead = parsed.count, parsed.dead
        return transforms.write_reports(pipeline, parts, counts, dead,
                                        _subfolders(input_base, file_pattern), report_dir)

    def Do(self, input_dict, output_dict, exec_properties) -> None:
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY])
        props = dict(exec_properties, **{_REPORT_DIR_KEY: examples.uri})
        data = read_custom_config(exec_properties)
        source = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        if spans.has_span(data["file_pattern"]):
            props[_OLDER_SPANS_KEY] = json.dumps(spans.resolve_spans(props, examples, data))
        super().Do(input_dict, output_dict, props)
        counts = outputs.read_row_counts(examples.uri)
        for key, value in counts.items():
            examples.set_int_custom_property(f"rows_{key}", value)
        not_read = outputs.not_read(counts)
        if counts["read"] == 0 and counts["empty_files"] == 0:
            raise ValueError(f"no file in {source} matches "
                             f"data.file_pattern={data['file_pattern']!r}{not_read}")
        if counts["read"] > 0 and not_read:
            logging.warning("%s%s", source, not_read)
        check_rows(counts, data, data[SPACE_KEY] == contract.IMPRESSION, source,
                   lambda: outputs.first_dead_rows(examples.uri))
        check_splits(counts, data, outputs.read_time_range(examples.uri))


def _subfolders(input_base: str, pattern: str) -> list[str]:
    """Folders directly in data.path, unless `pattern` reaches into folders ('/')."""
    if "/" in pattern:
        return []
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(input_base)
                  if tf.io.gfile.isdir(os.path.join(input_base, name)))
