"""Each side keeps its own best epoch (models/best_epochs.py): after early stopping on
the student, the teacher holds the weights of the epoch its own validation AUC was
best, the student those of its best epoch."""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.models import best_epochs
from pfdx.models.model import build_model
from tests.test_models_gradients import PRIVILEGED, REGULAR, small_config

EPOCHS = 6


def _data(seed, n=256):
    rng = np.random.default_rng(seed)
    user = rng.integers(0, 30, n)
    label = (rng.random(n) < 0.2 + 0.6 * (user % 2)).astype(np.int64)  # learnable
    features = {"user_id": np.array([f"u{i}" for i in user]),
                "bid": rng.integers(0, 9, [n, 1]),
                "privileged__page_jump": (label + rng.integers(0, 2, n)).astype(np.int64),
                "privileged__duration": rng.integers(0, 3, n)}
    return tf.data.Dataset.from_tensor_slices((features, label)).batch(32)


def test_after_fit_each_side_holds_its_own_best_epoch():
    tf.keras.utils.set_random_seed(3)
    # A large step makes the validation AUCs move from epoch to epoch.
    model = build_model(small_config("ha_pfd_v2", {"share_embeddings": False, "kd.lam": 0.0,
                                                   "alignment.weight": 0.0,
                                                   "learning_rate": 0.05}),
                        REGULAR, PRIVILEGED)
    assert model.teacher_stands_alone
    stopping = tf.keras.callbacks.EarlyStopping(monitor="val_student_auc", mode="max",
                                                patience=EPOCHS, restore_best_weights=True)
    keep = best_epochs.KeepWeights(best_epochs.teacher_side, monitor="val_teacher_auc")
    validation = _data(1)
    history = model.fit(_data(0), epochs=EPOCHS, validation_data=validation,
                        callbacks=[stopping, keep], verbose=0).history
    teacher, student = history["val_teacher_auc"], history["val_student_auc"]
    assert keep.best_epoch == int(np.argmax(teacher)) + 1
    assert keep.best_epoch != stopping.best_epoch + 1  # else the test shows nothing
    after = model.evaluate(validation, return_dict=True, verbose=0)
    assert after["teacher_auc"] == pytest.approx(max(teacher), abs=1e-6)
    assert after["student_auc"] == pytest.approx(student[stopping.best_epoch], abs=1e-6)


def test_the_whole_model_is_restored_at_the_best_epoch_as_keras_early_stopping_does():
    """`Fitter.fit`'s restore: EarlyStopping only stops, `KeepWeights` of the whole
    model (tensors) puts back every weight of the student's best epoch."""
    tf.keras.utils.set_random_seed(3)
    model = build_model(small_config("ha_pfd_v2", {"learning_rate": 0.05}), REGULAR, PRIVILEGED)
    snapshots = []
    record = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(
        [v.numpy() for v in model.weights]))
    stopping = tf.keras.callbacks.EarlyStopping(monitor="val_student_auc", mode="max",
                                                patience=EPOCHS)
    keep = best_epochs.KeepWeights(best_epochs.whole_model, monitor="val_student_auc")
    student = model.fit(_data(0), epochs=EPOCHS, validation_data=_data(1),
                        callbacks=[record, stopping, keep], verbose=0).history["val_student_auc"]
    assert keep.best_epoch == stopping.best_epoch + 1 == int(np.argmax(student)) + 1
    assert keep.best_epoch < EPOCHS  # else the test shows nothing
    assert len(model.weights) == len(snapshots[0]) > 10
    for variable, best in zip(model.weights, snapshots[keep.best_epoch - 1]):
        np.testing.assert_array_equal(variable.numpy(), best)


def test_until_the_monitor_has_a_number_the_first_epoch_is_kept():
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    keep = best_epochs.KeepWeights(best_epochs.whole_model, monitor="val_auc")
    keep.set_model(model)
    snapshots, kept = [], []
    for epoch, auc in enumerate([np.nan, np.nan, 0.7, np.nan, 0.6]):
        snapshots.append([v.numpy() for v in model.weights])
        keep.on_epoch_end(epoch, {"val_auc": auc})
        kept.append(keep.best_epoch)
        for v in model.weights:
            v.assign_add(tf.ones_like(v))
    keep.on_train_end()
    assert kept == [1, 1, 3, 3, 3]
    for variable, value in zip(model.weights, snapshots[2]):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_a_given_epoch_is_kept_and_the_other_side_is_untouched():
    tf.keras.utils.set_random_seed(3)
    model = build_model(small_config("ha_pfd_v2", {"share_embeddings": False}), REGULAR,
                        PRIVILEGED)
    snapshots = []
    record = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(
        [v.numpy() for v in best_epochs.teacher_side(model)]))
    keep = best_epochs.KeepWeights(best_epochs.teacher_side, epoch=2)
    model.fit(_data(0), epochs=3, callbacks=[record, keep], verbose=0)
    student_last = [v.numpy() for v in best_epochs.student_side(model)]
    for kept, epoch_two in zip(best_epochs.teacher_side(model), snapshots[1]):
        np.testing.assert_array_equal(kept.numpy(), epoch_two)
    assert any(not np.array_equal(a, b) for a, b in zip(snapshots[1], snapshots[2]))
    # The student side is the last epoch's, and shares no variable with the teacher.
    assert {v.ref() for v in best_epochs.student_side(model)}.isdisjoint(
        {v.ref() for v in best_epochs.teacher_side(model)})
    assert student_last and all(np.isfinite(w).all() for w in student_last)


def test_a_teacher_on_shared_tables_cannot_stand_alone():
    model = build_model(small_config("ha_pfd_v2", {"share_embeddings": True}), REGULAR,
                        PRIVILEGED)
    assert not model.teacher_stands_alone
    assert not build_model(small_config("none"), REGULAR, PRIVILEGED).teacher_stands_alone
    with pytest.raises(ValueError, match="exactly one"):
        best_epochs.KeepWeights(best_epochs.teacher_side)


def _validation(student, teacher, rows=2000, seed=0):
    """Predictions on `rows` validation rows whose ranking quality is set by the noise
    levels `student` and `teacher` (None: no teacher; "constant": a collapsed side)."""
    from pfdx.models.predictions import Predictions

    labels = (np.random.default_rng(0).random(rows) < 0.3).astype(int)
    rng = np.random.default_rng(seed)

    def side(noise):
        if noise is None:
            return None
        if noise == "constant":
            return np.full(rows, 0.3)
        return labels + rng.normal(0, noise, rows)
    return Predictions(labels, side(student), side(teacher), None)


@pytest.mark.parametrize("refit, separate, failed", [
    ((0.5, 0.5), True, []),                           # learned: ranks better in-sample
    ((1.0, 1.0), True, []),                           # as good as the fit: noise, not failure
    ((1.0, "constant"), True, ["teacher"]),           # a collapsed teacher
    ((3.0, 1.0), True, ["student"]),
    ((1.0, "constant"), False, ["student", "teacher"]),  # shared tables: both go back
])
def test_a_refit_side_clearly_below_the_fitted_model_failed(refit, separate, failed):
    fitted = _validation(1.0, 1.0, seed=0)
    assert best_epochs.refit_failures(fitted, _validation(*refit, seed=1), separate) == failed


def test_a_side_the_fit_did_not_predict_is_left_alone_and_nan_fails():
    fitted = _validation(1.0, None)  # no teacher
    assert best_epochs.refit_failures(fitted, _validation(0.5, None), separate=False) == []
    broken = _validation(0.5, None)
    broken.student[0] = np.nan
    assert best_epochs.refit_failures(fitted, broken, separate=False) == ["student"]


def test_copy_side_gives_one_side_the_other_models_weights():
    config = small_config("ha_pfd_v2", {"share_embeddings": False})
    models = []
    for seed in (1, 2):
        tf.keras.utils.set_random_seed(seed)
        models.append(build_model(config, REGULAR, PRIVILEGED))
        models[-1].fit(_data(seed), epochs=1, verbose=0)
    source, target = models
    student = [v.numpy() for v in best_epochs.student_side(target)]
    best_epochs.copy_side("teacher", source, target)
    for a, b in zip(best_epochs.teacher_side(target), best_epochs.teacher_side(source)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(best_epochs.student_side(target), student):
        np.testing.assert_array_equal(a.numpy(), b)
