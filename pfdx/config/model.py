"""The `model` section: the strategy, what every strategy shares (features, towers,
optimizers, training schedule) and one section per strategy building block
(strategy_sections.py). A setting is named by its dotted path below `model`:
`learning_rate`, `kd.lam`; per-run tuning (`tuning.grid`), the registry and the
chosen values a run records use these paths."""
from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Literal

from pfdx.config.coercion import ConfigError
from pfdx.config.strategy_sections import (AdversarialKdConfig, AlignmentConfig, EktfConfig,
                                           KdConfig, TamlConfig, TermWeightConfig, UkdConfig)
from pfdx.models import registry  # TensorFlow-free: strategy names checked at load time


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    strategy: str = "ha_pfd_v2"
    embedding_dim: int = 16
    # How a categorical id becomes an embedding row (features/transform.py): "hash"
    # (HA-PFD appendix A), a table sized to the data (`hash_rows_per_id`), an unseen id
    # lands on an arbitrary (mostly never trained) row; or "vocabulary", a table sized to the
    # train split: a row per id seen at least `min_id_count` times (at most the
    # `max_vocabulary` most frequent) and `oov_buckets` shared rows for the rest and
    # for ids first seen at serving. Not the default: on KuaiRand's time split (73%
    # of test rows hold a video id the train window lacks) it won validation by 0.02
    # AUC and lost test by 0.027 with ECE 0.21 (bench/results/kuairand-encoding): its
    # OOV row is untrained (min_id_count 1) or learns rare ids (2: there, nearly all
    # negative), neither what a new id is worth.
    categorical_encoding: Literal["vocabulary", "hash"] = "hash"
    max_vocabulary: int = 100_000
    min_id_count: int = 1
    oov_buckets: int = 1
    # A hashed feature's table: `hash_rows_per_id` rows per distinct id of the train
    # split (StatisticsGen's count), rounded up to a power of two, at most
    # `hash_buckets` rows (features/transform.py `hash_rows`). About 1 / 16 of the rows
    # are then trained, so a new id at serving lands on a row a train id trained about
    # 6 % of the time, as KuaiRand's video ids do at 100k rows (7 %); at 2 rows per id
    # (a third of the time) KuaiRand's student lost 0.05 AUC (bench/results
    # kuairand-encoding). `device` (3 values) gets 64 rows, not 100k. 0: `hash_buckets`
    # rows whatever the data.
    hash_buckets: int = 100_000
    hash_rows_per_id: int = 16
    # Numeric features are bucketized by quantiles.
    numeric_buckets: int = 32
    hidden_units: tuple[int, ...] = (256, 128)
    smelu_beta: float = 1.0
    # HA-PFD gives two: appendix A's 0.0025 (the default) and §4.1's 0.025. Per-run
    # tuning tries both (tuning.grid); docs/paper-deviations.md item 9.
    learning_rate: float = 0.0025
    # The teacher's own learning rate (None: `learning_rate`, as in the paper, which
    # trains both with one Adam). Per-run tuning sets it to the rate whose *teacher*
    # scores best, as `learning_rate` is the one whose student does: on KuaiRand the
    # two disagree (docs/paper-deviations.md, "one learning rate").
    teacher_learning_rate: float | None = None
    weight_decay: float = 0.001
    # How the embedding tables step: "lazy_adam", only the rows a batch looks up, each
    # row caught up on the steps it missed (models/optimizers.py), so a step costs the
    # batch, not the tables (5x faster at 100k rows per table); "adam", Keras' Adam on
    # every row every step (the paper's). Equal on the simulator and for KuaiRand's
    # student alone (5 seeds), and KuaiRand's ha_pfd_v2 meets its checks with it
    # (docs/paper-deviations.md item 12).
    embedding_optimizer: Literal["adam", "lazy_adam"] = "lazy_adam"
    clipnorm: float = 600.0
    init_stddev: float = 0.1
    # At the end of training, the embedding rows that never received a gradient (no
    # training id reached them: their Adam second moment is zero) are set
    # to zero, the mean of their random init, so an id training never saw reads one
    # neutral row instead of an arbitrary draw. The exported student then stores only
    # its trained rows (serving/export.py); docs/paper-deviations.md item 13.
    zero_untrained_rows: bool = True
    # TAML and UKD students also serve their CTR.
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
    # A split of at most this many rows is read, parsed and Transform-ed once and
    # then held in memory: unshuffled passes (validation every epoch, predictions)
    # replay its batches; the train split's rows are shuffled by index each epoch
    # and gathered, for every fit of the run (tuning's trials, the refit), so no
    # epoch after a run's first parses or transforms (nor opens the TFT layer's
    # vocabularies) again. About 0.3 KB a row; 0: never (every epoch streams).
    cache_rows: int = 1_000_000
    # Threads reading a split's files. 0: tf.data's sequential interleave, one reader
    # taking the files in turn on the input pipeline's own thread; N: N parallel
    # readers; None: tfx-bsl's default, the parallel interleave with autotuned threads.
    # On local files with 2 cores the sequential one read 3.3x faster and took
    # `make run`'s Trainer from 154-175 s to 129-143 s; it shuffles into another order,
    # which over 20 KuaiRand seeds left AUC and ECE within noise (docs/pipeline.md
    # "Threads"). Parallel readers pay off where reads wait on remote storage.
    reader_threads: int | None = 0
    # What the teacher receives of a continuous privileged feature: `binary`, the
    # HA-PFD Eq. 8 threshold's bit (the paper's), or `quantiles`: `privileged_buckets`
    # quantile buckets of its value (selection still ranks by the Eq. 8 bit). Per-run tuning
    # picks one on the validation split when both are in tuning.grid.
    privileged_encoding: Literal["binary", "quantiles"] = "binary"
    privileged_buckets: int = 16
    # Teacher and student share the regular-feature embeddings (HA-PFD appendix A). Off:
    # the teacher has its own tables, so it trains as if alone (models/model.py).
    share_embeddings: bool = True
    seed: int = 42
    # tf.distribute strategy: auto (MultiWorkerMirrored when TF_CONFIG names more
    # than one host, else Mirrored over several local GPUs, else TF's default) |
    # one_device | mirrored | multi_worker (models/distributed.py).
    distribution: str = "auto"
    # The strategies' own settings, a section per building block (strategy_sections.py).
    kd: KdConfig = KdConfig()
    alignment: AlignmentConfig = AlignmentConfig()
    # HA-PFD appendix A's one-weight baselines: review KD (10, "the same as our layer
    # aligning strategy"; its mapping DNNs are `alignment`'s), similarity KD (tuned to
    # 100), MTL (the privileged features as auxiliary tasks).
    review_kd: TermWeightConfig = TermWeightConfig(10.0)
    similarity_kd: TermWeightConfig = TermWeightConfig(100.0)
    mtl: TermWeightConfig = TermWeightConfig(1.0)
    adversarial_kd: AdversarialKdConfig = AdversarialKdConfig()
    ektf: EktfConfig = EktfConfig()
    taml: TamlConfig = TamlConfig()
    ukd: UkdConfig = UkdConfig()

    def get(self, path: str) -> Any:
        """The setting at dotted `path`: `get("kd.lam")` is `self.kd.lam`."""
        return functools.reduce(getattr, path.split("."), self)

    @classmethod
    def setting_types(cls) -> dict[str, Any]:
        """Every setting's dotted path -> its type (the sections' settings, not the
        sections themselves)."""
        return _setting_types(cls)

    def validate(self) -> None:
        if self.strategy not in registry.STRATEGIES:
            raise ConfigError(f"model.strategy: {self.strategy!r} is not one of "
                              f"{', '.join(sorted(registry.STRATEGIES))}")
        for key in ("epochs", "early_stopping_patience", "batch_size", "privileged_buckets",
                    "shuffle_buffer_rows", "embedding_dim", "hash_buckets", "numeric_buckets",
                    "max_vocabulary", "min_id_count", "oov_buckets"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: {getattr(self, key)} is below 1")
        for key in ("cache_rows", "reader_threads", "hash_rows_per_id"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ConfigError(f"model.{key}: {getattr(self, key)} is below 0")
        for key in ("learning_rate", "teacher_learning_rate"):
            value = getattr(self, key)
            if value is not None and not value > 0.0:
                raise ConfigError(f"model.{key}: {value} is not positive")
        self.ukd.validate()


def _setting_types(cls: type, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            out.update(_setting_types(hint, f"{prefix}{name}."))
        else:
            out[prefix + name] = hint
    return out


# ModelConfig's flat settings before the strategy sections (issue 18), refused at load
# time naming their new paths. EKTF's, TAML's and UKD's lost their prefix (`taml_alpha`
# is `taml.alpha`); the others were renamed:
_RENAMED = {
    "lam": "kd.lam", "gamma": "kd.gamma",
    "align_weight": "alignment.weight",
    "mapping_hidden_units": "alignment.mapping_hidden_units",
    "review_weight": "review_kd.weight", "similarity_weight": "similarity_kd.weight",
    "adversarial_weight": "adversarial_kd.weight",
    "adversarial_disc_weight": "adversarial_kd.discriminator_weight",
    "adversarial_warmup_steps": "adversarial_kd.warmup_steps",
    "mtl_weight": "mtl.weight",
}
_SECTIONS = {hint: name for name, hint in typing.get_type_hints(ModelConfig).items()
             if dataclasses.is_dataclass(hint)}
# Old key -> its new paths below `model`.
_MOVED: dict[str, tuple[str, ...]] = {
    **{f"{_SECTIONS[section]}_{f.name}": (f"{_SECTIONS[section]}.{f.name}",)
       for section in (EktfConfig, TamlConfig, UkdConfig) for f in dataclasses.fields(section)},
    **{old: (new,) for old, new in _RENAMED.items()},
    # It shaped both discriminators, adversarial KD's and UKD's: two settings now.
    "adversarial_hidden_units": ("adversarial_kd.discriminator_hidden_units",
                                 f"{_SECTIONS[UkdConfig]}.discriminator_hidden_units"),
}


def moved(key: str, below: str) -> str | None:
    """Where the old setting `key` is now, as keys below `below` (`model.`,
    `tuning.grid.`); None for any other key."""
    paths = _MOVED.get(key)
    return None if paths is None else " and ".join(below + path for path in paths)
