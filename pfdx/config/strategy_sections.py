"""The settings of the strategies' building blocks, one section of `model` each
(`model.kd.lam`, `model.ukd.dropout`). A strategy reads its blocks' sections only,
as its entry in models/registry.py names them (`term_weights`, `settings`); a
combined strategy reads its parts' (HA-PFD V2: `alignment` and `kd`). The defaults
are the papers' unless a comment says why not.

Papers by short name: HA-PFD, EKTF, TAML, UKD (docs/architecture.md lists them).
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from pfdx.config.coercion import ConfigError


@dataclasses.dataclass(frozen=True)
class KdConfig:
    """The logit-distillation term of `kd`, `focal_v1`, `focal_v2` and HA-PFD:
    λ · (KD, HA-PFD Eq. 2; or focal V1 / V2, HA-PFD Eq. 3 / 4), λ as in HA-PFD Eq. 6."""

    lam: float = 10.0
    # The focal losses' hardness exponent (HA-PFD Eq. 3, 4; §4.1 tunes it to 1); KD has none.
    gamma: float = 1.0


@dataclasses.dataclass(frozen=True)
class AlignmentConfig:
    """HA-PFD's latent alignment (`layer_align` and HA-PFD; HA-PFD Eq. 5): each
    student latent mapped by a DNN g^(i) to the teacher latent's width. Its weight is
    HA-PFD Eq. 6's 1; appendix A also says ReviewKD's 10 is "the same as our layer aligning
    strategy", a second reading, so per-run tuning tries 0.1, 1 and 10
    (docs/paper-deviations.md item 10)."""

    weight: float = 1.0
    # Hidden layers of each mapping DNN (review KD's too). The paper says only "a DNN".
    mapping_hidden_units: tuple[int, ...] = (128,)


@dataclasses.dataclass(frozen=True)
class TermWeightConfig:
    """A block whose one setting is its loss term's weight: HA-PFD appendix A's
    baselines `review_kd`, `similarity_kd` and `mtl` (their defaults: ModelConfig)."""

    weight: float


@dataclasses.dataclass(frozen=True)
class AdversarialKdConfig:
    """The `adversarial_kd` baseline (HA-PFD appendix A): one discriminator per
    latent layer learns teacher from student; the student learns to fool them."""

    weight: float = 10.0
    discriminator_weight: float = 1.0
    discriminator_hidden_units: tuple[int, ...] = (128, 64)
    # Steps the discriminators train alone before the student is pushed to fool
    # them (paper: 5M batches of a 1.39B-row log).
    warmup_steps: int = 1_000


@dataclasses.dataclass(frozen=True)
class EktfConfig:
    """EKTF (`ektf`, `ha_pfd_v2_ektf`): `heads` student towers on the shared
    embeddings, taught by their mean probability (EKTF Eq. 2); serve that mean
    (`ensemble`) or the head with the best running exam score (`best`, EKTF Eq. 4)."""

    heads: int = 3
    serve: Literal["ensemble", "best"] = "ensemble"


@dataclasses.dataclass(frozen=True)
class TamlConfig:
    """TAML (`taml`, impression space): `learners` per task; `experts` per group
    (general, per task; each learner also has its own, so a gate weighs 2e + 1
    experts, TAML Eq. 1) of `expert_units`; self-distillation weights alpha (CTR,
    TAML Eq. 2) and beta (CVR, TAML Eq. 3)."""

    learners: int = 2
    experts: int = 1
    expert_units: int = 64
    # Learner towers' hidden layers (None: model.hidden_units) and the experts' and
    # learners' activation, smelu | relu. The paper's: (64, 32), relu (with lr 1e-3,
    # batch 2000); the defaults keep HA-PFD's towers so strategies compare on one
    # architecture (docs/paper-deviations.md item 8).
    hidden_units: tuple[int, ...] | None = None
    activation: Literal["smelu", "relu"] = "smelu"
    alpha: float = 0.1
    beta: float = 0.1


@dataclasses.dataclass(frozen=True)
class UkdConfig:
    """UKD (`ukd_teacher`, then `ukd`; impression space). The student: CTR loss
    weight gamma (UKD Eq. 10), pseudo-label weight alpha and uncertainty scale lambda
    (UKD Eq. 12), dropout before its two CVR heads (UKD Eq. 11). The teacher: the
    gradient-reversal scale and the tower of its click discriminator (UKD Eq. 7), and
    its sample of the unclicked rows."""

    ctr_weight: float = 0.2
    pseudo_weight: float = 0.5
    uncertainty_scale: float = 100.0
    dropout: float = 0.2
    # The towers of teacher and student (None: model.hidden_units). The paper's:
    # (1024, 512, 256), with lr 0.005 and batch 128; the default keeps HA-PFD's
    # towers so strategies compare on one architecture (docs/paper-deviations.md item 5).
    hidden_units: tuple[int, ...] | None = None
    reversal_scale: float = 1.0
    discriminator_hidden_units: tuple[int, ...] = (128, 64)
    # Share of the unclicked impressions the teacher trains on (all clicked rows do,
    # UKD §3.1). None: derived from the train split's observed CTR as CTR / (1 - CTR),
    # so clicked : unclicked is 1 : 1 (UKD appendix A.1); a number fixes it.
    unclicked_rate: float | None = None

    def validate(self) -> None:
        rate = self.unclicked_rate
        if rate is not None and not 0.0 < rate <= 1.0:
            raise ConfigError(f"model.ukd.unclicked_rate: {rate} is not in (0, 1] or null")
