"""PrivilegedFeatureSelection: HA-PFD §3.3 (Eq. 8 thresholds, Eq. 9 ranking) as a TFX component.

Reads the train split of ExampleGen's output with a Beam job
(features/selection_beam.py) and writes a `PrivilegedFeatureSelectionResult`
artifact: `selection.json` (per candidate threshold, gap, MI in nats, rank,
chosen or dropped and why, exact or bucketed, support, missing count; the final
feature list and OR-groups) and `mi.png`. The Transform reads it with
`load_selection`. Only the train split is read, so the choice never sees eval rows.

Continuous training: given the `base_model` a run warm-starts from, the selection
that model's teacher was trained on is carried over (nothing is read; the result
says `carried_over_from`, MLMD `carried_over`) as long as the policy (`selection.*`,
the candidate columns) is unchanged. Refitted on each span, HA-PFD Eq. 8's thresholds
(exact data values) would move every day, and a teacher whose inputs change meaning
cannot continue (models/warm_start.py). A changed policy, a forced cold start or a
first run fits it afresh.
"""
from __future__ import annotations

import json
import os
from typing import Any

from tfx import types
from tfx.components.util import tfxio_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.types import artifact, artifact_utils, standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils

from pfdx.config import PipelineConfig, from_dict
from pfdx.features import selection_beam, selection_report
from pfdx.features import selection_policy as policy
from pfdx.models import warm_start
from pfdx.features.selection_report import load_selection  # noqa: F401  (the consumers' reader)

SELECTION_KEY = "selection"
SELECTION_CONFIG_KEY = "selection_config"
COLUMN_ROLES_KEY = "column_roles"
TRAIN_SPLIT = "train"


class PrivilegedFeatureSelectionResult(artifact.Artifact):
    """selection.json + mi.png (features/selection_report.py has the format)."""

    # KFP v2 needs custom type names of the form <namespace>.<Title>.
    TYPE_NAME = "pfdx.PrivilegedFeatureSelectionResult"


class PrivilegedFeatureSelectionSpec(types.ComponentSpec):
    PARAMETERS = {
        # The config's `selection` section and `data.columns` roles, as JSON.
        SELECTION_CONFIG_KEY: ExecutionParameter(type=str),
        COLUMN_ROLES_KEY: ExecutionParameter(type=str),
    }
    INPUTS = {
        specs.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        # Optional: when given, column types are checked against it before reading.
        specs.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema, optional=True),
        # Optional: the model a warm start continues, whose selection is carried over.
        specs.BASE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {
        SELECTION_KEY: ChannelParameter(type=PrivilegedFeatureSelectionResult),
    }


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        config = from_dict({"selection": json.loads(exec_properties[SELECTION_CONFIG_KEY]),
                            "data": {"columns": json.loads(exec_properties[COLUMN_ROLES_KEY])}})
        roles = config.data.columns
        if input_dict.get(specs.SCHEMA_KEY):
            schema_uri = artifact_utils.get_single_uri(input_dict[specs.SCHEMA_KEY])
            schema_file = io_utils.get_only_uri_in_dir(schema_uri)
            selection_beam.check_schema(io_utils.SchemaReader().read(schema_file), roles,
                                        schema_file)
        result_artifact = artifact_utils.get_single_instance(output_dict[SELECTION_KEY])
        base = input_dict.get(specs.BASE_MODEL_KEY)
        result = carried_over(base[0].uri, config) if base else None
        result_artifact.set_int_custom_property("carried_over", int(result is not None))
        if result is None:
            examples = artifact_utils.get_single_instance(input_dict[specs.EXAMPLES_KEY])
            split_uri = artifact_utils.get_split_uri([examples], TRAIN_SPLIT)
            make_tfxio = tfxio_utils.get_tfxio_factory_from_artifact([examples],
                                                                     selection_beam.TELEMETRY)
            result = selection_beam.run_job(
                self._make_beam_pipeline(), make_tfxio(io_utils.all_files_pattern(split_uri)),
                config.selection, roles, result_artifact.uri, split_uri)
        selection_report.write_report(
            result, os.path.join(result_artifact.uri, selection_report.SELECTION_FILE),
            os.path.join(result_artifact.uri, selection_report.CHART_FILE))
        # In MLMD too, so a run can be compared without opening the files.
        result_artifact.set_string_custom_property("selected", ",".join(result["selected"]))
        result_artifact.set_int_custom_property("num_selected", len(result["selected"]))
        result_artifact.set_int_custom_property("clicked_rows", result["rows"]["clicked"])


def carried_over(base_model_uri: str, config: PipelineConfig) -> dict[str, Any] | None:
    """The selection saved with the base model, when its policy is this run's (None:
    fit afresh)."""
    base = warm_start.base_selection(base_model_uri)
    if base is None or base["policy"] != policy.policy_record(config.selection,
                                                              config.data.columns):
        return None
    return {**base, "carried_over_from": base_model_uri}


class PrivilegedFeatureSelection(base_beam_component.BaseBeamComponent):
    """Selects the teacher's privileged features; output `selection`."""

    SPEC_CLASS = PrivilegedFeatureSelectionSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, examples: types.BaseChannel, config: PipelineConfig,
                 schema: types.BaseChannel | None = None,
                 base_model: types.BaseChannel | None = None):
        super().__init__(spec=PrivilegedFeatureSelectionSpec(
            examples=examples, schema=schema, base_model=base_model,
            selection_config=json.dumps(config.to_dict()["selection"], sort_keys=True),
            column_roles=json.dumps(config.to_dict()["data"]["columns"], sort_keys=True),
            selection=types.Channel(type=PrivilegedFeatureSelectionResult)))
