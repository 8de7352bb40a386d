"""Post-hoc Platt calibration: the fit against an independent reference, and the
exported student serving calibrated probabilities."""
import numpy as np
import pytest
import tensorflow as tf

from pfdx.config import ModelConfig
from pfdx.models import calibration, metrics
from pfdx.models.model import Student


def _miscalibrated(n=20_000, seed=0):
    """Labels from true logits z; the 'model' reports 3 z + 1.5: right ranking,
    far too confident and biased upwards."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-1.0, 1.2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return 3.0 * z + 1.5, y


def test_platt_fit_matches_an_unregularised_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    logits, y = _miscalibrated()
    a, b = calibration.fit_platt(logits, y)
    ref = LogisticRegression(C=1e12, tol=1e-10, max_iter=1000).fit(logits[:, None], y)
    assert a == pytest.approx(ref.coef_[0, 0], rel=1e-3)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-3)
    assert a == pytest.approx(1 / 3, abs=0.02) and b == pytest.approx(-0.5, abs=0.05)


def test_platt_is_the_identity_without_enough_of_both_classes():
    assert calibration.fit_platt(np.array([0.3, -2.0]), np.array([1, 1])) == calibration.IDENTITY
    assert calibration.fit_platt(np.array([]), np.array([])) == calibration.IDENTITY
    logits, y = _miscalibrated()
    few = np.r_[np.flatnonzero(y == 1)[:calibration.MIN_CLASS_ROWS - 1], np.flatnonzero(y == 0)]
    assert calibration.fit_platt(logits[few], y[few]) == calibration.IDENTITY
    enough = np.r_[np.flatnonzero(y == 1)[:calibration.MIN_CLASS_ROWS], np.flatnonzero(y == 0)]
    assert calibration.fit_platt(logits[enough], y[enough]) != calibration.IDENTITY


def test_calibration_lowers_ece_of_a_miscalibrated_student_and_keeps_its_ranking():
    logits, y = _miscalibrated()
    student = Student(ModelConfig(), {})
    raw = student.served_cvr(tf.constant(logits[:, None], tf.float32)).numpy()
    student.calibration.assign(calibration.fit_platt(logits[:10_000], y[:10_000]))
    calibrated = student.served_cvr(tf.constant(logits[:, None], tf.float32)).numpy()
    held_out = slice(10_000, None)
    before, _ = metrics.calibration_errors(y[held_out], raw[held_out], 10)
    after, _ = metrics.calibration_errors(y[held_out], calibrated[held_out], 10)
    assert before > 0.1 and after < 0.02
    assert metrics.auc(y, calibrated) == pytest.approx(metrics.auc(y, raw), abs=1e-6)


def test_a_serving_copy_shares_the_calibration():
    student = Student(ModelConfig(), {})
    copy = student.with_parts(student.tower)
    student.calibration.assign((2.0, -1.0))
    assert copy.calibration.params == (2.0, -1.0)


@pytest.mark.e2e  # fits the selection and the Transform on a small simulated log (Beam)
def test_a_restored_calibration_does_not_leak_into_the_fit(tmp_path):
    """A warm start restores the base run's calibration with the student (issue 20).
    The fit must still be Platt on the new model's *raw* validation logits: fitted over
    the restored one, the two would compose into a wrong calibration (e76e1fd)."""
    from pfdx.config import load_config
    from pfdx.experiments import preprocessing, windows
    from pfdx.models import training
    from pfdx.simulator import simulate

    simulate.write(simulate.simulate(60_000, seed=3), str(tmp_path / "log"), fmt="csv")
    config = load_config(None, [
        f"runner.output_root={tmp_path}", "runner.direct_running_mode=in_memory",
        "runner.direct_num_workers=1", "model.strategy=none", "model.epochs=2",
        "model.hidden_units=[16,8]", "model.hash_buckets=1000", "model.refit=false"])
    files = windows.log_files(str(tmp_path / "log"), config)
    rows, _, _ = windows.read_log(files, config)
    split = windows.split_windows(rows, config, str(tmp_path / "work"), lambda _: None)
    _, outputs = preprocessing.preprocess(config, ["none"], split, str(tmp_path / "work"))
    click = split[windows.CLICK]
    restored = (3.0, -2.0)  # what a base run's Platt fit left in the checkpoint
    fitter = training.Fitter(
        outputs[windows.CLICK], windows.dataset_factory,
        training.Splits([click[windows.TRAIN].pattern], [click[windows.VALIDATION].pattern],
                        [click[windows.TEST].pattern]), verbose=0,
        initialize=lambda c, model: model.student_model().calibration.assign(restored))

    fitted = fitter.fit(config)
    # Without a refit the fitted model ships: its optimizer state stays (a warm start
    # continues it), where a refit lets it go (`JointModel.release_optimizers`).
    assert int(fitted.model.optimizer.iterations) > 0
    calibration_layer = fitted.model.student_model().calibration
    params = calibration_layer.params
    calibration_layer.assign(calibration.IDENTITY)
    raw = fitter.predict(config, fitted.model, fitter.splits.validation).clicked()
    expected = calibration.fit_platt(calibration.logit(raw.student), raw.labels)
    assert expected != calibration.IDENTITY  # a real fit, not the few-rows fallback
    assert params == pytest.approx(expected, abs=1e-4)
    assert (fitted.metrics["calibration_scale"], fitted.metrics["calibration_bias"]) == \
        pytest.approx(params, abs=1e-6)  # recorded as fitted (float64), held as float32
