"""The impression-space strategies, trained on every impression with its click
label (`space = "impression"`): TAML, and UKD's two stages. Each student is a
multi-head network of models/heads.py; they own the student's supervised loss and
have no privileged teacher (UKD's teacher is a strategy of its own, trained first:
models/registry.py `teacher_stage`).
"""
from __future__ import annotations

from typing import Callable, Mapping

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf

from pfdx.config import ModelConfig
from pfdx.models import heads as heads_lib
from pfdx.models import losses
from pfdx.models.heads import CTR, TwinDropoutHeads, head_key
from pfdx.models.layers import Tower
from pfdx.models.registry import IMPRESSION as IMPRESSION_SPACE
from pfdx.models.strategy_base import CLICK, PSEUDO_LABEL, Strategy


def _bce(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), [-1])


class _ImpressionNetwork(Strategy):
    """Base of the impression-space strategies whose student *is* a multi-head
    network (`network_factory(config)`, models/heads.py): they own the student's
    supervised loss, have no privileged teacher, and serve the network's CVR part
    (all of it with `serve_ctr`)."""

    uses_teacher = False
    owns_student_task = True
    space = IMPRESSION_SPACE
    network_factory: Callable[[ModelConfig], tf.keras.layers.Layer]

    def __init__(self, config, privileged_vocab, **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        self.network = self.network_factory(config)

    @property
    def student_head(self):
        return self.network

    @property
    def serving_head(self):
        return None if self.config.serve_ctr else self.network.cvr_only()


class TaskAdaptiveMultiLearner(_ImpressionNetwork):
    """`taml` (Task Adaptive Multi-Learner, TAML), impression space: the
    student is TAML's network (heads.TaskAdaptiveLearners: experts, gates (TAML
    Eq. 1), n learners per task fused by averaging logits, §2.3). Per impression
    (TAML Eq. 6):
        ctr_task   = BCE(y_click, p_ctr),                        (TAML Eq. 4)
        ctcvr_task = BCE(y_click * y_conv, p_ctr * p_cvr),       (TAML Eq. 5)
        ctr_self_kd = alpha * sum_l KD(p_ctr -> p_ctr^l),        (TAML Eq. 2)
        cvr_self_kd = beta  * sum_l KD(p_cvr -> p_cvr^l),        (TAML Eq. 3)
    the fused outputs fixed in the self-distillation. No privileged teacher.
    Serves the fused CVR (and the fused CTR with `serve_ctr`).

    Towers: the paper's learners are 64/32/1 ReLU MLPs (TAML §3.2, with lr 1e-3, batch
    2000, L2 1e-6); by default pfdx's are HA-PFD's `hidden_units` SmeLU towers, so
    every strategy of a comparison has the same capacity and activation. The
    paper's shape is `taml.hidden_units: [64, 32]`, `taml.activation: relu` away
    (and learning_rate / batch_size; pfdx has Adam's decoupled weight_decay, not an
    L2 term)."""

    network_factory = staticmethod(heads_lib.task_adaptive_learners)

    def call(self, outputs, features, labels, step, side):
        c, heads, click = self.config.taml, outputs.student_heads, side[CLICK]
        ctr, cvr = heads[CTR], outputs.student_logit
        learners = {task: [heads[head_key(task, l)] for l in range(c.learners)]
                    for task in ("cvr", CTR)}
        return {
            "ctr_task": _bce(click, ctr),
            "ctcvr_task": losses.ctcvr_loss(click * labels, ctr, cvr),
            "ctr_self_kd": c.alpha * losses.self_distillation(ctr, learners[CTR]),
            "cvr_self_kd": c.beta * losses.self_distillation(cvr, learners["cvr"]),
        }


def ukd_hidden_units(config) -> tuple[int, ...]:
    """UKD's tower widths (teacher and student): `ukd.hidden_units`, else `hidden_units`."""
    return config.hidden_units if config.ukd.hidden_units is None else config.ukd.hidden_units


def twin_dropout_heads(config, name: str = "ukd_student") -> TwinDropoutHeads:
    """UKD's student head from `ModelConfig`: the CVR tower's hidden layers
    (`ukd.hidden_units`), two linear predictors behind `ukd.dropout`, and a CTR
    tower of the same shape."""
    c, units = config, ukd_hidden_units(config)

    def tower(units, out, name):
        return Tower(units, out, c.smelu_beta, c.init_stddev, name=name)

    return TwinDropoutHeads(tower(units[:-1], units[-1], "cvr_representation"),
                            [tower((), 1, f"cvr_predictor_{i}") for i in range(2)], c.ukd.dropout,
                            tower(units, 1, "ctr_tower"), name=name)


class ClickAdaptiveTeacher(Strategy):
    """`ukd_teacher` (UKD stage 1, UKD §3.1), impression space: the student
    model is the click-adaptive teacher T_f + T_p (a tower of `ukd.hidden_units`),
    trained on clicked rows' labels (UKD Eq. 6: the model's student task, weighted
    by the click) while a click discriminator T_d on its last hidden layer learns
    clicked vs unclicked through a gradient reversal (UKD Eq. 7), which pushes T_f
    to make the two indistinguishable. It trains on every clicked row and, by
    default, as many unclicked ones (`ukd.unclicked_rate: null`: the rate comes
    from the observed CTR; UKD appendix A.1's 1 : 1). Its exported student
    pseudo-labels unclicked impressions (models/impressions.py
    `with_pseudo_labels`)."""

    uses_teacher = False
    space = IMPRESSION_SPACE

    def __init__(self, config, privileged_vocab, **kwargs):
        super().__init__(config, privileged_vocab, **kwargs)
        self.reversal = heads_lib.GradientReversal(config.ukd.reversal_scale)
        self.discriminator = self._tower(config.ukd.discriminator_hidden_units, 1,
                                         "click_discriminator")
        self.tower = self._tower(ukd_hidden_units(config), 1, "student_tower")

    @property
    def student_head(self):
        return self.tower

    def call(self, outputs, features, labels, step, side):
        scores = self.discriminator(self.reversal(outputs.student_latents[-1]))[0]
        return {"click_discriminator": _bce(side[CLICK], scores)}


class UncertaintyDistillation(_ImpressionNetwork):
    """`ukd` (UKD stage 2, UKD §3.2), impression space: labels carry the
    teacher's `pseudo_label` for every row. The student (heads.TwinDropoutHeads)
    has two dropout CVR heads p, p' (UKD Eq. 11) and a CTR tower. Per impression,
    the two heads treated equally and their losses *summed* (UKD appendix A.1: L_CVR
    "also contains the symmetrical terms"):
        cvr_click   = click * (BCE(y_conv, p) + BCE(y_conv, p')),           (UKD Eq. 9)
        cvr_unclick = alpha * (1 - click) * (exp(-lambda KL(p || p')) BCE(p_T, p)
                                 + exp(-lambda KL(p' || p)) BCE(p_T, p')),  (UKD Eq. 12, appendix A.1)
        uncertainty = (1 - click) * KL(p || p'),          (the regulariser after UKD Eq. 12)
        ctr_task    = gamma * BCE(y_click, p_ctr).                          (UKD Eq. 10)
    Each head's weight uses the KL from its own prediction (UKD Eq. 12 for p, appendix
    A.1 for p'); the regulariser is the one KL §3.2.2 writes. The weight keeps its
    gradient, as in the paper: the KL term is what stops the heads from disagreeing
    to silence the pseudo-labels. Serves the mean of the two CVR heads'
    probabilities, (p + p') / 2 (UKD appendix A.1; and the CTR with `serve_ctr`).

    Towers: the paper's are [1024, 512, 256] + a linear predictor (with lr 0.005,
    batch 128); by default pfdx's are HA-PFD's `hidden_units`, so every strategy of
    a comparison has the same capacity. The paper's shape is `ukd.hidden_units:
    [1024, 512, 256]` away (and learning_rate / batch_size)."""

    network_factory = staticmethod(twin_dropout_heads)

    def call(self, outputs, features, labels, step, side):
        c, heads = self.config.ukd, outputs.student_heads
        if PSEUDO_LABEL not in side:
            raise ValueError(f"strategy 'ukd' needs the teacher's {PSEUDO_LABEL!r} in the labels "
                             "(models/impressions.py with_pseudo_labels)")
        click, pseudo = side[CLICK], side[PSEUDO_LABEL]
        p, p_ = (heads[head_key("cvr", i)] for i in range(2))
        kl, kl_ = (tf.reshape(losses.bernoulli_kl(a, b), [-1]) for a, b in ((p, p_), (p_, p)))
        unclicked = 1.0 - tf.reshape(click, [-1])
        # Soft-label BCE: the pseudo-label is a probability, and data (no gradient).
        distilled = (tf.exp(-c.uncertainty_scale * kl) * _bce(pseudo, p)
                     + tf.exp(-c.uncertainty_scale * kl_) * _bce(pseudo, p_))
        return {
            "cvr_click": tf.reshape(click, [-1]) * (_bce(labels, p) + _bce(labels, p_)),
            "cvr_unclick": c.pseudo_weight * unclicked * distilled,
            "uncertainty": unclicked * kl,
            "ctr_task": c.ctr_weight * _bce(click, heads[CTR]),
        }


STRATEGIES: dict[str, Callable[[ModelConfig, Mapping[str, int]], Strategy]] = {
    "taml": TaskAdaptiveMultiLearner,
    "ukd_teacher": ClickAdaptiveTeacher,
    "ukd": UncertaintyDistillation,
}
