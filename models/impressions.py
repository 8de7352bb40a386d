"""Impression-space data steps of UKD, on `tf.data` batches of
`(features, labels dict)` as models/model.py describes them.

1. `sample_unclicked`: the click-adaptive teacher trains on the clicked rows
   and a sample of the unclicked ones (UKD §3.1), by default as many as the clicked
   ones (`balanced_unclicked_rate`, appendix A.1).
2. `with_pseudo_labels`: the trained teacher's CVR on every impression becomes
   the student's `pseudo_label` (UKD §3.1.2); the student reads it on unclicked rows.
"""
from __future__ import annotations

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf

from pfdx.models.strategy_base import CLICK, PSEUDO_LABEL


def sample_unclicked(rows: tf.data.Dataset, rate: float, seed: int) -> tf.data.Dataset:
    """Unbatched `(features, labels)` rows: every clicked row, and each unclicked
    row with probability `rate` (drawn from `seed` and the row's position)."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"unclicked sample rate {rate} is not in (0, 1]")
    def keep(index, row):
        # Stateless draw per row index: the same rows on every pass and every run.
        draw = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64), index]))
        return tf.logical_or(tf.reshape(row[1][CLICK], []) > 0, draw < rate)

    return rows.enumerate().filter(keep).map(lambda index, row: row)


def balanced_unclicked_rate(batches: tf.data.Dataset) -> float:
    """The unclicked sample rate that keeps #clicked : #unclicked at 1 : 1 (UKD
    appendix A.1): CTR / (1 - CTR) = clicks / non-clicks, counted over the
    `(features, labels, ...)` batches' click labels in one pass; at most 1."""
    def count(features, labels, *rest):
        click = tf.reshape(tf.cast(labels[CLICK], tf.float64), [-1])
        return tf.stack([tf.reduce_sum(click), tf.cast(tf.size(click), tf.float64)])

    clicks, rows = batches.map(count).reduce(tf.zeros([2], tf.float64), lambda a, b: a + b).numpy()
    if clicks == 0:
        raise ValueError("no clicked impression to balance the unclicked sample against")
    return 1.0 if rows == clicks else min(1.0, clicks / (rows - clicks))


def with_pseudo_labels(teacher: tf.keras.Model, batches: tf.data.Dataset) -> tf.data.Dataset:
    """Batches with labels["pseudo_label"] = the teacher's CVR on every row (batches
    are `(features, labels, ...)`; what follows the labels passes through).
    `teacher` is the served student of a trained `ukd_teacher` model
    (`JointModel.student_model()`): regular features only, so it labels any
    impression."""
    # Plain graph code: autograph's conversion of the whole student only slows the trace.
    @tf.autograph.experimental.do_not_convert
    def label(features, labels, *rest):
        return (features, {**labels, PSEUDO_LABEL: teacher(features)}, *rest)

    return batches.map(label)
