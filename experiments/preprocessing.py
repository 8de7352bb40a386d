"""The pipeline's preprocessing fitted on one window: the selection Beam job
(`features/selection_beam.py`, HA-PFD §3.3) on the clicked rows of TRAIN, and per
example space TFDV statistics (the hashed tables' sizes) and a TFT analysis of
`features/transform.py`'s `preprocessing_fn` (tft_beam.AnalyzeDataset) on that
space's TRAIN window, as the pipeline fits them on its train split."""
from __future__ import annotations

import functools
import os
from typing import Any, Sequence

from pfdx.config import PipelineConfig
from pfdx.experiments.strategies import CLICK, space_of
from pfdx.experiments.windows import TELEMETRY, TRAIN, Window, window_name


def raw_schema(config: PipelineConfig):
    """The raw tf.Example schema of `log_rows.row_to_example`'s output in
    `config.space`: the data contract's `raw_feature_spec` (features/contract.py)."""
    from tensorflow_transform.tf_metadata import schema_utils

    from pfdx.features.contract import DataContract

    spec = DataContract.from_config(config).raw_feature_spec()
    return schema_utils.schema_from_feature_spec(spec)


def select_features(config: PipelineConfig, window: Window, out_dir: str) -> dict[str, Any]:
    """The selection Beam job on `window` (clicked rows); writes selection.json and
    its chart to `out_dir` and returns the result."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.public import tfxio

    from pfdx.features import selection_beam, selection_report

    selection = selection_beam.run_job(
        beam.Pipeline(options=PipelineOptions(config.beam_pipeline_args)),
        tfxio.TFExampleRecord(window.pattern, telemetry_descriptors=TELEMETRY),
        config.selection, config.data.columns, out_dir, window.pattern)
    selection_report.write_report(selection, os.path.join(out_dir, selection_report.SELECTION_FILE),
                                  os.path.join(out_dir, selection_report.CHART_FILE))
    return selection


def fit_transform(config: PipelineConfig, selection: dict[str, Any], window: Window,
                  out_dir: str):
    """The TFT analysis on `window` in `config.space` -> `out_dir/transform`;
    returns its TFTransformOutput."""
    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
    from tfx_bsl.public import tfxio

    from pfdx.features import transform

    def statistics():  # the pipeline's StatisticsGen, on the window: the hashed tables' sizes
        return tfdv.generate_statistics_from_tfrecord(
            window.pattern, output_path=os.path.join(out_dir, "statistics", "train.tfrecord"),
            pipeline_options=PipelineOptions(config.beam_pipeline_args))

    custom_config = dict(transform.sized_hash_config(transform.regular_config(config), statistics),
                         privileged=transform.privileged_config(selection))
    schema = raw_schema(config)
    transform_dir = os.path.join(out_dir, "transform")
    source = tfxio.TFExampleRecord(window.pattern, schema=schema, telemetry_descriptors=TELEMETRY)
    with beam.Pipeline(options=PipelineOptions(config.beam_pipeline_args)) as pipeline, \
            tft_beam.Context(temp_dir=os.path.join(out_dir, "tft_tmp"), force_tf_compat_v1=False):
        transform_fn = ((pipeline | "ReadWindow" >> source.BeamSource(),
                         source.TensorAdapterConfig())
                        | "Analyze" >> tft_beam.AnalyzeDataset(functools.partial(
                            transform.preprocessing_fn, custom_config=custom_config)))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(transform_dir)
    transform.write_hash_rows(transform_dir, custom_config)
    # Where TFX's Transform puts the raw schema, which the Trainer parses with.
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(schema),
                               os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return tft.TFTransformOutput(transform_dir)


def preprocess(config: PipelineConfig, names: Sequence[str], windows: dict[str, dict[str, Window]],
               work: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Selection on the clicked rows of the TRAIN window, then a Transform per space
    that `names` train in, fitted on that space's TRAIN window:
    (selection, {space: TFTransformOutput})."""
    selection = select_features(config, windows[CLICK][TRAIN], os.path.join(work, TRAIN))
    outputs = {}
    for space in dict.fromkeys(space_of(n) for n in names):
        # A config of a strategy of that space: regular_config / raw_schema follow it.
        space_config = config.with_model(
            {"strategy": next(n for n in names if space_of(n) == space)})
        outputs[space] = fit_transform(space_config, selection, windows[space][TRAIN],
                                       os.path.join(work, window_name(TRAIN, space)))
    return selection, outputs
