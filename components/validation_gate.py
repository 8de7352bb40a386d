"""ValidationGate: stops the run before training when the data does not fit its schema.

Two checks, both TFDV anomalies of this run's statistics, per split:
- against the run's schema: ExampleValidator's anomalies (a schema SchemaGen inferred
  from these very statistics has none; a curated one, `data.schema_path`, may);
- against the schema of the last run that passed this gate (`baseline`, resolved
  from MLMD by the DAG's `latest_validated_schema_resolver`): drift since the last
  run — a column dropped or new, a type change, a feature now often missing, an
  unexpected categorical value.
Any anomaly fails the execution with the list in the message, so nothing
downstream runs. `runner.allow_anomalies` (exec property `allow_anomalies`) lets the
run proceed; the anomalies and the override are then recorded on the output.

The output `validated` is the schema that passed, a `Schema` artifact holding
`schema.pbtxt`: the next run's baseline. Its MLMD custom properties record the
verdict: `num_anomalies`, `overridden` (0/1) and `anomalies` (a JSON list of the
lines). A failed gate publishes nothing, so a run it stopped never becomes the next
run's baseline.
"""
from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.components.example_validator import executor as validator_executor
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils

BASELINE_KEY = "baseline"
VALIDATED_KEY = "validated"
ALLOW_ANOMALIES_KEY = "allow_anomalies"
SCHEMA_FILE = "schema.pbtxt"


class DataValidationError(ValueError):
    """The data has anomalies and the run was not told to proceed; lists them."""


class ValidationGateSpec(types.ComponentSpec):
    PARAMETERS = {ALLOW_ANOMALIES_KEY: ExecutionParameter(type=int)}
    INPUTS = {
        specs.STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics),
        specs.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
        specs.ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies),
        # Absent on a pipeline's first run.
        BASELINE_KEY: ChannelParameter(type=standard_artifacts.Schema, optional=True),
    }
    OUTPUTS = {VALIDATED_KEY: ChannelParameter(type=standard_artifacts.Schema)}


def describe(anomalies: anomalies_pb2.Anomalies, where: str) -> list[str]:
    """One line per anomalous feature (and one for the dataset), naming it."""
    lines = [f"{where}, feature {name!r}: {info.short_description}: {info.description}"
             for name, info in sorted(anomalies.anomaly_info.items())]
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        lines.append(f"{where}, dataset: {info.short_description}: {info.description}")
    return lines




def _validator_anomalies(anomalies: types.Artifact) -> list[str]:
    lines = []
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies], split),
                            validator_executor.DEFAULT_FILE_NAME)
        with tf.io.gfile.GFile(path, "rb") as f:
            lines += describe(anomalies_pb2.Anomalies.FromString(f.read()),
                              f"split {split!r} against this run's schema")
    return lines


def _drift(statistics: types.Artifact, baseline: types.Artifact) -> list[str]:
    schema = io_utils.SchemaReader().read(os.path.join(baseline.uri, SCHEMA_FILE))
    lines = []
    for split in artifact_utils.decode_split_names(statistics.split_names):
        stats = stats_artifact_utils.load_statistics(statistics, split).proto()
        lines += describe(tfdv.validate_statistics(stats, schema),
                          f"split {split!r} against the last validated schema ({baseline.uri})")
    return lines


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        statistics = artifact_utils.get_single_instance(input_dict[specs.STATISTICS_KEY])
        schema = artifact_utils.get_single_instance(input_dict[specs.SCHEMA_KEY])
        problems = _validator_anomalies(
            artifact_utils.get_single_instance(input_dict[specs.ANOMALIES_KEY]))
        baseline = input_dict.get(BASELINE_KEY) or []
        if baseline:
            problems += _drift(statistics, artifact_utils.get_single_instance(baseline))
        allowed = bool(exec_properties[ALLOW_ANOMALIES_KEY])
        if problems and not allowed:
            raise DataValidationError(
                f"data validation stopped the run before training: {len(problems)} "
                "anomalies in " + statistics.uri + ":\n- " + "\n- ".join(problems) +
                "\nFix the data or the config, or re-run with --set runner.allow_anomalies=true "
                "to train anyway (the next run is then checked against this data's schema).")

        validated = artifact_utils.get_single_instance(output_dict[VALIDATED_KEY])
        io_utils.write_pbtxt_file(
            os.path.join(validated.uri, SCHEMA_FILE),
            io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema.uri)))
        validated.set_int_custom_property("num_anomalies", len(problems))
        validated.set_string_custom_property("anomalies", json.dumps(problems))
        validated.set_int_custom_property("overridden", int(bool(problems)))


class ValidationGate(base_component.BaseComponent):
    """Fails on data anomalies unless `allow_anomalies`; output `validated` (a Schema)."""

    SPEC_CLASS = ValidationGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, statistics: types.BaseChannel, schema: types.BaseChannel,
                 anomalies: types.BaseChannel, baseline: types.BaseChannel | None,
                 allow_anomalies: bool):
        super().__init__(spec=ValidationGateSpec(
            statistics=statistics, schema=schema, anomalies=anomalies, baseline=baseline,
            allow_anomalies=int(allow_anomalies),
            validated=types.Channel(type=standard_artifacts.Schema)))
