"""Run parameters of the Kubeflow pipeline: what may change between runs without recompiling.

They are KFP runtime parameters (TFX `RuntimeParameter`): inputs of the compiled
pipeline, set per run or per recurring run, defaulting to the compiled config.
- `data_path` is ExampleGen's `input_base`: which logs this run trains on.
- `num_spans`, declared only when `data.file_pattern` has a span placeholder
  ({SPAN}, {YYYY}-{MM}-{DD}): how many newest spans ExampleGen reads
  (`data.spans.num_spans`; ClickLogExampleGen's `num_spans` exec property). The
  eval split's setting (`data.spans.eval_split`) and the pattern are compiled in.
- The hyperparameters (the signature of `RunHyperparameters` below) reach the
  Trainer through the `hyperparameters` input TFX's Trainer already has: it loads
  the JSON file of that artifact into `fn_args.hyperparameters`, and the Trainer's
  run_fn applies each entry as a `model.<setting>` override of the pipeline config
  (`HYPERPARAMETERS`: a run parameter is an identifier, `kd_lam` sets `model.kd.lam`).
  A small component writes that file, because a RuntimeParameter cannot sit inside
  the Trainer's `custom_config` (one JSON string of the whole config).
"""
# No `from __future__ import annotations`: TFX's @component reads the signature's
# annotations as types, and string annotations fail its checks.
import json
import os

from tfx import v1 as tfx
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs

from pfdx.config import PipelineConfig, span_specs

DATA_PATH = "data_path"
NUM_SPANS = "num_spans"
HYPERPARAMETERS_FILE = "hyperparameters.json"
STEP_ID = "run_hyperparameters"


# Run parameter -> the model setting it overrides: the component's parameters below.
HYPERPARAMETERS = {"strategy": "strategy", "epochs": "epochs", "kd_gamma": "kd.gamma",
                   "kd_lam": "kd.lam"}


@component
def RunHyperparameters(
        hyperparameters: OutputArtifact[tfx.types.standard_artifacts.HyperParameters],
        strategy: Parameter[str], epochs: Parameter[int], kd_gamma: Parameter[float],
        kd_lam: Parameter[float]) -> None:
    """Writes this run's `model.*` overrides where the Trainer reads them."""
    values = dict(strategy=strategy, epochs=epochs, kd_gamma=kd_gamma, kd_lam=kd_lam)
    with fileio.open(os.path.join(hyperparameters.uri, HYPERPARAMETERS_FILE), "w") as f:
        json.dump({HYPERPARAMETERS[k]: v for k, v in values.items()}, f, sort_keys=True)


def declare(config: PipelineConfig) -> dict[str, tfx.dsl.experimental.RuntimeParameter]:
    """Every run parameter, by name, defaulting to `config`'s value."""
    params = {DATA_PATH: tfx.dsl.experimental.RuntimeParameter(
        name=DATA_PATH, ptype=str, default=config.kubeflow.data_path)}
    if span_specs(config.data.file_pattern):
        params[NUM_SPANS] = tfx.dsl.experimental.RuntimeParameter(
            name=NUM_SPANS, ptype=int, default=config.data.spans.num_spans)
    for name, spec in RunHyperparameters.SPEC_CLASS.PARAMETERS.items():
        params[name] = tfx.dsl.experimental.RuntimeParameter(
            name=name, ptype=spec.type,
            default=spec.type(config.model.get(HYPERPARAMETERS[name])))
    return params


def with_hyperparameters(components: list, trainer: tfx.components.Trainer,
                         params: dict[str, tfx.dsl.experimental.RuntimeParameter]) -> list:
    """`components` plus a RunHyperparameters step that feeds `trainer`'s hyperparameters.

    The shared DAG (dag.py) leaves the Trainer's optional `hyperparameters` input
    unset; setting it here keeps the local DAG free of Kubeflow-only steps.
    """
    step = RunHyperparameters(**{name: params[name] for name in HYPERPARAMETERS}).with_id(STEP_ID)
    trainer.inputs[standard_component_specs.HYPERPARAMETERS_KEY] = step.outputs["hyperparameters"]
    return [step, *components]
