"""`PipelineConfig`, the whole config: its sections, the checks across them and
the paths a run writes under its output root."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from pfdx.config.coercion import ConfigError
from pfdx.config.data import DataConfig, span_specs
from pfdx.config.model import ModelConfig
from pfdx.config.run import (CompareConfig, EvaluationConfig, KubeflowConfig, RunnerConfig,
                             SelectionConfig, TuningConfig, WarmStartConfig)
from pfdx.models import registry  # TensorFlow-free: names and spaces checked at load time


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
        self.evaluation.validate()
        self.tuning.validate()
        self.compare.validate()
        m = self.model
        if m.strategy not in registry.STRATEGIES:
            raise ConfigError(f"model.strategy: {m.strategy!r} is not one of "
                              f"{', '.join(sorted(registry.STRATEGIES))}")
        if m.embedding_optimizer not in ("adam", "lazy_adam"):
            raise ConfigError(f"model.embedding_optimizer: {m.embedding_optimizer!r} is not "
                              "one of adam, lazy_adam")
        if m.categorical_encoding not in ("vocabulary", "hash"):
            raise ConfigError(f"model.categorical_encoding: {m.categorical_encoding!r} is not "
                              "one of vocabulary, hash")
        if m.privileged_encoding not in ("binary", "quantiles"):
            raise ConfigError(f"model.privileged_encoding: {m.privileged_encoding!r} is not "
                              "one of binary, quantiles")
        for key in ("epochs", "early_stopping_patience", "batch_size", "privileged_buckets",
                    "shuffle_buffer_rows", "embedding_dim", "hash_buckets", "numeric_buckets",
                    "max_vocabulary", "min_id_count", "oov_buckets"):
            if getattr(m, key) < 1:
                raise ConfigError(f"model.{key}: {getattr(m, key)} is below 1")
        for field in ("learning_rate", "teacher_learning_rate"):
            value = getattr(m, field)
            if value is not None and not value > 0.0:
                raise ConfigError(f"model.{field}: {value} is not positive")
        if self.space == registry.IMPRESSION and self.data.columns.click is None:
            raise ConfigError(f"model.strategy: {self.model.strategy!r} trains on every "
                              "impression and needs data.columns.click")
        rate = self.model.ukd_unclicked_rate
        if rate is not None and not 0.0 < rate <= 1.0:
            raise ConfigError(f"model.ukd_unclicked_rate: {rate} is not in (0, 1] or null")
        if m.taml_activation not in ("smelu", "relu"):
            raise ConfigError(f"model.taml_activation: {m.taml_activation!r} is not one of "
                              "smelu, relu")
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

    @property
    def pipeline_root(self) -> str:
        return self.resolve("pipeline_root")

    @property
    def metadata_path(self) -> str:
        return self.resolve("metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return self.resolve("serving")

    @property
    def reports_dir(self) -> str:
        return self.resolve("reports")

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

    def with_model(self, **fields: Any) -> "PipelineConfig":
        """This config with model fields replaced, typed and checked like `--set model.x=v`."""
        from pfdx.config.loading import from_dict  # it builds PipelineConfigs

        return from_dict(self.to_dict(), [f"model.{k}={json.dumps(v)}" for k, v in fields.items()])
