"""Each side of the joint model keeps the weights of its own best epoch.

Early stopping (models/training.py `Fitter.fit`) watches the served student's
validation AUC and restores the whole model at the student's best epoch. The teacher
may peak at another epoch, at its own learning rate all the more: its weights at the
student's best are not the best teacher the run trained. `KeepWeights` holds one
side's weights as they were after a chosen epoch (the best by a validation metric,
or a given epoch) and puts them back when training ends, after Keras' own restore.

The student never reads the teacher's weights after its own best epoch (the epochs
before it are the same either way), so keeping the teacher's best changes only the
teacher: the reported teacher, and the one a later warm start would continue.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf

# A side's variables, read off the built model when training starts.
Variables = Callable[[tf.keras.Model], Sequence[tf.Variable]]


def teacher_side(model) -> list[tf.Variable]:
    return model.teacher_variables()


def student_side(model) -> list[tf.Variable]:
    """Everything the teacher's loss does not train: the student, the mapping nets
    and the other heads of a strategy."""
    teacher = {v.ref() for v in model.teacher_variables()}
    return [v for v in model.trainable_variables if v.ref() not in teacher]


class KeepWeights(tf.keras.callbacks.Callback):
    """Keeps `side`'s weights after the epoch where `monitor` (a higher-is-better
    `val_*` log) was highest, or after epoch `epoch` (1-based) when given, and
    assigns them back at the end of training. Put it after EarlyStopping in the
    callback list: Keras ends training in list order, so its restore comes first."""

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
            if value is None or not value > self.best:  # NaN never wins
                return
            self.best = float(value)
        elif epoch + 1 != self.epoch:
            return
        self.best_epoch = epoch + 1
        self._weights = [v.numpy() for v in self.side(self.model)]

    def on_train_end(self, logs=None):
        if self._weights is not None:
            for variable, value in zip(self.side(self.model), self._weights):
                variable.assign(value)
