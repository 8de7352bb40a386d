"""Student heads with more than one output: what a strategy may put in place of the
student's single tower (models/model.py `Student`).

A head maps the student's tower input to `HeadOutputs`: the served CVR logit, the
latents the latent-level strategies align, and named extra logits (the heads of
an ensemble, the learners of a task, a CTR tower). Every net here is student-side:
what the strategy chooses to serve of it is exported with the student.

- `EnsembleHeads`: K towers fused by the mean of their probabilities (EKTF's
  students) or of their logits (TAML's learners of one task).
- `TaskAdaptiveLearners`: TAML's hierarchical experts, adaptive gates and n
  learners per task (CVR and CTR).
- `TwinDropoutHeads`: UKD's student: a CVR representation, two dropout CVR
  predictors (served: the mean of their probabilities), and a CTR tower.
- `GradientReversal`: identity forward, -scale x gradient backward (UKD's
  click-adaptive teacher).
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf

from pfdx.models.layers import SmeLU, Tower, smelu, truncated_normal

CTR = "ctr"  # key of a CTR logit among HeadOutputs.heads


class HeadOutputs(NamedTuple):
    logit: tf.Tensor  # the served CVR logit, [B, 1]
    latents: tuple[tf.Tensor, ...]
    heads: Mapping[str, tf.Tensor] = {}  # named extra logits, [B, 1] each


def head_key(prefix: str, index: int) -> str:
    return f"{prefix}_{index}"


def mean_probability_logit(logits: Sequence[tf.Tensor]) -> tf.Tensor:
    """The logit of mean_k sigmoid(logit_k), [B, 1] from [B, 1] logits: log p / (1 - p)
    from log-sum-exps of log-sigmoids, finite where a float32 mean has rounded to 0 or 1."""
    stacked = tf.concat(list(logits), axis=-1)
    return (tf.reduce_logsumexp(tf.math.log_sigmoid(stacked), axis=-1, keepdims=True)
            - tf.reduce_logsumexp(tf.math.log_sigmoid(-stacked), axis=-1, keepdims=True))


# How an ensemble fuses its towers: the logit of their mean probability, or their mean logit.
FUSIONS = {"probability": mean_probability_logit,
           "logit": lambda logits: tf.add_n(list(logits)) / len(logits)}


class EnsembleHeads(tf.keras.layers.Layer):
    """Towers fused by `fusion`: "probability" (the fused logit is that of the mean
    probability) or "logit" (the mean logit).

    `call(x)` feeds one input to every tower, or input i to tower i when `x` is a
    list. Heads are named `<prefix>_<k>`. Latent layer i of the ensemble is the
    concatenation of the towers' layer-i latents, so a latent-level strategy sees
    (and trains) every tower."""

    def __init__(self, towers: Sequence[Tower], prefix: str = "head",
                 fusion: str = "probability", **kwargs):
        super().__init__(**kwargs)
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; one of {sorted(FUSIONS)}")
        self.towers = list(towers)
        self.prefix = prefix
        self.fusion = fusion

    def call(self, x) -> HeadOutputs:
        inputs = x if isinstance(x, (list, tuple)) else [x] * len(self.towers)
        outs = [tower(i) for tower, i in zip(self.towers, inputs)]
        logits = [logit for logit, _ in outs]
        latents = tuple(tf.concat(layer, axis=-1) for layer in zip(*(lat for _, lat in outs)))
        return HeadOutputs(FUSIONS[self.fusion](logits), latents,
                           {head_key(self.prefix, k): l for k, l in enumerate(logits)})


def _activation(config) -> tf.keras.layers.Layer:
    """TAML's activation (`taml.activation`): pfdx's SmeLU or the paper's ReLU."""
    if config.taml.activation == "relu":
        return tf.keras.layers.ReLU()
    if config.taml.activation == "smelu":
        return SmeLU(config.smelu_beta)
    raise ValueError(f"model.taml.activation: {config.taml.activation!r} is not smelu or relu")


class ActivationTower(Tower):
    """A `Tower` whose hidden layers use `activation` instead of SmeLU."""

    def __init__(self, hidden_units: Sequence[int], output_dim: int,
                 activation: tf.keras.layers.Layer, init_stddev: float, **kwargs):
        super().__init__(hidden_units, output_dim, init_stddev=init_stddev, **kwargs)
        self.activation = activation


def _experts(n: int, config, name: str) -> list[tf.keras.Sequential]:
    """One-layer perceptrons (TAML §3.2: one hidden layer of 64 units)."""
    c = config
    return [tf.keras.Sequential([
        tf.keras.layers.Dense(c.taml.expert_units,
                              kernel_initializer=truncated_normal(c.init_stddev),
                              bias_initializer=truncated_normal(c.init_stddev)),
        _activation(c)], name=f"{name}_{i}") for i in range(n)]


class TaskBranch(tf.keras.layers.Layer):
    """One task of TAML: its experts, one gate and one learner tower per learner.
    Learner l reads softmax(W^l x)-weighted experts [general..., task..., its own]
    (TAML Eq. 1); the learners are fused by averaging logits (§2.3), each a tower of
    `taml.hidden_units` (None: `hidden_units`) with `taml.activation`."""

    def __init__(self, config, task: str, **kwargs):
        super().__init__(name=f"{task}_branch", **kwargs)
        c, taml = config, config.taml
        self.task_experts = _experts(taml.experts, c, f"{task}_expert")
        self.learner_experts = _experts(taml.learners, c, f"{task}_learner_expert")
        self.gates = [tf.keras.layers.Dense(2 * taml.experts + 1, use_bias=False,
                                            kernel_initializer=truncated_normal(c.init_stddev),
                                            name=f"{task}_gate_{l}")
                      for l in range(taml.learners)]
        units = c.hidden_units if taml.hidden_units is None else taml.hidden_units
        self.learners = EnsembleHeads(
            [ActivationTower(units, 1, _activation(c), c.init_stddev, name=f"{task}_learner_{l}")
             for l in range(taml.learners)], prefix=task, fusion="logit", name=f"{task}_learners")

    def gate_weights(self, x) -> list[tf.Tensor]:
        """Each learner's weights over [general..., task..., own], [B, 2e + 1]."""
        return [tf.nn.softmax(gate(x), axis=-1) for gate in self.gates]

    def call(self, x, general: Sequence[tf.Tensor]) -> HeadOutputs:
        shared = list(general) + [e(x) for e in self.task_experts]
        inputs = []
        for own, weights in zip(self.learner_experts, self.gate_weights(x)):
            stacked = tf.stack(shared + [own(x)], axis=1)  # [B, experts, units]
            inputs.append(tf.reduce_sum(weights[:, :, tf.newaxis] * stacked, axis=1))
        return self.learners(inputs)


class TaskAdaptiveLearners(tf.keras.layers.Layer):
    """TAML §2.2-2.3: general experts shared by every task, and one `TaskBranch`
    per task. The served logit is the fused CVR logit; heads hold every learner
    (`cvr_l`, `ctr_l`) and, with a CTR branch, the fused CTR logit (`ctr`)."""

    def __init__(self, general: Sequence[tf.keras.layers.Layer],
                 branches: Mapping[str, TaskBranch], **kwargs):
        super().__init__(**kwargs)
        self.general = list(general)
        self.branches = dict(branches)

    def cvr_only(self) -> "TaskAdaptiveLearners":
        """The same weights without the CTR branch: what serves CVR alone."""
        return TaskAdaptiveLearners(self.general, {"cvr": self.branches["cvr"]},
                                    name=f"{self.name}_cvr")

    def call(self, x) -> HeadOutputs:
        general = [e(x) for e in self.general]
        fused = {task: branch(x, general) for task, branch in self.branches.items()}
        heads = {k: v for out in fused.values() for k, v in out.heads.items()}
        if CTR in fused:
            heads[CTR] = fused[CTR].logit
        return HeadOutputs(fused["cvr"].logit, fused["cvr"].latents, heads)


class TwinDropoutHeads(tf.keras.layers.Layer):
    """UKD §3.2: S_f^v (a CVR tower without its output layer) -> h_conv; two CVR
    predictors S_p^v, S_p^v', each behind its own dropout (Eq. 11); optionally a
    CTR tower S_f^c + S_p^c on the same input. The served logit is that of the two
    CVR heads' mean probability, (p_conv + p'_conv) / 2 (UKD appendix A.1); heads:
    `cvr_0`, `cvr_1` and, with the CTR tower, `ctr`."""

    def __init__(self, representation: Tower, predictors: Sequence[Tower], dropout: float,
                 ctr: Tower | None = None, **kwargs):
        super().__init__(**kwargs)
        self.representation = representation
        self.predictors = list(predictors)
        self.dropout = float(dropout)
        self.dropouts = [tf.keras.layers.Dropout(self.dropout) for _ in self.predictors]
        self.ctr = ctr

    def cvr_only(self) -> "TwinDropoutHeads":
        return TwinDropoutHeads(self.representation, self.predictors, self.dropout,
                                name=f"{self.name}_cvr")

    def call(self, x, training=None) -> HeadOutputs:
        pre, hidden = self.representation(x)
        h = smelu(pre, self.representation.beta)  # h_conv, the CVR tower's last hidden layer
        logits = [p(d(h, training=training))[0] for p, d in zip(self.predictors, self.dropouts)]
        heads = {head_key("cvr", i): l for i, l in enumerate(logits)}
        if self.ctr is not None:
            heads[CTR] = self.ctr(x)[0]
        return HeadOutputs(mean_probability_logit(logits), (*hidden, h), heads)


def task_adaptive_learners(config, name: str = "taml") -> TaskAdaptiveLearners:
    """TAML's student head from `ModelConfig` (`model.taml`), CVR and CTR."""
    return TaskAdaptiveLearners(_experts(config.taml.experts, config, "general_expert"),
                                {t: TaskBranch(config, t) for t in ("cvr", CTR)}, name=name)


def reverse_gradient(x: tf.Tensor, scale: float) -> tf.Tensor:
    """Identity forward (x + 0 * -scale); the gradient is multiplied by -scale on the
    way back, however it is differentiated. Not `tf.custom_gradient`, which keeps
    every traced graph alive (models/layers.py `with_gradient`)."""
    return tf.stop_gradient(x) + (x - tf.stop_gradient(x)) * -scale


class GradientReversal(tf.keras.layers.Layer):
    """Ganin & Lempitsky's gradient reversal: what feeds it maximises the loss
    behind it (times `scale`) while the layers behind it minimise that loss."""

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, x):
        return reverse_gradient(x, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
