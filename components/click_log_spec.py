"""ClickLogExampleGen's spec and what its driver and executor read from it: TFX's
FileBasedExampleGen spec plus `num_spans`, and the pipeline's `data` config section
with the example space, packed into the spec's custom config."""
from __future__ import annotations

import json
from typing import Any, Mapping

from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import proto_utils

from pfdx.features import contract

# The custom config's key for the example space, beside the `data` section's own keys.
SPACE_KEY = "space"
# The exec property with the number of newest spans to read (data.spans.num_spans; a
# run parameter on Kubeflow).
NUM_SPANS_KEY = "num_spans"


class ClickLogExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    """TFX's FileBasedExampleGen spec plus `num_spans`: an exec property, so that it
    can be a run parameter on Kubeflow (a RuntimeParameter cannot sit in custom_config)."""

    PARAMETERS = {**standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
                  NUM_SPANS_KEY: ExecutionParameter(type=int, optional=True)}
    INPUTS: dict = {}
    OUTPUTS = {standard_component_specs.EXAMPLES_KEY:
               ChannelParameter(type=standard_artifacts.Examples)}


def make_custom_config(data_config: dict[str, Any],
                       space: str = contract.CLICK) -> example_gen_pb2.CustomConfig:
    """Packs the pipeline's `data` config section and the example space ("click" or
    "impression", `PipelineConfig.space`) into ExampleGen's CustomConfig."""
    struct = struct_pb2.Struct()
    struct.update(json.loads(json.dumps(dict(data_config, **{SPACE_KEY: space}))))
    packed = any_pb2.Any()
    packed.Pack(struct)
    return example_gen_pb2.CustomConfig(custom_config=packed)


def read_custom_config(exec_properties: Mapping[str, Any]) -> dict[str, Any]:
    custom = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.CUSTOM_CONFIG_KEY], custom)
    struct = struct_pb2.Struct()
    custom.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


def num_spans(exec_properties: Mapping[str, Any], data: Mapping[str, Any]) -> int:
    """The run's `num_spans`, else the `data` section's spans.num_spans."""
    value = exec_properties.get(NUM_SPANS_KEY)
    return int(value if value is not None else data.get("spans", {}).get("num_spans", 1))
