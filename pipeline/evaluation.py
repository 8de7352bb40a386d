"""The Evaluator's TFMA config: student metrics, slices and the blessing rule.

In impression space (TAML / UKD) the eval split holds every impression; the click
column is the example weight, so the served CVR is judged on clicked rows only,
like a click-space student."""
from __future__ import annotations

import json

import tensorflow_model_analysis as tfma

from pfdx.config import PipelineConfig
from pfdx.serving.export import OUTPUT_KEY

ECE_METRIC = "ExpectedCalibrationError"
MCE_METRIC = "MaxCalibrationError"
METRICS_MODULE = "pfdx.models.metrics"


def _overall(threshold: tfma.MetricThreshold) -> list[tfma.PerSliceMetricThreshold]:
    """The blessing rule judges the whole eval split. (A plain `threshold` would
    apply to every slice too, and a small slice's noise would veto a good model.)"""
    return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
    e = config.evaluation
    bins = json.dumps({"num_bins": e.calibration_bins})
    auc = tfma.MetricConfig(
        class_name="AUC",
        per_slice_thresholds=_overall(tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": e.min_auc}),
            # Compared with the last blessed model when there is one.
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                absolute={"value": -e.max_auc_drop - 1e-10}))))
    ece = tfma.MetricConfig(
        class_name=ECE_METRIC, module=METRICS_MODULE, config=bins,
        per_slice_thresholds=_overall(tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(upper_bound={"value": e.max_ece}))))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name="serving_default", label_key=config.data.columns.label,
            prediction_key=OUTPUT_KEY,
            example_weight_key=config.data.columns.click if config.space == "impression" else None)],
        slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[k]) for k in e.slice_by],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            auc,
            ece,
            tfma.MetricConfig(class_name=MCE_METRIC, module=METRICS_MODULE, config=bins),
            tfma.MetricConfig(class_name="MeanLabel"),
            tfma.MetricConfig(class_name="MeanPrediction"),
            tfma.MetricConfig(class_name="CalibrationPlot",
                              config=json.dumps({"num_buckets": e.calibration_bins})),
        ])])
