"""The one typed configuration object of a pfdx pipeline.

A config is a tree of frozen dataclasses (`PipelineConfig`). It is read from
YAML/JSON as plain data (``yaml.safe_load``; nothing is evaluated), every key is
checked against the dataclass fields so a typo fails with the key's dotted name, and
``--set a.b=v`` overrides are parsed the same way.

Modules: `data` (columns, spans, the data section), `model` (the model section:
what every strategy shares), `strategy_sections` (a section of `model` per strategy
building block: `model.kd`, `model.ukd`, ...), `run` (selection, evaluation,
runners, tuning, compare, warm start), `pipeline` (`PipelineConfig`: the sections
and the checks across them), `loading` (files and overrides), `coercion` (plain data
to typed sections, `ConfigError`).
"""
from pfdx.config.coercion import ConfigError
from pfdx.config.data import ColumnRoles, DataConfig, SpanConfig, span_specs
from pfdx.config.loading import from_dict, load_config
from pfdx.config.model import ModelConfig
from pfdx.config.strategy_sections import (AdversarialKdConfig, AlignmentConfig, EktfConfig,
                                           KdConfig, TamlConfig, TermWeightConfig, UkdConfig)
from pfdx.config.pipeline import PipelineConfig
from pfdx.config.run import (CompareConfig, EvaluationConfig, KubeflowConfig, RunnerConfig,
                             SelectionConfig, TuningConfig, WarmStartConfig)

__all__ = ["AdversarialKdConfig", "AlignmentConfig", "ColumnRoles", "CompareConfig",
           "ConfigError", "DataConfig", "EktfConfig", "EvaluationConfig", "KdConfig",
           "KubeflowConfig", "ModelConfig", "PipelineConfig", "RunnerConfig",
           "SelectionConfig", "SpanConfig", "TamlConfig", "TermWeightConfig", "TuningConfig",
           "UkdConfig", "WarmStartConfig", "from_dict", "load_config", "span_specs"]
