"""The one pfdx TFX pipeline definition, shared by every runner (local, Kubeflow)."""
from __future__ import annotations

from tfx import v1 as tfx

from pfdx.components.click_log_example_gen import ClickLogExampleGen
from pfdx.config import PipelineConfig


def create_components(config: PipelineConfig, input_base: str) -> list:
    """Components in DAG order; runners add only runner-specific settings."""
    example_gen = ClickLogExampleGen(input_base=input_base,
                                     data_config=config.to_dict()["data"],
                                     pattern=config.data.file_pattern)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"],
                                          infer_feature_shape=True)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    return [example_gen, statistics_gen, schema_gen, example_validator]


def create_pipeline(config: PipelineConfig, input_base: str, pipeline_root: str,
                    metadata_connection_config=None,
                    beam_pipeline_args: list[str] | None = None) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=config.runner.pipeline_name,
        pipeline_root=pipeline_root,
        components=create_components(config, input_base),
        enable_cache=config.runner.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
