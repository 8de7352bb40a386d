"""`PipelineConfig`, the whole config: its sections, the checks across them and
the paths a run writes under its output root."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from pfdx.config.coercion import ConfigError
from pfdx.config.data import DataConfig, span_specs
from pfdx.config.model import ModelConfig
from pfdx.config.run import (CompareConfig, EvaluationConfig, KubeflowConfig, RunnerConfig,
                             SelectionConfig, TuningConfig, WarmStartConfig)
from pfdx.models import registry  # TensorFlow-free: the example space


def _output_path(relative: str) -> property:
    """A read-only attribute: the path `relative` under the output root (`resolve`)."""
    return property(lambda config: config.resolve(relative),
                    doc=f"<runner.output_root>/{relative}")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    data: DataConfig = DataConfig()
    selection: SelectionConfig = SelectionConfig()
    model: ModelConfig = ModelConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    runner: RunnerConfig = RunnerConfig()
    kubeflow: KubeflowConfig = KubeflowConfig()
    tuning: TuningConfig = TuningConfig()
    compare: CompareConfig = CompareConfig()
    warm_start: WarmStartConfig = WarmStartConfig()

    def validate(self) -> "PipelineConfig":
        self.data.validate()
        self.tuning.validate()
        self.compare.validate()
        self.runner.validate()
        self.model.validate()
        if self.space == registry.IMPRESSION and self.data.columns.click is None:
            raise ConfigError(f"model.strategy: {self.model.strategy!r} trains on every "
                              "impression and needs data.columns.click")
        return self

    @property
    def warm_starts(self) -> bool:
        """Whether runs continue the last blessed run (`warm_start`, with spans)."""
        return self.warm_start.enabled and span_specs(self.data.file_pattern) is not None

    @property
    def space(self) -> str:
        """`impression` (every row, with its click label) for the strategies that
        learn from unclicked impressions, else `click` (clicked rows only)."""
        return registry.STRATEGIES[self.model.strategy].space

    # Paths -------------------------------------------------------------
    def resolve(self, relative: str) -> str:
        """A path under the output root; refuses to escape it unless absolute."""
        root = os.path.abspath(self.runner.output_root)
        if os.path.isabs(relative):
            return relative
        path = os.path.abspath(os.path.join(root, relative))
        if os.path.commonpath([root, path]) != root:
            raise ConfigError(f"path {relative!r} escapes the output root {root}")
        return path

    pipeline_root = _output_path("pipeline_root")
    metadata_path = _output_path("metadata.sqlite")
    serving_dir = _output_path("serving")
    reports_dir = _output_path("reports")

    @property
    def beam_pipeline_args(self) -> list[str]:
        r = self.runner
        args = [f"--direct_running_mode={r.direct_running_mode}",
                f"--direct_num_workers={r.direct_num_workers}"]
        return args + list(r.beam_args)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def with_model(self, values: Mapping[str, Any]) -> "PipelineConfig":
        """This config with the model settings at `values`' dotted paths (`strategy`,
        `kd.lam`) replaced, typed and checked like `--set model.kd.lam=v`."""
        from pfdx.config.loading import from_dict  # it builds PipelineConfigs

        return from_dict(self.to_dict(), [f"model.{k}={json.dumps(v)}" for k, v in values.items()])
