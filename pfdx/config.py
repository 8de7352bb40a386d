"""The one typed configuration object of a pfdx pipeline.

A config is a tree of frozen dataclasses. It is read from YAML/JSON as plain data
(``yaml.safe_load``; nothing is evaluated), every key is checked against the
dataclass fields so a typo fails with the key's dotted name, and ``--set a.b=v``
overrides are parsed the same way.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import json
import os
import re
import typing
from typing import Any, Mapping

import yaml

from pfdx.models import registry  # TensorFlow-free: names and spaces checked at load time
from pfdx.simulator import scenarios as sim_scenarios
from pfdx.simulator import schema as sim_schema


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; names the key."""


@dataclasses.dataclass(frozen=True)
class ColumnRoles:
    """Which raw columns play which role. Nothing is guessed from names."""

    label: str = "conversion"
    # Rows are kept for CVR training only where this column is 1 (click space).
    # None: every row is already a click.
    click: str | None = "click"
    regular_categorical: tuple[str, ...] = sim_schema.REGULAR_CATEGORICAL
    regular_numeric: tuple[str, ...] = sim_schema.REGULAR_NUMERIC
    privileged_continuous: tuple[str, ...] = sim_schema.PRIVILEGED_CONTINUOUS
    privileged_discrete: tuple[str, ...] = sim_schema.PRIVILEGED_DISCRETE
    # Columns read but never used as features (ids, time stamps); dropped.
    ignore: tuple[str, ...] = sim_schema.IGNORED
    # The true conversion probability, when the log has one (simulated logs): kept
    # in the examples so evaluation can compare predictions to it; never a feature.
    truth: str | None = sim_schema.TRUE_CVR

    @property
    def regular(self) -> tuple[str, ...]:
        return self.regular_categorical + self.regular_numeric

    @property
    def privileged(self) -> tuple[str, ...]:
        return self.privileged_continuous + self.privileged_discrete

    def validate(self) -> None:
        seen: dict[str, str] = {}
        for role in ("regular_categorical", "regular_numeric", "privileged_continuous",
                     "privileged_discrete", "ignore"):
            for col in getattr(self, role):
                if col in seen:
                    raise ConfigError(f"data.columns: column {col!r} is in both "
                                      f"{seen[col]} and {role}")
                seen[col] = role
        for name in (self.label, self.click, self.truth):
            if name is not None and name in seen:
                raise ConfigError(f"data.columns: label/click column {name!r} is also "
                                  f"listed as {seen[name]}")
        if not self.regular:
            raise ConfigError("data.columns: at least one regular feature is required")


# TFX's span placeholders in a file pattern (tfx/components/example_gen/utils.py):
# {SPAN} or {SPAN:width}, or the date specs {YYYY} {MM} {DD} (span = days since
# 1970-01-01), and optionally {VERSION}. The config cannot import TFX (TensorFlow).
_SPAN_SPEC = re.compile(r"{SPAN(:[^}]*)?}")
_VERSION_SPEC = re.compile(r"{VERSION(:[^}]*)?}")
_DATE_SPECS = ("{YYYY}", "{MM}", "{DD}")
EVAL_SPLITS = ("tail", "newest_span")


def span_specs(pattern: str) -> str | None:
    """'span' or 'date' when `pattern` holds TFX span placeholders, else None."""
    if _SPAN_SPEC.search(pattern):
        return "span"
    return "date" if any(spec in pattern for spec in _DATE_SPECS) else None


@dataclasses.dataclass(frozen=True)
class SpanConfig:
    """Which spans of a `data.file_pattern` with span placeholders a run reads
    (docs/data-and-failures.md, Continuous training). Without a placeholder: the
    whole folder, as always."""

    # The newest `num_spans` span numbers (TFX's RollingRange): 1 = the latest span only;
    # N = the latest span L and the spans L-N+1 .. L-1 that exist.
    num_spans: int = 1
    # The eval split: "tail" = the last data.eval_fraction of the newest span's time
    # range (with one span: the split of a run without spans); "newest_span" = all of
    # the newest span (needs num_spans >= 2: the older spans train and validate).
    eval_split: str = "tail"

    def validate(self, file_pattern: str) -> None:
        if self.num_spans < 1:
            raise ConfigError(f"data.spans.num_spans: {self.num_spans} is below 1")
        if self.eval_split not in EVAL_SPLITS:
            raise ConfigError(f"data.spans.eval_split: {self.eval_split!r} is not one of "
                              f"{', '.join(EVAL_SPLITS)}")
        kind = span_specs(file_pattern)
        if kind is None and self != SpanConfig():
            key = "num_spans" if self.num_spans != 1 else "eval_split"
            raise ConfigError(f"data.spans.{key}: set, but data.file_pattern {file_pattern!r} "
                              "has no span placeholder ({SPAN} or {YYYY}-{MM}-{DD}), so the whole "
                              "folder is read; e.g. data.file_pattern: 'day={SPAN}/*.csv'")
        if self.eval_split == "newest_span" and self.num_spans < 2:
            raise ConfigError("data.spans.eval_split: 'newest_span' makes the newest span "
                              "the eval split; it needs data.spans.num_spans >= 2 (older "
                              f"spans to train on), got {self.num_spans}")
        where = f"data.file_pattern: {file_pattern!r}"
        if kind == "span":
            if len(_SPAN_SPEC.findall(file_pattern)) > 1:
                raise ConfigError(f"{where}: only one {{SPAN}} is allowed")
            if any(spec in file_pattern for spec in _DATE_SPECS):
                raise ConfigError(f"{where}: {{SPAN}} and the date specs {{YYYY}} {{MM}} "
                                  "{DD} exclude each other")
            width = _SPAN_SPEC.search(file_pattern).group(1)
            if width and not (width[1:].isdigit() and int(width[1:]) > 0):
                raise ConfigError(f"{where}: the width of {{SPAN:width}} is not a "
                                  "positive integer")
        if kind == "date" and any(file_pattern.count(s) != 1 for s in _DATE_SPECS):
            raise ConfigError(f"{where}: each of {{YYYY}}, {{MM}}, {{DD}} must appear "
                              "exactly once")
        versions = _VERSION_SPEC.findall(file_pattern)
        if versions and kind is None:
            raise ConfigError(f"{where}: {{VERSION}} needs a {{SPAN}} or date placeholder")
        if len(versions) > 1:
            raise ConfigError(f"{where}: only one {{VERSION}} is allowed")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # None: the pipeline simulates `simulated_rows` rows into <output_root>/data.
    path: str | None = None
    format: str = "csv"  # csv | parquet | tfrecord
    # Files under `path` to read (glob); gzip-compressed TFRecords need "*.gz".
    file_pattern: str = "*"
    separator: str = ","
    columns: ColumnRoles = ColumnRoles()
    # Train/eval split: by time when `time_column` is set (the last
    # `eval_fraction` of the time range is eval), else by a hash of the row.
    time_column: str | None = "event_time"
    eval_fraction: float = 0.2
    # The validation split: this last fraction of the train time range (or of the
    # train rows, hash split). Early stopping, per-run tuning, the baseline gate and
    # calibration read it (components/splits.py).
    validation_fraction: float = 0.2
    # ~30k clicked impressions: enough to train on, a few minutes on 2 cores.
    simulated_rows: int = 1_000_000
    simulated_seed: int = 7
    # The simulator's regime (simulator/README.md): default, paper, selection-bias, v1.
    simulated_scenario: str = "default"
    # Numeric columns whose negative values quarantine the row (durations, counters,
    # amounts). None: every regular numeric and privileged continuous column.
    non_negative: tuple[str, ...] | None = None
    # The run fails when more than this fraction of the rows that would be used
    # (used + quarantined) is quarantined: a drifted or misread log, not a few bad rows.
    max_quarantined_fraction: float = 0.05
    # Each split (train / validation / eval) must hold at least this many rows and
    # positive labels, else the run stops at ExampleGen naming the split: an AUC needs
    # both classes, and an outlying timestamp can leave a time split nearly empty.
    min_split_rows: int = 10
    min_split_positives: int = 1
    # A curated TFDV schema (schema.pbtxt: absolute path or URI) that the data is
    # validated, transformed and trained against instead of the one SchemaGen infers
    # (TFX ImportSchemaGen). TFX caches the import by path: give an edited schema a
    # new file name. None: infer the schema from each run's statistics.
    schema_path: str | None = None
    # Daily (or other) spans in `file_pattern`, e.g. "day={YYYY}-{MM}-{DD}/*.csv":
    # which spans a run reads and where its eval split is (SpanConfig).
    spans: SpanConfig = SpanConfig()

    def validate(self) -> None:
        if self.format not in ("csv", "parquet", "tfrecord"):
            raise ConfigError(f"data.format: {self.format!r} is not one of csv, parquet, tfrecord")
        if self.simulated_scenario not in sim_scenarios.SCENARIOS:
            raise ConfigError(f"data.simulated_scenario: {self.simulated_scenario!r} is not one "
                              f"of {', '.join(sim_scenarios.SCENARIOS)}")
        for key in ("eval_fraction", "validation_fraction"):
            if not 0.0 < getattr(self, key) < 1.0:
                raise ConfigError(f"data.{key}: {getattr(self, key)} is not in (0, 1)")
        parts = self.file_pattern.replace("\\", "/").split("/")
        if os.path.isabs(self.file_pattern) or ".." in parts:
            raise ConfigError(f"data.file_pattern: {self.file_pattern!r} is not a glob inside "
                              "data.path")
        if not 0.0 <= self.max_quarantined_fraction <= 1.0:
            raise ConfigError(f"data.max_quarantined_fraction: {self.max_quarantined_fraction} "
                              "is not in [0, 1]")
        if "**" in self.file_pattern:
            # TFX fingerprints ExampleGen's input with a glob where '**' does not recurse:
            # an edited file below data.path would be served from cache.
            raise ConfigError(f"data.file_pattern: {self.file_pattern!r}: '**' is not "
                              "supported; name each folder level, e.g. '*/*.csv'")
        if len(self.separator) != 1:
            raise ConfigError(f"data.separator: {self.separator!r} is not one character")
        self.spans.validate(self.file_pattern)
        for key, low in (("min_split_rows", 1), ("min_split_positives", 0)):
            if getattr(self, key) < low:
                raise ConfigError(f"data.{key}: {getattr(self, key)} is below {low}")
        roles = self.columns
        numeric = roles.regular_numeric + roles.privileged
        unknown = [c for c in self.non_negative or () if c not in numeric]
        if unknown:
            raise ConfigError(f"data.non_negative: {unknown} are not numeric columns "
                              f"(regular_numeric or privileged); numeric: {list(numeric)}")
        self.columns.validate()


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """Privileged feature selection policy (paper §3.3); defaults are the paper's."""

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
    # Each side of an Eq. 8 split must hold at least this fraction of rows.
    min_part_fraction: float = 0.01
    # Above this many distinct values a continuous feature is pre-bucketed by quantiles.
    max_distinct_values: int = 10_000
    quantile_buckets: int = 1_000


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    strategy: str = "ha_pfd_v2"
    embedding_dim: int = 16
    # How a categorical id becomes an embedding row (features/transform.py): "hash"
    # (appendix A), `hash_buckets` rows whatever the data, an unseen id lands on an
    # arbitrary (mostly never trained) row; or "vocabulary", a table sized to the
    # train split: a row per id seen at least `min_id_count` times (at most the
    # `max_vocabulary` most frequent) and `oov_buckets` shared rows for the rest and
    # for ids first seen at serving. Not the default: on KuaiRand's time split (73%
    # of test rows hold a video id the train window lacks) it won validation by 0.02
    # AUC and lost test by 0.027 with ECE 0.21 (bench/results/kuairand-encoding): its
    # OOV row is untrained (min_id_count 1) or learns rare ids (2: there, nearly all
    # negative), neither what a new id is worth.
    categorical_encoding: str = "hash"
    max_vocabulary: int = 100_000
    min_id_count: int = 1
    oov_buckets: int = 1
    hash_buckets: int = 100_000
    # Numeric features are bucketized by quantiles.
    numeric_buckets: int = 32
    hidden_units: tuple[int, ...] = (256, 128)
    smelu_beta: float = 1.0
    gamma: float = 1.0
    lam: float = 10.0
    # HA-PFD gives two: appendix A's 0.0025 (the default) and §4.1's 0.025. Per-run
    # tuning tries both (tuning.grid); docs/paper-deviations.md item 9.
    learning_rate: float = 0.0025
    # The teacher's own learning rate (None: `learning_rate`, as in the paper, which
    # trains both with one Adam). Per-run tuning sets it to the rate whose *teacher*
    # scores best, as `learning_rate` is the one whose student does: on KuaiRand the
    # two disagree (docs/paper-deviations.md, "one learning rate").
    teacher_learning_rate: float | None = None
    weight_decay: float = 0.001
    # How the embedding tables step: "adam", Keras' Adam on every row every step (the
    # paper's); "lazy_adam", only the rows a batch looks up (models/optimizers.py):
    # a step then costs the batch, not the tables (5.7x faster at 100k rows per
    # table), but on KuaiRand the student alone lost 0.04 AUC on average over 3 seeds
    # (docs/paper-deviations.md item 12), so it is not the default.
    embedding_optimizer: str = "adam"
    clipnorm: float = 600.0
    init_stddev: float = 0.1
    # Distillation settings (models/strategies.py). The logit-distillation term (KD or
    # focal) always carries `lam`; the latent-alignment term carries `align_weight`
    # (Eq. 6: 1). Appendix A gives the baselines' weights below; it also says
    # ReviewKD's 10 is "the same as our layer aligning strategy", a second reading of
    # this weight. Per-run tuning tries 0.1, 1 and 10 (tuning.grid); see
    # docs/paper-deviations.md item 10.
    align_weight: float = 1.0
    # Hidden layers of each mapping DNN g^(i) (Eq. 5); its output has the teacher
    # latent's width. The paper says only "a DNN".
    mapping_hidden_units: tuple[int, ...] = (128,)
    review_weight: float = 10.0
    similarity_weight: float = 100.0
    adversarial_hidden_units: tuple[int, ...] = (128, 64)
    adversarial_disc_weight: float = 1.0
    adversarial_weight: float = 10.0
    # Steps the discriminators train alone before the student is pushed to fool
    # them (paper: 5M batches of a 1.39B-row log).
    adversarial_warmup_steps: int = 1_000
    # Weight of the auxiliary privileged-feature tasks of the `mtl` baseline.
    mtl_weight: float = 1.0
    # Multi-head students (models/heads.py). EKTF: `ektf_heads` student towers on
    # the shared embeddings, taught by their mean probability (EKTF Eq. 2); serve
    # that mean (`ensemble`) or the head with the best running exam score (`best`).
    ektf_heads: int = 3
    ektf_serve: str = "ensemble"
    # TAML (impression space): learners per task; experts per group (general, per
    # task; each learner also has its own, so a gate weighs 2e + 1 experts) of
    # `taml_expert_units`; self-distillation weights alpha (CTR), beta (CVR).
    taml_learners: int = 2
    taml_experts: int = 1
    taml_expert_units: int = 64
    # Learner towers' hidden layers (None: hidden_units) and the experts' and
    # learners' activation, smelu | relu. The paper's: (64, 32), relu (with lr 1e-3,
    # batch 2000); the defaults keep HA-PFD's towers so strategies compare on one
    # architecture (models/strategies.py TaskAdaptiveMultiLearner).
    taml_hidden_units: tuple[int, ...] | None = None
    taml_activation: str = "smelu"
    taml_alpha: float = 0.1
    taml_beta: float = 0.1
    # UKD (impression space): CTR loss weight gamma, pseudo-label weight alpha,
    # uncertainty scale lambda, dropout before the two CVR heads; the teacher's
    # gradient-reversal scale (its click discriminator: adversarial_hidden_units).
    ukd_ctr_weight: float = 0.2
    ukd_pseudo_weight: float = 0.5
    ukd_uncertainty_scale: float = 100.0
    ukd_dropout: float = 0.2
    ukd_reversal_scale: float = 1.0
    # UKD's towers, teacher and student (None: hidden_units). The paper's:
    # (1024, 512, 256), with lr 0.005 and batch 128; the default keeps HA-PFD's
    # towers so strategies compare on one architecture.
    ukd_hidden_units: tuple[int, ...] | None = None
    # Share of the unclicked impressions UKD's teacher trains on (all clicked rows
    # do). None: derived from the train split's observed CTR as CTR / (1 - CTR), so
    # clicked : unclicked is 1 : 1 (UKD appendix A.1); a number fixes it.
    ukd_unclicked_rate: float | None = None
    # TAML / UKD students also serve their CTR.
    serve_ctr: bool = False
    batch_size: int = 512
    # At most this many passes over the train split: early stopping on the
    # validation split's student AUC ends training after `early_stopping_patience`
    # epochs without a gain and restores the best epoch's weights.
    epochs: int = 10
    early_stopping_patience: int = 2
    # Then train a fresh model on train + validation for the best epoch count: the
    # validation split is the freshest data before eval (models/training.py Fitter).
    refit: bool = True
    # Rows shuffled together: the whole train split up to this many. Logs come
    # sorted (by time, user, outcome); a small buffer would feed one-class batches.
    shuffle_buffer_rows: int = 1_000_000
    # What the teacher receives of a continuous privileged feature: `binary`, the
    # Eq. 8 threshold's bit (paper), or `quantiles`: `privileged_buckets` quantile
    # buckets of its value (selection still ranks by the Eq. 8 bit). Per-run tuning
    # picks one on the validation split when both are in tuning.grid.
    privileged_encoding: str = "binary"
    privileged_buckets: int = 16
    # Teacher and student share the regular-feature embeddings (paper §3.1). Off:
    # the teacher has its own tables, so it trains as if alone (models/model.py).
    share_embeddings: bool = True
    seed: int = 42
    # tf.distribute strategy: auto (MultiWorkerMirrored when TF_CONFIG names more
    # than one host, else Mirrored over the local GPUs) | mirrored | multi_worker.
    distribution: str = "auto"


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """TFMA evaluation of the student and the rule that blesses it for push."""

    # Ad dimensions to slice metrics by (besides the overall slice).
    slice_by: tuple[str, ...] = ("placement",)
    calibration_bins: int = 10
    # Blessing: AUC at least this, not below the last blessed model's AUC by more
    # than `max_auc_drop`, and ECE at most `max_ece`.
    min_auc: float = 0.5
    max_auc_drop: float = 0.0
    max_ece: float = 0.05
    # Post-hoc calibration of the served CVR, fitted on the validation split and
    # exported inside the student SavedModel: `platt` (sigmoid(a * logit + b)) or
    # `none`. Default platt: on KuaiRand it cuts eval ECE from 0.200 to 0.053, as the
    # validation split is later than train (README "How a run picks the student...").
    calibration: str = "platt"
    # The baseline gate: every run also trains the student alone (`none`) and ships
    # the distilled student only if, on the eval split, its AUC is at least the
    # baseline's minus `baseline_auc_tolerance` and its ECE at most the baseline's
    # plus `baseline_ece_tolerance`; otherwise it ships the student alone.
    baseline_auc_tolerance: float = 0.0
    baseline_ece_tolerance: float = 0.005

    def validate(self) -> None:
        if self.calibration not in ("platt", "none"):
            raise ConfigError(f"evaluation.calibration: {self.calibration!r} is not one of "
                              "platt, none")


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
    fields it reads (models/registry.py `StrategySpec.tuning_keys`)."""

    enabled: bool = True
    # ModelConfig field -> values, for every strategy (`lam: [1, 10]`) or for one
    # (`"ha_pfd_v2:gamma": [0.5, 1]`, which replaces the shared entry for it).
    # Both readings of HA-PFD's alignment weight (Eq. 6: 1; appendix A: 10) and of
    # its learning rate (appendix A: 0.0025; section 4.1: 0.025) are in the grid.
    grid: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=lambda: {
        "lam": (0.1, 1.0, 10.0), "gamma": (1.0, 2.0), "align_weight": (0.1, 1.0, 10.0),
        "learning_rate": (0.0025, 0.025), "privileged_encoding": ("binary", "quantiles"),
        "share_embeddings": (True, False)})
    max_trials: int = 4
    # student_auc (higher is better) | student_ece | student_mce (lower is better)
    metric: str = "student_auc"

    def validate(self) -> None:
        if self.max_trials < 0:
            raise ConfigError(f"tuning.max_trials: {self.max_trials} is below 0")
        if self.metric not in ("student_auc", "student_ece", "student_mce"):
            raise ConfigError(f"tuning.metric: {self.metric!r} is not one of "
                              "student_auc, student_ece, student_mce")
        hints = typing.get_type_hints(ModelConfig)
        fields = set(hints) - {"strategy", "seed"}
        for key, values in self.grid.items():
            field = key.rsplit(":", 1)[-1]
            if field not in fields:
                raise ConfigError(f"tuning.grid.{key}: {field!r} is not a tunable "
                                  f"model field; known: {sorted(fields)}")
            if not values:
                raise ConfigError(f"tuning.grid.{key}: no values")
            for i, v in enumerate(values):
                _coerce(hints[field], v, f"tuning.grid.{key}[{i}]")


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
        return from_dict(self.to_dict(), [f"model.{k}={json.dumps(v)}" for k, v in fields.items()])


# Loading -------------------------------------------------------------------

def _build(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from plain data, checking every key and type."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in raw.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, where)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                hint is int and not float(value).is_integer()):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = value


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Defaults, then the YAML/JSON file at `path`, then `key.sub=value` overrides."""
    tree: dict[str, Any] = {}
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path} is not valid YAML/JSON: {e}") from None
        tree = loaded or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"config {path}: top level must be a mapping")
    return from_dict(tree, overrides)


def from_dict(tree: Mapping[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """A config from plain data (e.g. `to_dict()` output) plus `key.sub=value` overrides."""
    tree = json.loads(json.dumps(tree))  # a private, mutable copy
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw  # not YAML, e.g. the glob *.csv: the text itself (types are checked below)
        _set_dotted(tree, key.strip(), value)
    return _build(PipelineConfig, tree, "").validate()
