"""Per-example distillation losses (paper §3.1-3.2 and the appendix A baselines).

Every function returns one value per example (no reduction): the joint model sums
the terms and divides by the *global* batch size, which is what makes the step
correct under MirroredStrategy.

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
    """Eq. 2: -p_t log p_s - (1 - p_t) log(1 - p_s)."""
    p_teacher, p_student = _prepare(p_teacher, p_student)
    t, not_t = _teacher_probs(p_teacher, from_logits)
    log_s, log_not_s = _log_probs(p_student, from_logits)
    return -t * log_s - not_t * log_not_s


def focal_v1(p_teacher, p_student, gamma: float = 1.0, from_logits: bool = False) -> tf.Tensor:
    """Eq. 3: -p_t (1 - p_s)^gamma log p_s - (1 - p_t) p_s^gamma log(1 - p_s).

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
    """Eq. 4: -y (1 - p_t)^gamma log p_s - (1 - y) p_t^gamma log(1 - p_s).

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
    """Eq. 5: sum_i ||g^(i)(f_s^(i)) - f_t^(i)||_2^2 per example.

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
