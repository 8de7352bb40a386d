"""EKTF (`ektf`, `ha_pfd_v2_ektf`): exam-score weights (EKTF Eq. 4-5, as the
formula reads), the loss terms against a numpy reference of Eq. 2-6 (the abstract
teacher a mean of probabilities), gradient isolation between heads, and the served
student (the heads' mean probability, or the best head)."""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.config import PipelineConfig
from pfdx.models import losses
from pfdx.models.heads import mean_probability_logit
from pfdx.models.model import JointModel, build_model
from pfdx.models.strategies import EXAM_DECAY
from tests.student_export_checks import assert_saved_student_is_regular_only

REGULAR = {"user_id": 40, "bid": 9}
PRIVILEGED = {"privileged__page_jump": 3, "privileged__duration": 3}
K = 3


def config(strategy="ektf", settings=None):
    small = {"hidden_units": (16, 8), "alignment.mapping_hidden_units": (8,), "ektf.heads": K}
    return PipelineConfig().with_model({"strategy": strategy, **small, **(settings or {})}).model


def make_batch(n, seed):
    rng = np.random.default_rng(seed)
    features = {"user_id": tf.constant(np.array([f"u{i}" for i in rng.integers(0, 30, n)])),
                "bid": tf.constant(rng.integers(0, 9, n)),
                "privileged__page_jump": tf.constant(rng.integers(0, 3, n)),
                "privileged__duration": tf.constant(rng.integers(0, 3, n))}
    return features, tf.constant(rng.integers(0, 2, n))


@pytest.fixture(scope="module")
def batch():
    return make_batch(32, 0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_weights(y, p):
    """EKTF Eq. 4-5 with explicit loops: S, lambda = softmin(S), mu[k, l] over l != k."""
    k = p.shape[1]
    s = np.array([1.0 - np.mean(np.abs(y - p[:, j])) for j in range(k)])
    lam = np.exp(-s) / np.exp(-s).sum()
    mu = np.zeros((k, k))
    for a in range(k):
        z = sum(np.exp(s[b] - s[a]) for b in range(k) if b != a)
        for b in range(k):
            if b != a:
                mu[a, b] = np.exp(s[b] - s[a]) / z
    return s, lam, mu


def reference_terms(y, logits):
    """EKTF Eq. 6 per example, in float64: mean BCE, sum_k lambda_k MSE, mean_k DML,
    with Eq. 2's abstract teacher y_t = Mean(y_s,1..k) of the heads' predictions."""
    p = sigmoid(logits)
    _, lam, mu = reference_weights(y, p)
    teacher = p.mean(axis=1)
    bce = -(y[:, None] * np.log(p) + (1 - y[:, None]) * np.log(1 - p))
    kd = sum(lam[k] * (teacher - p[:, k]) ** 2 for k in range(K))
    dml = sum(mu[k, l] * (p[:, l] - p[:, k]) ** 2
              for k in range(K) for l in range(K) if l != k) / K
    return {"heads_task": bce.mean(axis=1), "ektf_kd": kd, "ektf_dml": dml}


def head_logits(model, features):
    out = model.forward(features)
    return np.concatenate([out.student_heads[f"head_{k}"].numpy() for k in range(K)], axis=1)


def test_exam_weights_match_the_reference():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50).astype(np.float64)
    p = rng.uniform(0.01, 0.99, (50, 4))
    s, lam, mu = reference_weights(y, p)
    scores = losses.exam_scores(y, p)
    got_lam, got_mu = losses.exam_weights(scores)
    np.testing.assert_allclose(scores, s, rtol=1e-12)
    np.testing.assert_allclose(got_lam, lam, rtol=1e-12)
    np.testing.assert_allclose(got_mu, mu, rtol=1e-12)
    # The worst head is taught hardest; every head learns most from the best peer.
    assert np.argmax(lam) == np.argmin(s)
    for a in range(4):
        assert np.argmax(mu[a]) == max((b for b in range(4) if b != a), key=lambda b: s[b])


def test_a_better_head_scores_higher_as_eq_4_reads():
    """S_k = 1 - mean|y - p_k|: a larger score is a better head (the formula), not a
    smaller one (the paper's sentence after EKTF Eq. 4)."""
    y = np.array([1.0, 0.0, 1.0, 0.0])
    p = np.stack([y, np.full(4, 0.5), 1.0 - y], axis=1)  # perfect, chance, all wrong
    np.testing.assert_allclose(losses.exam_scores(y, p), [1.0, 0.5, 0.0], rtol=1e-12)
    lam, mu = losses.exam_weights(losses.exam_scores(y, p))
    assert np.argmin(lam) == 0 and np.argmax(mu[2]) == 0


def test_mean_probability_logit_is_the_logit_of_the_mean_probability():
    logits = np.array([[-3.0, 2.0, 0.5], [40.0, -40.0, 0.0], [-90.0, -95.0, -100.0],
                       [90.0, 95.0, 100.0]])
    got = mean_probability_logit([tf.constant(logits[:, k:k + 1]) for k in range(3)]).numpy()
    mean = sigmoid(logits).mean(axis=1)
    np.testing.assert_allclose(sigmoid(got[:2, 0]), mean[:2], rtol=1e-12)
    # Saturated rows: finite, and the log-odds of the mean (log-sum-exp by hand).
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got[2, 0], np.log(np.exp(logits[2]).sum()) - np.log(3), rtol=1e-9)
    np.testing.assert_allclose(got[3, 0], np.log(3) - np.log(np.exp(-logits[3]).sum()), rtol=1e-9)


def test_loss_terms_match_the_reference_and_the_ensemble_is_served(batch):
    model = JointModel(config(), REGULAR, PRIVILEGED)
    features, y = batch
    terms = model.loss_terms(features, y)
    assert set(terms) == {"heads_task", "ektf_kd", "ektf_dml"}  # no BCE on the ensemble
    logits = head_logits(model, features).astype(np.float64)
    expected = reference_terms(y.numpy().astype(np.float64), logits)
    for name, value in expected.items():
        np.testing.assert_allclose(terms[name], value, rtol=2e-4, atol=1e-7, err_msg=name)
    assert not model.has_teacher


def test_the_served_ensemble_is_the_mean_of_the_heads_probabilities(batch):
    """EKTF Eq. 2: y_t = Mean(y_s,1..k), the served `ensemble`."""
    model = JointModel(config(), REGULAR, PRIVILEGED)
    features, y = batch
    model.loss_terms(features, y)
    towers = model.strategy.heads.towers
    for k, shift in enumerate((-4.0, 0.0, 1.0)):  # heads far apart
        towers[k].out.bias.assign_add([shift])
    p = sigmoid(head_logits(model, features).astype(np.float64))
    regular = {k: features[k] for k in REGULAR}
    student = model.student_model()
    np.testing.assert_allclose(student(regular), p.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(student.predictions(regular)["cvr"], p.mean(axis=1), rtol=1e-5)
    mean_logit = head_logits(model, features).mean(axis=1)
    assert not np.allclose(student(regular), sigmoid(mean_logit), rtol=1e-2)


def test_a_heads_distillation_trains_that_head_only(batch):
    """Teacher (the ensemble) and peers are constants in head k's KD and DML terms."""
    model = JointModel(config(), REGULAR, PRIVILEGED)
    features, y = batch
    towers = model.strategy.heads.towers
    with tf.GradientTape(persistent=True) as tape:
        out = model.forward(features)
        logits = tf.concat([out.student_heads[f"head_{k}"] for k in range(K)], axis=-1)
        terms = losses.ektf_losses(tf.reshape(tf.cast(y, tf.float32), [-1, 1]), logits)
        per_head = {name: tf.unstack(value, axis=1) for name, value in terms.items()}
    for name in ("kd", "dml", "task"):
        for k in range(K):
            for j, tower in enumerate(towers):
                grads = tape.gradient(per_head[name][k], tower.trainable_variables)
                moved = any(g is not None and np.any(g.numpy()) for g in grads)
                assert moved == (j == k), (name, k, j)
            shared = tape.gradient(per_head[name][k], model.student.embeddings.trainable_variables)
            assert any(np.any(tf.convert_to_tensor(g).numpy()) for g in shared)


def test_privileged_teacher_distils_into_the_ensemble(batch):
    model = JointModel(config("ha_pfd_v2_ektf"), REGULAR, PRIVILEGED)
    features, y = batch
    with tf.GradientTape(persistent=True) as tape:
        terms = model.loss_terms(features, y)
    assert set(terms) == {"teacher_task", "layer_align", "focal_v2",
                          "heads_task", "ektf_kd", "ektf_dml"}
    out = model.forward(features)
    ensemble = sigmoid(head_logits(model, features).astype(np.float64)).mean(axis=1)  # EKTF Eq. 2
    focal = losses.focal_v2(tf.reshape(tf.cast(y, tf.float64), [-1]),
                            sigmoid(out.teacher_logit.numpy().reshape(-1).astype(np.float64)),
                            ensemble, 1.0)
    np.testing.assert_allclose(terms["focal_v2"], 10.0 * focal.numpy(), rtol=1e-4)
    # The ensemble's latent is the heads' latents side by side.
    assert out.student_latents[0].shape == (32, 16 * K)

    teacher = model.teacher_tower.trainable_variables + model.privileged_embeddings.trainable_variables
    for name in ("layer_align", "focal_v2", "heads_task", "ektf_kd", "ektf_dml"):
        grads = tape.gradient(terms[name], teacher)
        assert all(g is None or not np.any(tf.convert_to_tensor(g).numpy()) for g in grads), name
        for tower in model.strategy.student_head.towers:  # every head learns from each term
            grads = tape.gradient(terms[name], tower.trainable_variables)
            assert any(g is not None and np.any(g.numpy()) for g in grads), name


def refs(*holders):
    return {v.ref() for h in holders for v in h.variables}


@pytest.mark.parametrize("strategy", ["ektf", "ha_pfd_v2_ektf"])
def test_served_student_is_the_ensemble_or_the_best_head(strategy, batch):
    model = JointModel(config(strategy), REGULAR, PRIVILEGED)
    features, _ = batch
    model.loss_terms(*batch)
    towers = model.student.tower.towers
    student = model.student_model()
    assert refs(student) == refs(model.student.embeddings, model.student.calibration, *towers)
    if model.has_teacher:
        assert not refs(student) & refs(model.teacher_tower, model.privileged_embeddings)

    best = JointModel(config(strategy, {"ektf.serve": "best"}), REGULAR, PRIVILEGED)
    best.loss_terms(*batch)
    part = best.strategy if strategy == "ektf" else best.strategy.parts[-1]
    part.exam_average.assign([0.2, 0.9, 0.5])
    student = best.student_model()
    towers = best.student.tower.towers
    assert refs(student) == refs(best.student.embeddings, best.student.calibration, towers[1])
    regular = {k: features[k] for k in REGULAR}
    logit_1 = best.forward(features).student_heads["head_1"].numpy().reshape(-1)
    np.testing.assert_allclose(student(regular), sigmoid(logit_1), rtol=1e-5)


def test_evaluation_scores_the_served_best_head_not_the_ensemble(batch):
    from pfdx.models import predictions

    features, y = batch
    model = JointModel(config("ha_pfd_v2_ektf", {"ektf.serve": "best"}), REGULAR, PRIVILEGED)
    model.loss_terms(*batch)
    model.strategy.parts[-1].exam_average.assign([0.2, 0.3, 0.9])
    data = tf.data.Dataset.from_tensors((features, y, tf.zeros([0])))
    p = predictions.predict(model, data)
    head_2 = model.forward(features).student_heads["head_2"].numpy().reshape(-1)
    np.testing.assert_allclose(p.student, sigmoid(head_2), rtol=1e-5)
    assert not np.allclose(p.student, model.predict_both(features)["student"], rtol=1e-3)
    np.testing.assert_allclose(p.teacher, model.predict_both(features)["teacher"], rtol=1e-6)


def test_saved_best_head_asks_for_regular_features_only(batch, tmp_path):
    model = JointModel(config("ha_pfd_v2_ektf", {"ektf.serve": "best"}), REGULAR, PRIVILEGED)
    model.loss_terms(*batch)
    assert_saved_student_is_regular_only(model.student_model(), batch, REGULAR, tmp_path)


def test_training_updates_the_running_exam_scores_and_learns():
    tf.keras.utils.set_random_seed(0)
    model = build_model(config(settings={"learning_rate": 0.01}), REGULAR, PRIVILEGED)
    features, y = make_batch(256, 5)
    model.loss_terms(features, y)  # evaluation-mode terms leave the scores alone
    np.testing.assert_array_equal(model.strategy.exam_average.numpy(), np.zeros(K))
    data = tf.data.Dataset.from_tensor_slices((features, y)).batch(256)
    first = float(model.compute_loss((features, y)))
    history = model.fit(data, epochs=5, verbose=0).history
    scores = model.strategy.exam_average.numpy()
    # Five steps of S_t towards ~1 - mean|y - p|: (1 - decay^5) of the way, from 0.
    assert np.all(scores > 0.45 * (1 - EXAM_DECAY ** 5)) and np.all(scores < 1 - EXAM_DECAY ** 5)
    assert history["loss"][-1] < first
    assert all(np.isfinite(v) for v in history["loss"])
    assert "student_auc" in history  # the served ensemble keeps the student metrics


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="at least 2 heads"):
        JointModel(config(settings={"ektf.heads": 1}), REGULAR, PRIVILEGED)
    with pytest.raises(ValueError, match="ektf.serve"):
        JointModel(config(settings={"ektf.serve": "median"}), REGULAR, PRIVILEGED)
