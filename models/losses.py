"""Per-example distillation losses (HA-PFD §3.1-3.2, HA-PFD appendix A's baselines,
and the multi-head / impression-space methods EKTF, TAML, UKD; docs/architecture.md
maps each equation to its function).

Every loss returns one value per example (no reduction): the joint model sums
the terms and divides by the *global* batch size, which is what makes the step
correct under MirroredStrategy. (EKTF's exam scores and weights are per-head batch
statistics that weight such losses.)

Teacher-side inputs pass through `tf.stop_gradient` here, so a distillation term
can never train the teacher, whoever calls it.

The logit-level losses take probabilities by default, as written in the paper. With
`from_logits=True` both prediction arguments are logits instead; the model uses that
form, since log p = log_sigmoid(logit) stays finite where a float32 probability has
already rounded to 0 or 1. A student probability is clipped to [EPSILON, 1 - EPSILON]
before its log; a teacher probability only weights the loss and is used as given.
"""
from __future__ import annotations

from typing import Sequence

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf

EPSILON = 1e-7


def _log_probs(x: tf.Tensor, from_logits: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """(log p, log(1 - p)) of a probability or logit tensor."""
    if from_logits:
        return tf.math.log_sigmoid(x), tf.math.log_sigmoid(-x)
    p = tf.clip_by_value(x, EPSILON, 1.0 - EPSILON)
    return tf.math.log(p), tf.math.log1p(-p)


def _teacher_probs(x: tf.Tensor, from_logits: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """(p_t, 1 - p_t): the teacher only weights the loss, so no log and no clipping."""
    if from_logits:
        return tf.sigmoid(x), tf.sigmoid(-x)
    return x, 1.0 - x


def _prepare(p_teacher, p_student):
    p_student = tf.convert_to_tensor(p_student)
    if not p_student.dtype.is_floating:
        p_student = tf.cast(p_student, tf.float32)
    p_teacher = tf.stop_gradient(tf.cast(p_teacher, p_student.dtype))
    return p_teacher, p_student


def kd_loss(p_teacher, p_student, from_logits: bool = False) -> tf.Tensor:
    """HA-PFD Eq. 2: -p_t log p_s - (1 - p_t) log(1 - p_s)."""
    p_teacher, p_student = _prepare(p_teacher, p_student)
    t, not_t = _teacher_probs(p_teacher, from_logits)
    log_s, log_not_s = _log_probs(p_student, from_logits)
    return -t * log_s - not_t * log_not_s


def focal_v1(p_teacher, p_student, gamma: float = 1.0, from_logits: bool = False) -> tf.Tensor:
    """HA-PFD Eq. 3: -p_t (1 - p_s)^gamma log p_s - (1 - p_t) p_s^gamma log(1 - p_s).

    The hardness factors come from the student's own prediction."""
    p_teacher, p_student = _prepare(p_teacher, p_student)
    t, not_t = _teacher_probs(p_teacher, from_logits)
    log_s, log_not_s = _log_probs(p_student, from_logits)
    # (1 - p_s)^gamma as exp(gamma log(1 - p_s)): value and gradient stay finite
    # for every logit and every gamma >= 0.
    return (-t * tf.exp(gamma * log_not_s) * log_s
            - not_t * tf.exp(gamma * log_s) * log_not_s)


def focal_v2(labels, p_teacher, p_student, gamma: float = 1.0,
             from_logits: bool = False) -> tf.Tensor:
    """HA-PFD Eq. 4: -y (1 - p_t)^gamma log p_s - (1 - y) p_t^gamma log(1 - p_s).

    The student learns the label; the teacher only sets each example's weight."""
    p_teacher, p_student = _prepare(p_teacher, p_student)
    y = tf.cast(labels, p_student.dtype)
    t, not_t = _teacher_probs(p_teacher, from_logits)
    log_s, log_not_s = _log_probs(p_student, from_logits)
    return (-y * tf.pow(not_t, gamma) * log_s
            - (1.0 - y) * tf.pow(t, gamma) * log_not_s)


def _as_list(latents) -> list[tf.Tensor]:
    return [latents] if isinstance(latents, tf.Tensor) else list(latents)


def layer_align_loss(mapped_student_latents, teacher_latents) -> tf.Tensor:
    """HA-PFD Eq. 5: sum_i ||g^(i)(f_s^(i)) - f_t^(i)||_2^2 per example.

    Arguments are matching sequences (or single [B, d] tensors) of the mapped
    student latents g^(i)(f_s^(i)) and the teacher latents f_t^(i). ReviewKD is this
    loss with more (student, teacher) pairs."""
    mapped, teacher = _as_list(mapped_student_latents), _as_list(teacher_latents)
    if len(mapped) != len(teacher):
        raise ValueError(f"{len(mapped)} mapped student latents for {len(teacher)} teacher latents")
    return tf.add_n([tf.reduce_sum(tf.square(g - tf.stop_gradient(f)), axis=-1)
                     for g, f in zip(mapped, teacher)])


def _normalized_similarity(rows: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """Rows of the batch similarity matrix G = F F^T, each L2-normalised."""
    return tf.math.l2_normalize(tf.matmul(rows, batch, transpose_b=True), axis=-1)


def similarity_kd_loss(student_latents, teacher_latents,
                       student_batch=None, teacher_batch=None) -> tf.Tensor:
    """Similarity-preserving KD (Tung & Mori 2019), split into per-example rows.

    For each latent pair: G = F F^T over the batch, rows L2-normalised, loss
    (1/b^2) ||G_s - G_t||_F^2. Example i contributes row i, (1/b) ||G_s[i] - G_t[i]||^2,
    so the batch mean of this function is the paper's loss. `*_batch` are the
    latents of the whole (global) batch that the rows are compared against; by
    default the given latents themselves. Under MirroredStrategy the model passes
    the all-gathered batch, so the loss is the same as on one device."""
    student, teacher = _as_list(student_latents), _as_list(teacher_latents)
    student_batch = student if student_batch is None else _as_list(student_batch)
    teacher_batch = teacher if teacher_batch is None else _as_list(teacher_batch)
    terms = []
    for f_s, f_t, all_s, all_t in zip(student, teacher, student_batch, teacher_batch):
        g_s = _normalized_similarity(f_s, all_s)
        g_t = tf.stop_gradient(_normalized_similarity(f_t, all_t))
        b = tf.cast(tf.shape(all_s)[0], f_s.dtype)
        terms.append(tf.reduce_sum(tf.square(g_s - g_t), axis=-1) / b)
    return tf.add_n(terms)


def _bce_with_logits(target: float, logits: tf.Tensor) -> tf.Tensor:
    return tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(logits), tf.constant(target, logits.dtype)), logits=logits)


def discriminator_loss(teacher_scores: Sequence[tf.Tensor] | tf.Tensor,
                       student_scores: Sequence[tf.Tensor] | tf.Tensor) -> tf.Tensor:
    """Adversarial KD: each discriminator says 1 for teacher latents, 0 for student
    latents. Arguments are discriminator logits [B, 1] per latent layer; the caller
    feeds stopped latents so only the discriminators learn from this."""
    return tf.add_n([tf.reduce_sum(_bce_with_logits(1.0, t) + _bce_with_logits(0.0, s), axis=-1)
                     for t, s in zip(_as_list(teacher_scores), _as_list(student_scores))])


def adversarial_student_loss(student_scores: Sequence[tf.Tensor] | tf.Tensor) -> tf.Tensor:
    """Adversarial KD: the student wants its latents scored as the teacher's (1).
    The caller scores with frozen discriminators so only the student learns."""
    return tf.add_n([tf.reduce_sum(_bce_with_logits(1.0, s), axis=-1)
                     for s in _as_list(student_scores)])


# Multi-head and impression-space losses (EKTF, TAML, UKD) ---------------------

def squared_error(p_teacher, p_student) -> tf.Tensor:
    """(p_t - p_s)^2, the teacher side fixed: EKTF's MSE between probabilities."""
    p_teacher, p_student = _prepare(p_teacher, p_student)
    return tf.square(p_teacher - p_student)


def exam_scores(labels, head_probs) -> tf.Tensor:
    """EKTF Eq. 4 over a batch: S_k = 1 - mean_i |y_i - p_k,i|, shape [K].

    `labels` is [B] or [B, 1], `head_probs` [B, K]. The scores weight losses but
    are not themselves optimised, so they carry no gradient. This follows the
    formula, under which a *larger* S_k is better; the paper's text after EKTF Eq. 4 says
    "a smaller S_k indicates better learning progress", which contradicts it (and
    its own use in Eq. 5: the teacher teaches low scorers harder)."""
    probs = tf.stop_gradient(tf.convert_to_tensor(head_probs))
    y = tf.reshape(tf.cast(labels, probs.dtype), [-1, 1])
    return 1.0 - tf.reduce_mean(tf.abs(y - probs), axis=0)


def exam_weights(scores) -> tuple[tf.Tensor, tf.Tensor]:
    """EKTF Eq. 5: (lambda [K], mu [K, K]).

    lambda_k = softmin_k(S): the teacher teaches low scorers harder; mu[k, l] =
    softmax over l != k of S_l - S_k: head k learns most from its best peers;
    mu[k, k] = 0. Needs K >= 2."""
    scores = tf.convert_to_tensor(scores)
    lam = tf.nn.softmax(-scores)
    k = tf.shape(scores)[0]
    diff = scores[tf.newaxis, :] - scores[:, tf.newaxis]  # [k, l] = S_l - S_k
    off_diagonal = tf.logical_not(tf.eye(k, dtype=tf.bool))
    mu = tf.nn.softmax(tf.where(off_diagonal, diff, tf.constant(-float("inf"), diff.dtype)),
                       axis=-1)
    return lam, mu


def ektf_losses(labels, head_logits, scores=None) -> dict[str, tf.Tensor]:
    """EKTF's per-example, per-head terms, each [B, K] (column k is head k's loss):

    - `task`: BCE(y, p_k);
    - `kd`: lambda_k (p_t - p_k)^2, p_t = mean_k p_k, the abstract teacher (EKTF Eq. 2);
    - `dml`: sum_{l != k} mu[k, l] (p_l - p_k)^2.

    EKTF Eq. 6 is mean_k task + sum_k kd + mean_k dml. The teacher and the peers enter
    column k as constants, so a head's loss trains that head only. `scores` are the
    exam scores S [K]; by default those of this batch."""
    logits = tf.convert_to_tensor(head_logits)
    y = tf.reshape(tf.cast(labels, logits.dtype), [-1, 1])
    probs = tf.sigmoid(logits)
    lam, mu = exam_weights(exam_scores(labels, probs) if scores is None else scores)
    teacher = tf.reduce_mean(probs, axis=-1, keepdims=True)
    # [B, k, l] = (p_l - p_k)^2 with the peer p_l fixed
    peers = squared_error(probs[:, tf.newaxis, :], probs[:, :, tf.newaxis])
    return {
        "task": tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.broadcast_to(y, tf.shape(logits)), logits=logits),
        "kd": lam * squared_error(teacher, probs),
        "dml": tf.reduce_sum(mu * peers, axis=-1),
    }


def self_distillation(fused_logit, learner_logits: Sequence[tf.Tensor]) -> tf.Tensor:
    """TAML Eq. 2/3: sum over learners of KD(p_fused -> p_learner), the fused
    output fixed. (The paper's '(1 - log p)' is read as log(1 - p).)"""
    return tf.add_n([tf.reshape(kd_loss(fused_logit, l, from_logits=True), [-1])
                     for l in learner_logits])


def _log1mexp(x: tf.Tensor) -> tf.Tensor:
    """log(1 - exp(x)) for x < 0, accurate on both sides of -log 2."""
    log_half = tf.constant(-0.6931471805599453, x.dtype)
    return tf.where(x > log_half, tf.math.log(-tf.math.expm1(x)),
                    tf.math.log1p(-tf.exp(tf.minimum(x, log_half))))


def ctcvr_loss(ctcvr_labels, ctr_logit, cvr_logit) -> tf.Tensor:
    """ESMM / TAML Eq. 5: BCE of y_click * y_conv against p_ctr * p_cvr, from logits.

    log p = log_sigmoid(c) + log_sigmoid(v) is exact; log(1 - p) is kept finite by
    capping p at 1 - EPSILON, as for a clipped student probability."""
    ctr_logit = tf.reshape(tf.convert_to_tensor(ctr_logit), [-1])
    cvr_logit = tf.reshape(tf.convert_to_tensor(cvr_logit), [-1])
    y = tf.reshape(tf.cast(ctcvr_labels, ctr_logit.dtype), [-1])
    log_p = tf.math.log_sigmoid(ctr_logit) + tf.math.log_sigmoid(cvr_logit)
    log_not_p = _log1mexp(tf.minimum(log_p, tf.cast(tf.math.log1p(-EPSILON), log_p.dtype)))
    return -y * log_p - (1.0 - y) * log_not_p


def bernoulli_kl(logit_p, logit_q) -> tf.Tensor:
    """KL(Bern(p) || Bern(q)) from logits, elementwise: UKD Eq. 11's uncertainty.
    Not symmetric: KL(p || p') weighs head p's pseudo-label loss, KL(p' || p) head p'."""
    logit_p, logit_q = tf.convert_to_tensor(logit_p), tf.convert_to_tensor(logit_q)
    p = tf.sigmoid(logit_p)
    return (p * (tf.math.log_sigmoid(logit_p) - tf.math.log_sigmoid(logit_q))
            + (1.0 - p) * (tf.math.log_sigmoid(-logit_p) - tf.math.log_sigmoid(-logit_q)))
