"""PrivilegedTransform: TFX's Transform with the feature-selection artifact as an input.

Stock Transform takes its `custom_config` at DAG-build time, but which privileged
features to keep, and their thresholds, are only known once
PrivilegedFeatureSelection has run. This component is Transform's own spec plus a
`selection` input channel; its executor reads the selection artifact, completes
the custom_config and hands over to the stock Transform executor — so lineage
records that the transform graph depends on the selection.

It also takes StatisticsGen's statistics: a hashed feature's table is sized to the
distinct values of the train split (features/transform.py `sized_hash_config`), which
TFDV has counted already.

Its one output is the transform graph, with a copy of the selection it applied
(`selection.json`): the Trainer keeps it beside its joint models, so the next run
can tell whether the teacher's inputs still mean the same (models/warm_start.py);
and the hashed tables' rows (`hash_rows.json`), which the Trainer builds them with.
The stock spec's `transformed_examples` is not declared: TFX 1.16 materializes the
transformed data whenever that output exists (`transform/executor.py`), and nothing
would read it -- the Trainer and `pfdx compare` apply the graph's TFT layer to the
raw examples in tf.data (models/datasets.py `transformed_dataset`).
"""
from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.components.transform import executor as transform_executor
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts, standard_component_specs as specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import json_utils

from pfdx.components import splits
from pfdx.components.privileged_feature_selection import (PrivilegedFeatureSelectionResult,
                                                          load_selection)
from pfdx.features import selection_report, transform

SELECTION_KEY = "selection"
_PREPROCESSING_FN = "pfdx.features.transform.preprocessing_fn"


class PrivilegedTransformSpec(types.ComponentSpec):
    PARAMETERS = {
        # The regular-feature half of the preprocessing config (plain JSON).
        specs.CUSTOM_CONFIG_KEY: ExecutionParameter(type=str),
        specs.PREPROCESSING_FN_KEY: ExecutionParameter(type=str),
        specs.DISABLE_STATISTICS_KEY: ExecutionParameter(type=int, optional=True),
        specs.FORCE_TF_COMPAT_V1_KEY: ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        specs.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        specs.SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema),
        specs.STATISTICS_KEY: ChannelParameter(type=standard_artifacts.ExampleStatistics),
        SELECTION_KEY: ChannelParameter(type=PrivilegedFeatureSelectionResult),
    }
    OUTPUTS = {
        specs.TRANSFORM_GRAPH_KEY: ChannelParameter(type=standard_artifacts.TransformGraph),
    }


class Executor(transform_executor.Executor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        input_dict = dict(input_dict)
        (selection_artifact,) = input_dict.pop(SELECTION_KEY)
        (statistics,) = input_dict.pop(specs.STATISTICS_KEY)
        custom = transform.sized_hash_config(
            json.loads(exec_properties[specs.CUSTOM_CONFIG_KEY]),
            # The split the stock Transform analyzes (its splits_config default).
            lambda: stats_artifact_utils.load_statistics(statistics, splits.TRAIN).proto())
        custom["privileged"] = transform.privileged_config(load_selection(selection_artifact.uri))
        props = dict(exec_properties, **{specs.CUSTOM_CONFIG_KEY: json_utils.dumps(custom)})
        super().Do(input_dict, output_dict, props)
        (graph,) = output_dict[specs.TRANSFORM_GRAPH_KEY]
        transform.write_hash_rows(graph.uri, custom)
        tf.io.gfile.copy(os.path.join(selection_artifact.uri, selection_report.SELECTION_FILE),
                         os.path.join(graph.uri, selection_report.SELECTION_FILE), overwrite=True)


class PrivilegedTransform(base_beam_component.BaseBeamComponent):
    """Transform whose preprocessing uses the selected privileged features."""

    SPEC_CLASS = PrivilegedTransformSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, examples: types.BaseChannel, schema: types.BaseChannel,
                 statistics: types.BaseChannel, selection: types.BaseChannel,
                 regular_config: dict[str, Any]):
        super().__init__(spec=PrivilegedTransformSpec(
            examples=examples, schema=schema, statistics=statistics, selection=selection,
            custom_config=json.dumps(regular_config, sort_keys=True),
            preprocessing_fn=_PREPROCESSING_FN,
            # TFDV statistics of the transformed data add minutes on 2 cores and
            # nothing the StatisticsGen before it does not already show.
            disable_statistics=1,
            force_tf_compat_v1=0,
            transform_graph=types.Channel(type=standard_artifacts.TransformGraph)))
