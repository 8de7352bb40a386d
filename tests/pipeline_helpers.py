"""Helpers for tests that run TFX pipelines and read MLMD."""
from __future__ import annotations

from ml_metadata import metadata_store
from tfx import v1 as tfx

from pfdx.components.click_log_example_gen import ClickLogExampleGen
from pfdx.config import PipelineConfig, load_config

# Beam in-memory: TFX start-up, not data, dominates small pipeline tests.
FAST = ["runner.direct_running_mode=in_memory", "runner.direct_num_workers=1",
        # Per-run tuning trains its fixed candidates only: the strategy without
        # distillation (the student alone's trial is read off it) and at its configured
        # values (models/tuning.py).
        "tuning.grid={}", "tuning.max_trials=0"]


def make_config(tmp_path, *overrides: str) -> PipelineConfig:
    return load_config(None, [f"runner.output_root={tmp_path}", *FAST, *overrides])


def store(config: PipelineConfig) -> metadata_store.MetadataStore:
    return metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path))


def latest(config: PipelineConfig, type_name: str):
    arts = store(config).get_artifacts_by_type(type_name)
    assert arts, f"no {type_name} artifact in MLMD"
    return max(arts, key=lambda a: a.id)


def int_props(artifact) -> dict[str, int]:
    return {k: v.int_value for k, v in artifact.custom_properties.items()
            if v.HasField("int_value")}


def run_example_gen(config: PipelineConfig, input_base: str) -> None:
    """A pipeline of ClickLogExampleGen alone, on `input_base`."""
    gen = ClickLogExampleGen(input_base=input_base, data_config=config.to_dict()["data"],
                             pattern=config.data.file_pattern)
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="example_gen_only", pipeline_root=config.pipeline_root, components=[gen],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path),
        beam_pipeline_args=config.beam_pipeline_args))
