"""How privileged features reach the student: one small object per method.

A strategy is a Keras layer plugged into the one joint model (models/model.py). It
owns the method's extra nets (mapping DNNs g^(i), discriminators, auxiliary towers)
and turns the forward pass into named per-example loss terms that the model adds
to the teacher's and the student's task losses (Eq. 7). It says whether the model
needs a teacher at all, and may give the student an extra encoder (MTL), which is
then exported with the student.

`STRATEGIES` maps `ModelConfig.strategy` names to factories
`(config, privileged_vocab) -> Strategy`; the compound methods are sums of parts.
Weights: the logit term (KD or focal) carries `lam` everywhere; Eq. 6's latent
term carries `align_weight`; the baselines use appendix A's weights.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping, NamedTuple, Sequence

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf

from pfdx.config import ModelConfig
from pfdx.models import losses
from pfdx.models.distributed import gather_batch
from pfdx.models.layers import FeatureIds, Tower


class Outputs(NamedTuple):
    """One forward pass of the joint model. Logits are [B, 1]; latents [B, width]."""

    student_logit: tf.Tensor
    student_latents: tuple[tf.Tensor, ...]
    teacher_logit: tf.Tensor | None = None
    teacher_latents: tuple[tf.Tensor, ...] | None = None
    # Student encoder outputs (MTL: auxiliary logits per privileged feature).
    auxiliary: Mapping[str, tf.Tensor] = {}


class Strategy(tf.keras.layers.Layer):
    """Base: no extra loss.

    `call(outputs, features, labels, step)` gets the forward pass, the feature dict,
    the [B, 1] float labels and the optimizer's step counter, and returns
    {term name: per-example loss [B]}."""

    uses_teacher: bool = True

    def __init__(self, config: ModelConfig, privileged_vocab: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config

    @property
    def student_encoder(self) -> tf.keras.layers.Layer | None:
        """A layer the student applies to its embedded regular features, whose
        outputs (a dict of [B, k] tensors) it concatenates to them."""
        return None

    def call(self, outputs: Outputs, features: Mapping[str, tf.Tensor], labels: tf.Tensor,
             step: tf.Tensor) -> dict[str, tf.Tensor]:
        return {}

    def _tower(self, hidden_units: Sequence[int], output_dim: int, name: str) -> Tower:
        c = self.config
        return Tower(hidden_units, output_dim, c.smelu_beta, c.init_stddev, name=name)


class NoPrivileged(Strategy):
    """`none`: the student alone; no teacher, privileged features unused."""

    uses_teacher = False


class AuxiliaryEncoder(tf.keras.layers.Layer):
    """MTL's auxiliary towers: one DNN per privileged feature, from the regular
    embeddings to that feature's logits over its ids; these logits are the extra
    embeddings the main tower reads (paper §2, Fig. 2a)."""

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
        return {"auxiliary": self.config.mtl_weight * tf.add_n(per_feature)}


_LOGIT_LOSSES = {
    "kd": lambda y, t, s, gamma: losses.kd_loss(t, s, from_logits=True),
    "focal_v1": lambda y, t, s, gamma: losses.focal_v1(t, s, gamma, from_logits=True),
    "focal_v2": lambda y, t, s, gamma: losses.focal_v2(y, t, s, gamma, from_logits=True),
}


class LogitDistillation(Strategy):
    """`kd` (Eq. 2), `focal_v1` (Eq. 3), `focal_v2` (Eq. 4), weighted by lam."""

    def __init__(self, config, privileged_vocab, loss: str = "kd", **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        if loss not in _LOGIT_LOSSES:
            raise ValueError(f"unknown logit loss {loss!r}; one of {sorted(_LOGIT_LOSSES)}")
        self.loss = loss

    def call(self, outputs, features, labels, step):
        value = _LOGIT_LOSSES[self.loss](labels, outputs.teacher_logit, outputs.student_logit,
                                         self.config.gamma)
        return {self.loss: self.config.lam * tf.reshape(value, [-1])}


# (student latent index, teacher latent index). Layer alignment pairs layer i with
# layer i; ReviewKD also aligns student latent 2 with teacher latent 1 (appendix B).
ALIGN_PAIRS = ((0, 0), (1, 1))
REVIEW_PAIRS = ALIGN_PAIRS + ((1, 0),)


class LayerAlignment(Strategy):
    """`layer_align` (Eq. 5) and, with `review=True`, `review_kd`: per pair a
    mapping DNN g maps the student latent to the teacher latent's width."""

    def __init__(self, config, privileged_vocab, review: bool = False, **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        self.pairs = REVIEW_PAIRS if review else ALIGN_PAIRS
        self.weight = config.review_weight if review else config.align_weight
        self.term = "review" if review else "layer_align"
        self.mappings = [self._tower(config.mapping_hidden_units, config.hidden_units[t],
                                     f"mapping_{s}_to_{t}") for s, t in self.pairs]

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
        return {"similarity": self.config.similarity_weight * value}


class AdversarialKD(Strategy):
    """`adversarial_kd`: one discriminator per latent layer learns teacher (1) vs
    student (0); after `adversarial_warmup_steps` the student also learns to be
    scored as the teacher, through the frozen discriminators."""

    def __init__(self, config, privileged_vocab, **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        self.discriminators = [self._tower(config.adversarial_hidden_units, 1, f"discriminator_{i}")
                               for i in range(len(config.hidden_units))]

    def call(self, outputs, features, labels, step):
        c = self.config
        pairs = list(zip(self.discriminators, outputs.student_latents, outputs.teacher_latents))
        teacher_scores = [d(tf.stop_gradient(f_t))[0] for d, _, f_t in pairs]
        student_scores = [d(tf.stop_gradient(f_s))[0] for d, f_s, _ in pairs]
        fooled = [d(f_s, frozen=True)[0] for d, f_s, _ in pairs]
        warm = tf.cast(step >= c.adversarial_warmup_steps, outputs.student_logit.dtype)
        return {
            "discriminator": c.adversarial_disc_weight
            * losses.discriminator_loss(teacher_scores, student_scores),
            "adversarial": warm * c.adversarial_weight * losses.adversarial_student_loss(fooled),
        }


class Combined(Strategy):
    """A sum of strategies (e.g. HA-PFD = layer alignment + focal distillation)."""

    def __init__(self, config, privileged_vocab, parts: Sequence[Callable[..., Strategy]],
                 **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        self.parts = [part(config, privileged_vocab) for part in parts]
        self.uses_teacher = any(p.uses_teacher for p in self.parts)

    def call(self, outputs, features, labels, step):
        terms: dict[str, tf.Tensor] = {}
        for part in self.parts:
            terms.update(part(outputs, features, labels, step))
        return terms


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
}


def make_strategy(config: ModelConfig, privileged_vocab: Mapping[str, int]) -> Strategy:
    try:
        factory = STRATEGIES[config.strategy]
    except KeyError:
        raise ValueError(f"model.strategy: unknown strategy {config.strategy!r}; "
                         f"one of {sorted(STRATEGIES)}") from None
    return factory(config, privileged_vocab, name=config.strategy)
