"""Every strategy by name (`STRATEGIES`, `make_strategy`) and the click-space ones:
the student alone, HA-PFD's parts and baselines (HA-PFD appendix A) and EKTF.
The interface they implement is models/strategy_base.py; TAML and UKD, which train
on every impression, are models/impression_strategies.py.

`STRATEGIES` maps `ModelConfig.strategy` names to factories
`(config, privileged_vocab) -> Strategy`; the compound methods are sums of parts.
What the code around the model knows of each (space, teacher stage, loss terms,
hyperparameters) is declared TensorFlow-free in models/registry.py.
Weights: the logit term (KD or focal) carries `kd.lam` everywhere; HA-PFD Eq. 6's
latent term `alignment.weight`; the baselines use HA-PFD appendix A's weights.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

import numpy as np

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf

from pfdx.config import ModelConfig
from pfdx.models import heads as heads_lib
from pfdx.models import impression_strategies, losses
from pfdx.models.distributed import gather_batch
from pfdx.models.heads import head_key
from pfdx.models.layers import FeatureIds, Tower
from pfdx.models.registry import CLICK as CLICK_SPACE
from pfdx.models.strategy_base import Strategy


class NoPrivileged(Strategy):
    """`none`: the student alone; no teacher, privileged features unused."""

    uses_teacher = False


class AuxiliaryEncoder(tf.keras.layers.Layer):
    """MTL's auxiliary towers: one DNN per privileged feature, from the regular
    embeddings to that feature's logits over its ids; these logits are the extra
    embeddings the main tower reads (HA-PFD §2, Fig. 2a)."""

    def __init__(self, towers: Mapping[str, Tower], **kwargs):
        super().__init__(**kwargs)
        self.towers = dict(towers)

    def call(self, embedded: tf.Tensor) -> dict[str, tf.Tensor]:
        return {name: tower(embedded)[0] for name, tower in self.towers.items()}


class AuxiliaryTowers(Strategy):
    """`mtl`: each privileged feature is a label of an auxiliary task (softmax
    cross-entropy over its ids: the Transform has already discretised continuous
    signals); the auxiliary towers feed the student and are served with it."""

    uses_teacher = False

    def __init__(self, config, privileged_vocab, **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        self.targets = FeatureIds(privileged_vocab, name="targets")
        self.encoder = AuxiliaryEncoder(
            {name: self._tower(config.hidden_units, size, f"auxiliary_{name}")
             for name, size in self.targets.vocab_sizes.items()}, name="auxiliary_towers")

    @property
    def student_encoder(self):
        return self.encoder

    def call(self, outputs, features, labels, step):
        ids = self.targets(features)
        if not ids:
            return {}
        per_feature = [tf.nn.sparse_softmax_cross_entropy_with_logits(ids[name], logits)
                       for name, logits in outputs.auxiliary.items()]
        return {"auxiliary": self.config.mtl.weight * tf.add_n(per_feature)}


_LOGIT_LOSSES = {
    "kd": lambda y, t, s, gamma: losses.kd_loss(t, s, from_logits=True),
    "focal_v1": lambda y, t, s, gamma: losses.focal_v1(t, s, gamma, from_logits=True),
    "focal_v2": lambda y, t, s, gamma: losses.focal_v2(y, t, s, gamma, from_logits=True),
}


class LogitDistillation(Strategy):
    """`kd` (HA-PFD Eq. 2), `focal_v1` (Eq. 3), `focal_v2` (Eq. 4), weighted by `kd.lam`."""

    def __init__(self, config, privileged_vocab, loss: str = "kd", **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        if loss not in _LOGIT_LOSSES:
            raise ValueError(f"unknown logit loss {loss!r}; one of {sorted(_LOGIT_LOSSES)}")
        self.loss = loss

    def call(self, outputs, features, labels, step):
        kd = self.config.kd
        value = _LOGIT_LOSSES[self.loss](labels, outputs.teacher_logit, outputs.student_logit,
                                         kd.gamma)
        return {self.loss: kd.lam * tf.reshape(value, [-1])}


# (student latent index, teacher latent index). Layer alignment pairs layer i with
# layer i; ReviewKD also aligns student latent 2 with teacher latent 1 (HA-PFD appendix B).
ALIGN_PAIRS = ((0, 0), (1, 1))
REVIEW_PAIRS = ALIGN_PAIRS + ((1, 0),)


class LayerAlignment(Strategy):
    """`layer_align` (HA-PFD Eq. 5) and, with `review=True`, `review_kd`: per pair a
    mapping DNN g maps the student latent to the teacher latent's width."""

    def __init__(self, config, privileged_vocab, review: bool = False, **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        self.pairs = REVIEW_PAIRS if review else ALIGN_PAIRS
        self.weight = config.review_kd.weight if review else config.alignment.weight
        self.term = "review" if review else "layer_align"
        self.mappings = [self._tower(config.alignment.mapping_hidden_units,
                                     config.hidden_units[t], f"mapping_{s}_to_{t}")
                         for s, t in self.pairs]

    def call(self, outputs, features, labels, step):
        mapped = [g(outputs.student_latents[s])[0] for g, (s, _) in zip(self.mappings, self.pairs)]
        teacher = [outputs.teacher_latents[t] for _, t in self.pairs]
        return {self.term: self.weight * losses.layer_align_loss(mapped, teacher)}


class SimilarityKD(Strategy):
    """`similarity_kd`: batch similarity matrices of student and teacher latents
    (layer i with layer i) should agree; the rows are compared against the whole
    global batch, gathered from all replicas."""

    def call(self, outputs, features, labels, step):
        student, teacher = outputs.student_latents, outputs.teacher_latents
        value = losses.similarity_kd_loss(
            student, teacher, [gather_batch(f) for f in student],
            [gather_batch(tf.stop_gradient(f)) for f in teacher])
        return {"similarity": self.config.similarity_kd.weight * value}


class AdversarialKD(Strategy):
    """`adversarial_kd`: one discriminator per latent layer learns teacher (1) vs
    student (0); after `adversarial_kd.warmup_steps` the student also learns to be
    scored as the teacher, through the frozen discriminators."""

    def __init__(self, config, privileged_vocab, **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        self.discriminators = [
            self._tower(config.adversarial_kd.discriminator_hidden_units, 1, f"discriminator_{i}")
            for i in range(len(config.hidden_units))]

    def call(self, outputs, features, labels, step):
        c = self.config.adversarial_kd
        pairs = list(zip(self.discriminators, outputs.student_latents, outputs.teacher_latents))
        teacher_scores = [d(tf.stop_gradient(f_t))[0] for d, _, f_t in pairs]
        student_scores = [d(tf.stop_gradient(f_s))[0] for d, f_s, _ in pairs]
        fooled = [d(f_s, frozen=True)[0] for d, f_s, _ in pairs]
        warm = tf.cast(step >= c.warmup_steps, outputs.student_logit.dtype)
        return {
            "discriminator": c.discriminator_weight
            * losses.discriminator_loss(teacher_scores, student_scores),
            "adversarial": warm * c.weight * losses.adversarial_student_loss(fooled),
        }

# Decay of the running exam scores that pick EKTF's best head (~ the last 100 steps).
EXAM_DECAY = 0.99


class EnsembleDistillation(Strategy):
    """`ektf` (Ensemble Knowledge Transfer, EKTF): `ektf.heads` student towers
    on the shared regular embeddings. Their mean probability p_t = mean_k p_k is
    the abstract teacher (EKTF Eq. 2: y_t = Mean(y_s,1..k), a mean of predictions)
    and the served prediction (the ensemble's logit is that of p_t). Per example
    (EKTF Eq. 6):
        heads_task = mean_k BCE(y, p_k),
        ektf_kd    = sum_k lambda_k (p_t - p_k)^2,    lambda = softmin(S)  (EKTF Eq. 2, 5),
        ektf_dml   = mean_k sum_{l != k} mu_kl (p_l - p_k)^2,  mu_k = softmax_l(S_l - S_k)
                                                                           (EKTF Eq. 3, 5),
    with exam scores S_k = 1 - mean |y - p_k| over the global batch (EKTF Eq. 4);
    teacher and peers are constants in head k's terms. EKTF Eq. 4 is followed as written,
    so a larger S_k is a better head; the paper's sentence after it ("a smaller S_k
    indicates better learning progress") contradicts the formula and Eq. 5's use of
    it. Alone it has no privileged teacher; combined (`ha_pfd_v2_ektf`) the
    privileged teacher distils into the ensemble (the served logit and the heads'
    concatenated latents).

    Serving (`ektf.serve`): the ensemble, or the one head with the best running
    exam score over training (the paper's cheaper option)."""

    uses_teacher = False
    owns_student_task = True

    def __init__(self, config, privileged_vocab, **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        ektf = config.ektf
        if ektf.heads < 2:
            raise ValueError(f"model.ektf.heads: EKTF needs at least 2 heads, got {ektf.heads}")
        self.heads = heads_lib.EnsembleHeads(
            [self._tower(config.hidden_units, 1, f"student_head_{k}")
             for k in range(ektf.heads)], fusion="probability", name="student_heads")
        # Replicas hold the same value: the scores come from the gathered batch.
        self.exam_average = self.add_weight(
            "exam_average", shape=[ektf.heads], initializer="zeros", trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    @property
    def student_head(self):
        return self.heads

    @property
    def serving_head(self):
        if self.config.ektf.serve == "ensemble":
            return None
        return self.heads.towers[self.best_head()]

    def best_head(self) -> int:
        return int(np.argmax(self.exam_average.numpy()))

    def call(self, outputs, features, labels, step, training=None):
        logits = tf.concat([outputs.student_heads[head_key("head", k)]
                            for k in range(self.config.ektf.heads)], axis=-1)  # [B, K]
        scores = losses.exam_scores(gather_batch(labels), gather_batch(tf.sigmoid(logits)))
        if training:
            self.exam_average.assign(EXAM_DECAY * self.exam_average + (1.0 - EXAM_DECAY) * scores)
        terms = losses.ektf_losses(labels, logits, scores)
        return {"heads_task": tf.reduce_mean(terms["task"], axis=-1),
                "ektf_kd": tf.reduce_sum(terms["kd"], axis=-1),
                "ektf_dml": tf.reduce_mean(terms["dml"], axis=-1)}

class Combined(Strategy):
    """A sum of strategies (e.g. HA-PFD = layer alignment + focal distillation)."""

    def __init__(self, config, privileged_vocab, parts: Sequence[Callable[..., Strategy]],
                 **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        self.parts = [part(config, privileged_vocab) for part in parts]
        self.uses_teacher = any(p.uses_teacher for p in self.parts)
        self.owns_student_task = any(p.owns_student_task for p in self.parts)
        if any(p.space != CLICK_SPACE for p in self.parts):
            raise ValueError("only click-space strategies combine")
        self._head_part = _one_of([p for p in self.parts if p.student_head is not None])

    @property
    def student_head(self):
        return self._head_part.student_head if self._head_part else None

    @property
    def serving_head(self):
        return self._head_part.serving_head if self._head_part else None

    def call(self, outputs, features, labels, step):
        terms: dict[str, tf.Tensor] = {}
        for part in self.parts:
            terms.update(part(outputs, features, labels, step))
        return terms


def _one_of(parts: list[Strategy]) -> Strategy | None:
    if len(parts) > 1:
        raise ValueError(f"at most one combined part may change the student: {parts}")
    return parts[0] if parts else None


def _combined(*parts: Callable[..., Strategy]) -> Callable[..., Strategy]:
    return functools.partial(Combined, parts=parts)


_KD = functools.partial(LogitDistillation, loss="kd")
_FOCAL_V1 = functools.partial(LogitDistillation, loss="focal_v1")
_FOCAL_V2 = functools.partial(LogitDistillation, loss="focal_v2")

STRATEGIES: dict[str, Callable[[ModelConfig, Mapping[str, int]], Strategy]] = {
    "none": NoPrivileged,
    "mtl": AuxiliaryTowers,
    "kd": _KD,
    "focal_v1": _FOCAL_V1,
    "focal_v2": _FOCAL_V2,
    "layer_align": LayerAlignment,
    "kd_layer_align": _combined(LayerAlignment, _KD),
    "ha_pfd_v1": _combined(LayerAlignment, _FOCAL_V1),
    "ha_pfd_v2": _combined(LayerAlignment, _FOCAL_V2),
    "review_kd": functools.partial(LayerAlignment, review=True),
    "similarity_kd": SimilarityKD,
    "adversarial_kd": AdversarialKD,
    "ektf": EnsembleDistillation,
    "ha_pfd_v2_ektf": _combined(LayerAlignment, _FOCAL_V2, EnsembleDistillation),
    **impression_strategies.STRATEGIES,
}


def make_strategy(config: ModelConfig, privileged_vocab: Mapping[str, int]) -> Strategy:
    try:
        factory = STRATEGIES[config.strategy]
    except KeyError:
        raise ValueError(f"model.strategy: unknown strategy {config.strategy!r}; "
                         f"one of {sorted(STRATEGIES)}") from None
    return factory(config, privileged_vocab, name=config.strategy)
