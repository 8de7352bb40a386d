"""The run-level sections: privileged feature selection, evaluation and the
baseline gate, the runners, per-run tuning, `pfdx compare` and warm starts."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

from pfdx.config.coercion import ConfigError, coerce
from pfdx.config.model import ModelConfig, moved


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """Privileged feature selection policy (HA-PFD §3.3); defaults are the paper's."""

    # Candidates are ranked alone by mutual information; the top `drop_top_k` are
    # dropped as too informative, the next `keep_top_n` kept.
    drop_top_k: int = 2
    keep_top_n: int = 12
    # OR-combined sparse flags: new name -> members (paper: tag|like|share), all
    # privileged_discrete. The kept members of a group become one feature, their OR.
    or_groups: Mapping[str, tuple[str, ...]] = dataclasses.field(
        default_factory=lambda: {"interact": ("tag", "like", "share")})
    # A final feature (a group: its OR-ed flag) whose rarer value has fewer rows
    # than this is not selected.
    min_support: int = 100
    # Each side of an HA-PFD Eq. 8 split must hold at least this fraction of rows.
    min_part_fraction: float = 0.01
    # Above this many distinct values a continuous feature is pre-bucketed by quantiles.
    max_distinct_values: int = 10_000
    quantile_buckets: int = 1_000


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """TFMA evaluation of the student and the rule that blesses it for push."""

    # Ad dimensions to slice metrics by (besides the overall slice).
    slice_by: tuple[str, ...] = ("placement",)
    calibration_bins: int = 10
    # Blessing: AUC at least this, not below the last blessed model's AUC by more
    # than `max_auc_drop`, and ECE at most `max_ece`. The default ECE bound is a
    # sanity check for logs of any conversion rate, not a business target: on a log
    # whose label rate moves between the windows, a model calibrated on the validation
    # window is off by that move on eval. KuaiRand's rate falls from 0.83 to 0.77 and
    # `pfdx run` there scored ECE 0.052 with the best model it trains, unblessed at
    # 0.05. Set it to your own tolerance.
    min_auc: float = 0.5
    max_auc_drop: float = 0.0
    max_ece: float = 0.1
    # Post-hoc calibration of the served CVR, fitted on the validation split and
    # exported inside the student SavedModel: `platt` (sigmoid(a * logit + b)) or
    # `none`. Default platt: on KuaiRand it cuts eval ECE from 0.200 to 0.053, as the
    # validation split is later than train (README "How a run picks the student...").
    calibration: Literal["platt", "none"] = "platt"
    # The baseline gate: every run also trains the student alone (`none`) and ships
    # the distilled student only if, on the eval split, its AUC is at least the
    # baseline's minus `baseline_auc_tolerance` and its ECE at most the baseline's
    # plus `baseline_ece_tolerance`; otherwise it ships the student alone.
    baseline_auc_tolerance: float = 0.0
    baseline_ece_tolerance: float = 0.005


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    pipeline_name: str = "pfdx"
    output_root: str = "outputs"
    # multi_processing with one worker per core for real runs; tests use in_memory.
    direct_running_mode: str = "multi_processing"
    direct_num_workers: int = 0
    beam_args: tuple[str, ...] = ()
    enable_cache: bool = True
    # Proceed past data-validation anomalies (components/validation_gate.py) instead
    # of stopping before training; the run records that it was overridden.
    allow_anomalies: bool = False
    # The Trainer backs a training up at an epoch's end once this many seconds have
    # passed since it began or since its last backup (tf.estimator's 600 s default):
    # a killed Trainer re-run loses at most that and an epoch. 0: every epoch. Its one
    # field the Trainer reads (components/resume.py).
    backup_seconds: float = 600.0

    def validate(self) -> None:
        if not self.backup_seconds >= 0:
            raise ConfigError(f"runner.backup_seconds: {self.backup_seconds} is below 0")


@dataclasses.dataclass(frozen=True)
class KubeflowConfig:
    """Kubeflow Pipelines: what `pfdx compile-kubeflow` and `pfdx schedule` use.

    Every component runs in its own pod, so paths are shared URIs (gs://, s3://, ...).
    """

    # The pipeline image (Dockerfile). TFX's default image lacks pfdx: its components
    # would fail with ModuleNotFoundError.
    image: str | None = None
    pipeline_root: str | None = None
    # Default of the `data_path` run parameter: the log folder ExampleGen reads.
    data_path: str | None = None
    # Where the Pusher writes the student; None: <pipeline_root>/serving.
    serving_dir: str | None = None
    # GPUs of the Trainer pod. `gpu_type` is the accelerator as the cluster names it:
    # the node resource on Kubeflow (nvidia.com/gpu), e.g. NVIDIA_TESLA_T4 on Vertex AI.
    trainer_gpus: int = 0
    gpu_type: str = "nvidia.com/gpu"
    # Beam runner of the Beam-based components (DirectRunner: inside each component's
    # pod), and the site-specific flags of each runner, e.g.
    # {DataflowRunner: [--project=p, --region=r, --temp_location=gs://b/tmp]}.
    beam_runner: str = "DirectRunner"
    beam_args: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class TuningConfig:
    """Per-run tuning (models/tuning.py): the Trainer and `pfdx compare` train
    candidates on the train split and keep the best on the validation split. First
    without distillation over the grid's learning rates and privileged encodings
    (the encoding whose teacher scores best), then the configured distillation
    weights and up to `max_trials` draws (seeded by model.seed) of the rest of
    `grid`; the no-distillation winner stays a candidate. A strategy varies only the
    settings it reads (models/registry.py `StrategySpec.tuning_keys`)."""

    enabled: bool = True
    # A model setting's dotted path -> values, for every strategy (`kd.lam: [1, 10]`)
    # or for one (`"ha_pfd_v2:kd.gamma": [0.5, 1]`, which replaces the shared entry
    # for it). Both readings of HA-PFD's alignment weight (HA-PFD Eq. 6: 1; appendix
    # A: 10) and of its learning rate (appendix A: 0.0025; §4.1: 0.025) are in the grid.
    grid: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=lambda: {
        "kd.lam": (0.1, 1.0, 10.0), "kd.gamma": (1.0, 2.0),
        "alignment.weight": (0.1, 1.0, 10.0),
        "learning_rate": (0.0025, 0.025), "privileged_encoding": ("binary", "quantiles"),
        "share_embeddings": (True, False)})
    max_trials: int = 4
    # student_auc: higher is better; student_ece, student_mce: lower is better.
    metric: Literal["student_auc", "student_ece", "student_mce"] = "student_auc"
    # Distillation replaces the no-distillation point only when its validation AUC is
    # ahead by more than this many standard errors of the paired difference (DeLong,
    # models/auc_difference.py): the one-standard-error rule, the simpler model unless
    # the other is clearly better. On KuaiRand a λ 10 point won by 0.0001 and its
    # students then spread over 0.82-0.92 across seeds. 0: any gain (student_auc only).
    min_gain_se: float = 1.0

    def validate(self) -> None:
        if self.max_trials < 0:
            raise ConfigError(f"tuning.max_trials: {self.max_trials} is below 0")
        if self.min_gain_se < 0:
            raise ConfigError(f"tuning.min_gain_se: {self.min_gain_se} is below 0")
        types = ModelConfig.setting_types()
        tunable = set(types) - {"strategy", "seed"}
        for key, values in self.grid.items():
            strategy, _, path = key.rpartition(":")
            prefix = f"{strategy}:" if strategy else ""
            if (where := moved(path, f"tuning.grid.{prefix}")) is not None:
                raise ConfigError(f"tuning.grid.{key}: moved to {where}")
            if path not in tunable:
                raise ConfigError(f"tuning.grid.{key}: {path!r} is not a tunable "
                                  f"model setting; known: {sorted(tunable)}")
            if not values:
                raise ConfigError(f"tuning.grid.{key}: no values")
            for i, v in enumerate(values):
                coerce(types[path], v, f"tuning.grid.{key}[{i}]")


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """`pfdx compare`: strategies trained on the train window (tuned per strategy on
    the validation window as the Trainer does, see `tuning`), scored on a later test
    window: the pipeline's three splits (components/splits.py)."""

    # Strategy names of models/registry.py; empty: all that train on clicked rows.
    strategies: tuple[str, ...] = ()
    # Runs per strategy, seeded model.seed, model.seed + 1, ...
    seeds: int = 3

    def validate(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"compare.seeds: {self.seeds} is below 1")


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    """Continuous training (docs/pipeline.md): with span placeholders in
    data.file_pattern, each run continues the last blessed run's joint models
    (teacher, student, mapping nets, optimizer state) on its new span, at the values
    that run chose, and keeps its privileged selection. Without span placeholders every
    run reads the whole folder and starts cold."""

    # false: a cold start on every run (fresh weights, per-run tuning, the selection
    # refitted); set it for one run to re-tune.
    enabled: bool = True
