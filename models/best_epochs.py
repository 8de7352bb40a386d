"""Each side of the joint model keeps the weights of its own best epoch.

Early stopping (models/training.py `Fitter.fit`) watches the served student's
validation AUC, and `KeepWeights` restores the whole model at the student's best
epoch. The teacher may peak at another epoch, at its own learning rate all the more:
its weights at the student's best are not the best teacher the run trained. A second
`KeepWeights` then holds the teacher's weights as they were after its own best epoch
(or a given epoch) and puts them back when training ends, after the whole model's.

The student never reads the teacher's weights after its own best epoch (the epochs
before it are the same either way), so keeping the teacher's best changes only the
teacher: the reported teacher, and the one a later warm start would continue.

The refit on train + validation (`Fitter.finish`) has no held-out rows to stop on. A
side whose refit ranks the validation rows, which it trained on, clearly worse than the
fitted model ranked them unseen did not learn (on KuaiRand at lr 0.025 a teacher
collapsed to a constant, AUC 0.5): `refit_failures` names it and `copy_side` gives it
the fitted model's weights.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import numpy as np
import tensorflow as tf

from pfdx.models import auc_difference

# A side's variables, read off the built model when training starts.
Variables = Callable[[tf.keras.Model], Sequence[tf.Variable]]


def whole_model(model) -> list[tf.Variable]:
    """Every weight of the model: what Keras' EarlyStopping restores."""
    return model.weights


def teacher_side(model) -> list[tf.Variable]:
    return model.teacher_variables()


def student_side(model) -> list[tf.Variable]:
    """Everything the teacher's loss does not train: the student, the mapping nets
    and the other heads of a strategy."""
    teacher = {v.ref() for v in model.teacher_variables()}
    return [v for v in model.trainable_variables if v.ref() not in teacher]


class KeepWeights(tf.keras.callbacks.Callback):
    """Keeps `side`'s weights after the epoch where `monitor` (a higher-is-better
    `val_*` log) was highest -- the first epoch's until one has a number, as Keras'
    EarlyStopping does -- or after epoch `epoch` (1-based) when given, and assigns
    them back at the end of training. Keras ends training in callback-list order:
    put the whole model's before a side's.

    The weights are kept as tensors, not as Keras' numpy copies (`get_weights`): a
    copy per table inside TensorFlow, where `get_weights` took 0.15-0.6 s an epoch
    on `make run`'s 100k-row tables (ten times that at 1M rows) in host copies."""

    def __init__(self, side: Variables, monitor: str | None = None, epoch: int | None = None):
        super().__init__()
        if (monitor is None) == (epoch is None):
            raise ValueError("KeepWeights: give exactly one of `monitor` or `epoch`")
        self.side, self.monitor, self.epoch = side, monitor, epoch
        self.best = -math.inf
        self.best_epoch: int | None = None
        self._weights: list | None = None

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            if value is None:
                return
            if value > self.best:  # NaN never wins
                self.best = float(value)
            elif self._weights is not None:
                return
        elif epoch + 1 != self.epoch:
            return
        self.best_epoch = epoch + 1
        self._weights = [tf.identity(v) for v in self.side(self.model)]

    def on_train_end(self, logs=None):
        if self._weights is not None:
            for variable, value in zip(self.side(self.model), self._weights):
                variable.assign(value)


SIDES = {"student": student_side, "teacher": teacher_side}
# In-sample, a refit should rank better than the fit did unseen: two standard errors
# below (about 2 % of equally good refits by chance) is a side that did not learn.
REFIT_FAILURE_SE = 2.0


def refit_failures(fitted, refit, separate: bool) -> list[str]:
    """The sides ("student", "teacher") whose refit ranks the validation rows it trained
    on (`refit`, models/predictions.py Predictions) worse than the fitted model ranked
    them unseen (`fitted`, the same rows) by more than `REFIT_FAILURE_SE` standard
    errors of the paired difference (models/auc_difference.py), or predicts
    non-finite values. Every side when one fails and they share tables (`separate`
    False): one cannot be swapped without changing the other's inputs."""
    scored = [side for side in SIDES if getattr(fitted, side) is not None]
    failed = []
    for side in scored:
        new = np.asarray(getattr(refit, side))
        if not np.isfinite(new).all():
            failed.append(side)
            continue
        drop, se = auc_difference.lead(fitted.labels, getattr(fitted, side), new)
        if drop > REFIT_FAILURE_SE * se:  # NaN (a class missing): no evidence either way
            failed.append(side)
    return scored if failed and not separate else failed


def copy_side(side: str, source, target) -> None:
    """`side`'s weights of the model `source` into `target`, built from the same config."""
    for to, value in zip(SIDES[side](target), SIDES[side](source)):
        to.assign(value)
