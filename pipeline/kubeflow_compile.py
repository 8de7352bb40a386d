"""Compiles the pfdx DAG into a KFP v2 pipeline spec for Kubeflow Pipelines (or Vertex AI).

`KubeflowV2DagRunner` only compiles: it writes a PipelineJob JSON (the pipeline
spec plus its default run values); scheduling it is `pfdx schedule`. The DAG is
dag.py's; this module adds only what differs on a cluster:
- the image every component runs in (this package baked in, see Dockerfile);
- the run parameters (kubeflow_params): data path, the number of spans read (when
  data.file_pattern has span placeholders) and hyperparameters per run;
- the Trainer's GPUs, through TFX's supported per-component `platform_config`
  (a ResourceSpec that the V2 compiler copies into the Trainer's container spec);
- the Beam runner and its flags for every Beam-based component.
"""
from __future__ import annotations

import os
from typing import Any

from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx

from pfdx.config import ConfigError, KubeflowConfig, PipelineConfig
from pfdx.pipeline import dag, kubeflow_params

_ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec

# Flags only the site knows, per runner; compiling without them fails naming them.
REQUIRED_BEAM_FLAGS = {
    "DirectRunner": (),
    "DataflowRunner": ("--project", "--region", "--temp_location"),
    # Flink and Spark start Python SDK workers that must run this image (pfdx's
    # DoFns): EXTERNAL (a worker-pool sidecar of the image) or DOCKER (--environment_config=IMAGE).
    "FlinkRunner": ("--flink_master", "--environment_type"),
    "SparkRunner": ("--spark_rest_url", "--environment_type"),
}


def _runner_flags(runner: str, image: str) -> list[str]:
    """Flags pfdx always passes to `runner`, before the site's own (which may override)."""
    fixed = {
        # Dataflow workers run the pipeline image: pfdx and the locked stack are in it.
        "DataflowRunner": [f"--sdk_container_image={image}"],
        # The image has no JVM to start a job server: submit through the cluster's REST API.
        "FlinkRunner": ["--flink_submit_uber_jar"],
        "SparkRunner": ["--spark_submit_uber_jar"],
    }
    return [f"--runner={runner}", *fixed[runner]]


def beam_pipeline_args(config: PipelineConfig) -> list[str]:
    """Beam flags of every Beam-based component on the cluster."""
    kf = config.kubeflow
    unknown = sorted({kf.beam_runner, *kf.beam_args} - set(REQUIRED_BEAM_FLAGS))
    if unknown:
        raise ConfigError(f"kubeflow.beam_runner/beam_args: unknown Beam runner(s) {unknown}; "
                          f"known: {', '.join(REQUIRED_BEAM_FLAGS)}")
    site = list(kf.beam_args.get(kf.beam_runner, ()))
    missing = [flag for flag in REQUIRED_BEAM_FLAGS[kf.beam_runner]
               if not any(arg == flag or arg.startswith(flag + "=") for arg in site)]
    if missing:
        raise ConfigError(f"kubeflow.beam_args.{kf.beam_runner}: missing {', '.join(missing)} "
                          f"(needed by {kf.beam_runner}; see README, Run on Kubeflow)")
    if kf.beam_runner == "DirectRunner":
        # Beam inside each component's pod, one worker process per core, as locally.
        return config.beam_pipeline_args + site
    return _runner_flags(kf.beam_runner, kf.image) + site


def _check(kf: KubeflowConfig) -> None:
    if not kf.image:
        raise ConfigError("kubeflow.image is not set (--image): TFX's default image has no "
                          "pfdx, its components would fail with ModuleNotFoundError")
    uris = {"pipeline_root": kf.pipeline_root, "data_path": kf.data_path}
    if kf.serving_dir is not None:  # None: under pipeline_root
        uris["serving_dir"] = kf.serving_dir
    for key, value in uris.items():
        if not value or "://" not in value:
            raise ConfigError(f"kubeflow.{key}: {value!r} is not a shared URI such as "
                              "gs://bucket/path (each component runs in its own pod)")
    if kf.trainer_gpus < 0:
        raise ConfigError(f"kubeflow.trainer_gpus: {kf.trainer_gpus} is negative")


def serving_dir(kf: KubeflowConfig) -> str:
    return kf.serving_dir or kf.pipeline_root.rstrip("/") + "/serving"


def _trainers(components: list) -> list[tfx.components.Trainer]:
    """The DAG's Trainers in order: the student's last (UKD's teacher first)."""
    trainers = [c for c in components if isinstance(c, tfx.components.Trainer)]
    if not trainers:
        raise ValueError(f"pipeline/dag.py: no Trainer among {[c.id for c in components]}")
    return trainers


def create_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    """The DAG of dag.py with the cluster settings of `config.kubeflow`."""
    kf = config.kubeflow
    _check(kf)
    beam_args = beam_pipeline_args(config)
    params = kubeflow_params.declare(config)
    components = dag.create_components(config, params[kubeflow_params.DATA_PATH], serving_dir(kf),
                                       num_spans=params.get(kubeflow_params.NUM_SPANS))
    trainers = _trainers(components)
    if kf.trainer_gpus:
        for trainer in trainers:
            trainer.with_platform_config(_ResourceSpec(
                accelerator=_ResourceSpec.AcceleratorConfig(type=kf.gpu_type,
                                                            count=kf.trainer_gpus)))
    return tfx.dsl.Pipeline(
        pipeline_name=config.runner.pipeline_name,
        pipeline_root=kf.pipeline_root,
        # Run parameters tune the student's Trainer (UKD's teacher keeps the compiled config).
        components=kubeflow_params.with_hyperparameters(components, trainers[-1], params),
        enable_cache=config.runner.enable_cache,
        beam_pipeline_args=beam_args)


def compile_pipeline(config: PipelineConfig, out: str) -> dict[str, Any]:
    """Writes the PipelineJob JSON to `out` and returns it."""
    if not out.endswith(".json"):
        raise ConfigError(f"--out {out}: expected a .json file "
                          "(the PipelineJob that `pfdx schedule` reads)")
    pipeline = create_pipeline(config)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=config.kubeflow.image,
            # Kubeflow Pipelines 2.x accepts only pipeline spec schema 2.1.0.
            use_pipeline_spec_2_1=True),
        output_dir=os.path.dirname(os.path.abspath(out)), output_filename=os.path.basename(out))
    # The compiled config's values become the job's default run parameters.
    defaults = {name: p.default for name, p in kubeflow_params.declare(config).items()}
    return runner.run(pipeline, parameter_values=defaults)
