"""Spans of ClickLogExampleGen (docs/data-and-failures.md, Continuous training).

With TFX's span placeholders in `data.file_pattern` (`day={SPAN}/*.csv`,
`day={YYYY}-{MM}-{DD}/*.csv`) TFX's driver resolves the newest span (its `span`
property and input fingerprint). A rolling range of `num_spans` > 1 adds the older
spans L-N+1 .. L-1 that exist, resolved with TFX's
`calculate_splits_fingerprint_span_and_version`, one static range each; `Driver` adds
their fingerprints to the cache key, and `resolve_spans` hands them to the executor
and records the spans read on the Examples artifact.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import input_processor
from tfx.components.example_gen import utils as example_gen_utils
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from pfdx.components import click_log_spec as spec
from pfdx.components.data_rules import DataError

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


def resolve_spans(props: dict[str, Any], examples, data: Mapping[str, Any]) -> list[list]:
    """The executor's spans: the newest (resolved into `props` where no driver ran) and
    the older ones of the rolling range, recorded on `examples`; returns [span,
    resolved pattern] of each older span, oldest first."""
    source = props[standard_component_specs.INPUT_BASE_KEY]
    newest = _resolved_newest_span(props, examples)
    older = older_spans(source, data["file_pattern"], newest, spec.num_spans(props, data))
    spans = [span for span, _, _ in older] + [newest]
    examples.set_string_custom_property(SPAN_PATTERN_PROPERTY, data["file_pattern"])
    examples.set_string_custom_property(SPANS_PROPERTY, ",".join(map(str, spans)))
    logging.info("reading span(s) %s of %s", spans, data["file_pattern"])
    if data.get("spans", {}).get("eval_split") == "newest_span" and not older:
        raise DataError(
            f"data.spans.eval_split='newest_span' needs an older span to train on, "
            f"but of data.file_pattern={data['file_pattern']!r} in {source} only the "
            f"newest span {newest} has files within data.spans.num_spans="
            f"{spec.num_spans(props, data)}")
    return [[span, pattern] for span, pattern, _ in older]


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


class Driver(example_gen_driver.FileBasedDriver):
    """TFX's FileBasedExampleGen driver (newest span, its fingerprint, its pattern), plus
    the fingerprints of the older spans a rolling range reads, so that a changed older
    span is a new input, not a cache hit. Local runs only: on Kubeflow TFX runs its own
    ExampleGen driver, whose fingerprint covers the newest span (docs/data-and-failures.md,
    Continuous training)."""

    def resolve_exec_properties(self, exec_properties, pipeline_info, component_info):
        data = spec.read_custom_config(exec_properties)
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
                                spec.num_spans(exec_properties, data))
            key = example_gen_utils.FINGERPRINT_PROPERTY_NAME
            exec_properties[key] = "\n".join(
                [f"span {span}\n{fingerprint}" for span, _, fingerprint in older]
                + [exec_properties[key]])
        return exec_properties
