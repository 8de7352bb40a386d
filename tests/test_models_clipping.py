"""The gradient clip cannot carry a distillation term into the teacher's update:
the teacher's gradients and the rest are clipped separately, and each side steps
with its own optimizer and learning rate (JointModel.train_step)."""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.models.model import build_model
from tests.test_models_gradients import PRIVILEGED, REGULAR, batch, small_config  # noqa: F401


def _teacher_after_steps(batch, alignment_weight, steps=3):  # noqa: F811
    tf.keras.utils.set_random_seed(7)
    config = small_config("ha_pfd_v2", {"share_embeddings": False, "kd.lam": 0.0,
                                        "clipnorm": 1.0, "alignment.weight": alignment_weight})
    model = build_model(config, REGULAR, PRIVILEGED)
    data = tf.data.Dataset.from_tensors(batch).repeat(steps)
    model.fit(data, epochs=1, verbose=0)
    return model, [v.numpy() for v in model.teacher_variables()]


def test_a_huge_alignment_term_leaves_the_teachers_update_unchanged(batch):  # noqa: F811
    plain, teacher = _teacher_after_steps(batch, alignment_weight=0.0)
    aligned, teacher_aligned = _teacher_after_steps(batch, alignment_weight=1e6)
    assert len(teacher) == len(plain.teacher_variables()) > 0
    for before, after in zip(teacher, teacher_aligned):
        np.testing.assert_allclose(before, after, rtol=1e-6, atol=1e-7)
    # ... while the student side did move differently.
    student = [v.numpy() for v in plain.student.trainable_variables]
    student_aligned = [v.numpy() for v in aligned.student.trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(student, student_aligned))


def test_each_side_is_clipped_by_its_own_global_norm(batch):  # noqa: F811
    tf.keras.utils.set_random_seed(7)
    model = build_model(small_config("ha_pfd_v2", {"share_embeddings": False, "clipnorm": 1e-3,
                                                   "alignment.weight": 1.0}), REGULAR, PRIVILEGED)
    # Plain SGD on top of the clip: each side's update norm is lr x its clipped norm.
    model.optimizer = tf.keras.optimizers.SGD(learning_rate=1.0)
    model.teacher_optimizer = tf.keras.optimizers.SGD(learning_rate=1.0)
    model.loss_terms(*batch)  # build every weight (mapping nets too) before the snapshot
    teacher = model.teacher_variables()
    refs = {v.ref() for v in teacher}
    before = {v.ref(): v.numpy() for v in model.trainable_variables}
    model.train_step(batch)
    norm = lambda side: np.sqrt(sum(np.sum((v.numpy() - before[v.ref()]) ** 2)  # noqa: E731
                                    for v in model.trainable_variables
                                    if (v.ref() in refs) == side))
    assert norm(True) == pytest.approx(1e-3, rel=1e-3)
    assert norm(False) == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize("teacher_lr", [None, 0.1])
def test_each_side_steps_at_its_own_learning_rate(batch, teacher_lr):  # noqa: F811
    tf.keras.utils.set_random_seed(7)
    model = build_model(small_config("ha_pfd_v2", {
        "share_embeddings": False, "clipnorm": 1e9, "weight_decay": 0.0, "learning_rate": 1e-3,
        "teacher_learning_rate": teacher_lr}), REGULAR, PRIVILEGED)
    model.loss_terms(*batch)
    refs = {v.ref() for v in model.teacher_variables()}
    before = {v.ref(): v.numpy() for v in model.trainable_variables}
    model.train_step(batch)
    # Adam's first step moves every weight with a gradient by lr x sign(gradient).
    step = lambda side: max(np.abs(v.numpy() - before[v.ref()]).max()  # noqa: E731
                            for v in model.trainable_variables if (v.ref() in refs) == side)
    assert step(True) == pytest.approx(teacher_lr or 1e-3, rel=1e-2)
    assert step(False) == pytest.approx(1e-3, rel=1e-2)
    assert model.optimizer.iterations.numpy() == model.teacher_optimizer.iterations.numpy() == 1
