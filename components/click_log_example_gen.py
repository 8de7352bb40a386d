"""ClickLogExampleGen: raw impression logs (CSV / Parquet / TFRecord) -> tf.Examples.

A FileBasedExampleGen with its own Beam executor, so it keeps TFX's file
fingerprinting (a changed log is a new input; an unchanged one is served from
cache) and Examples artifact, and adds what CVR training needs:
- types from the config's column roles (the data contract, `features/contract.py`),
  not guessed from the first rows (a numeric user id stays a categorical string);
- click space: only clicked impressions become examples; impression space (the
  TAML / UKD strategies): every impression does, with its click label;
- train / validation / eval splits by time or by hash (`components/splits.py`);
- a dead-letter output: every rejected row with file, row and reason, and counts
  that reconcile (read = used + unclicked + quarantined), stored as custom
  properties of the Examples artifact in MLMD and as `row_counts.json`;
- a failed run, not a quietly smaller one, when no clicked row survives or more
  than `data.max_quarantined_fraction` of them is quarantined (a drifted or
  misread log): the message names the first dead-letter rows (file, row, field);
  and when the label has one class or a split is (nearly) empty (`check_splits`);
- Spark / Hadoop side files skipped and counted, folders in the input counted;
- spans (docs/data-and-failures.md, Continuous training): with TFX's span
  placeholders in `data.file_pattern` (`day={SPAN}/*.csv`, `day={YYYY}-{MM}-{DD}/*.csv`)
  the newest span, or a rolling range of the newest `num_spans`, each span's fingerprint
  in the cache key (local runs); the eval split comes from the newest span only
  (`components/splits.py`). The artifact records the spans read (`spans`, `span_pattern`).
`pfdx compare` applies the same rules (`check_rows`, `check_splits`).

In TFX's shape, one module each: the spec and its custom config
(`click_log_spec.py`), the executor (`click_log_executor.py`) and its Beam transforms
(`click_log_transforms.py`), the spans and the driver (`click_log_spans.py`), the
files written beside the examples (`click_log_outputs.py`), the data rules
(`data_rules.py`). This module is the component.
"""
from __future__ import annotations

from typing import Any

from tfx import types
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts

from pfdx.components.click_log_executor import Executor
from pfdx.components.click_log_spans import Driver
from pfdx.components.click_log_spec import ClickLogExampleGenSpec, make_custom_config
from pfdx.components.splits import SPLITS
from pfdx.features import contract


class ClickLogExampleGen(FileBasedExampleGen):
    """FileBasedExampleGen over impression logs; `data_config` is the config's `data`
    section, `space` "click" or "impression" (`PipelineConfig.space`), `num_spans` the
    number of newest spans to read (default `data_config`'s spans.num_spans; a
    RuntimeParameter on Kubeflow)."""

    SPEC_CLASS = ClickLogExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
    DRIVER_CLASS = Driver

    def __init__(self, input_base: str, data_config: dict[str, Any], pattern: str = "*",
                 space: str = contract.CLICK,
                 num_spans: int | data_types.RuntimeParameter | None = None):
        if num_spans is None:
            num_spans = int(data_config.get("spans", {}).get("num_spans", 1))
        spec = ClickLogExampleGenSpec(
            input_base=input_base,
            input_config=example_gen_pb2.Input(splits=[
                example_gen_pb2.Input.Split(name="logs", pattern=pattern)]),
            # Split names only: the executor assigns rows itself (time or hash).
            output_config=example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
                splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1)
                        for name in SPLITS])),
            # The executor reads the unresolved pattern here (TFX's driver resolves the
            # input config's to the newest span).
            custom_config=make_custom_config(dict(data_config, file_pattern=pattern), space),
            range_config=None,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            num_spans=num_spans,
            examples=types.Channel(type=standard_artifacts.Examples))
        # FileBasedExampleGen.__init__ builds TFX's spec, without num_spans: skip to its base.
        super(FileBasedExampleGen, self).__init__(spec=spec)
