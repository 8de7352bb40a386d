"""Each loss against an independent float64 numpy formula, including probabilities
near 0 and 1 and extreme logits, plus the stop-gradient on the teacher side."""
import gc
import weakref

import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.models import losses
from pfdx.models.heads import GradientReversal
from pfdx.models.layers import SmeLU

GAMMAS = (0.0, 1.0, 2.0)
# Includes the edges: 1e-6 and 1 - 1e-6 are well inside float32's range and the clip.
P = np.array([1e-6, 1e-3, 0.05, 0.3, 0.5, 0.7, 0.95, 0.999, 1 - 1e-6], dtype=np.float32)
LOGITS = np.array([-40.0, -15.0, -3.0, -0.2, 0.0, 0.4, 2.5, 15.0, 40.0], dtype=np.float32)


def grid(a):
    t, s = np.meshgrid(a, a, indexing="ij")
    return t.ravel(), s.ravel()


def np_kd(t, s):
    return -t * np.log(s) - (1 - t) * np.log(1 - s)


def np_focal_v1(t, s, g):
    return -t * (1 - s) ** g * np.log(s) - (1 - t) * s ** g * np.log(1 - s)


def np_focal_v2(y, t, s, g):
    return -y * (1 - t) ** g * np.log(s) - (1 - y) * t ** g * np.log(1 - s)


def np_sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def np_log_sigmoid(x):
    x = np.asarray(x, np.float64)
    return -np.logaddexp(0, -x)


def f64(x):
    return np.asarray(x, np.float64)


def test_kd_matches_formula_on_probabilities():
    t, s = grid(P)
    got = losses.kd_loss(t, s).numpy()
    np.testing.assert_allclose(got, np_kd(f64(t), f64(s)), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_focal_v1_matches_formula_on_probabilities(gamma):
    t, s = grid(P)
    got = losses.focal_v1(t, s, gamma).numpy()
    np.testing.assert_allclose(got, np_focal_v1(f64(t), f64(s), gamma), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("gamma", GAMMAS)
def test_focal_v2_matches_formula_on_probabilities(gamma):
    t, s = grid(P)
    for y in (0.0, 1.0):
        labels = np.full_like(t, y)
        got = losses.focal_v2(labels, t, s, gamma).numpy()
        np.testing.assert_allclose(got, np_focal_v2(y, f64(t), f64(s), gamma), rtol=2e-5, atol=1e-6)


def test_focal_with_gamma_zero_is_kd_and_focal_v1_never_exceeds_kd():
    t, s = grid(P)
    np.testing.assert_allclose(losses.focal_v1(t, s, 0.0), losses.kd_loss(t, s), rtol=1e-6)
    assert np.all(losses.focal_v1(t, s, 1.0).numpy() <= losses.kd_loss(t, s).numpy() + 1e-6)


def test_probabilities_of_exactly_0_and_1_stay_finite():
    edge = np.array([0.0, 1.0], np.float32)
    t, s = grid(edge)
    for value in (losses.kd_loss(t, s), losses.focal_v1(t, s, 1.0), losses.focal_v2(t, t, s, 1.0)):
        assert np.all(np.isfinite(value.numpy()))


def test_logit_forms_match_formula_for_extreme_logits():
    t, s = grid(LOGITS)
    ls, lns = np_log_sigmoid(s), np_log_sigmoid(-s)
    pt = np_sigmoid(t)
    kd = -pt * ls - (1 - pt) * lns
    np.testing.assert_allclose(losses.kd_loss(t, s, from_logits=True), kd, rtol=1e-5, atol=1e-6)
    for g in GAMMAS:
        v1 = -pt * np.exp(g * lns) * ls - (1 - pt) * np.exp(g * ls) * lns
        np.testing.assert_allclose(losses.focal_v1(t, s, g, from_logits=True), v1,
                                   rtol=1e-5, atol=1e-6)
        for y in (0.0, 1.0):
            v2 = -y * np_sigmoid(-t) ** g * ls - (1 - y) * pt ** g * lns
            np.testing.assert_allclose(
                losses.focal_v2(np.full_like(t, y), t, s, g, from_logits=True), v2,
                rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["kd", "focal_v1", "focal_v2"])
def test_gradients_are_finite_for_extreme_logits_and_teacher_gets_none(name):
    t, s = grid(LOGITS)
    teacher, student = tf.Variable(t), tf.Variable(s)
    with tf.GradientTape(persistent=True) as tape:
        if name == "kd":
            value = losses.kd_loss(teacher, student, from_logits=True)
        elif name == "focal_v1":
            value = losses.focal_v1(teacher, student, 1.0, from_logits=True)
        else:
            value = losses.focal_v2(tf.ones_like(teacher), teacher, student, 1.0, from_logits=True)
    assert np.all(np.isfinite(tape.gradient(value, student).numpy()))
    assert tape.gradient(value, teacher) is None


def test_kd_gradient_is_student_minus_teacher_probability():
    """d KD / d logit_s = p_s - p_t: a formula-independent check of the logit form."""
    t, s = grid(LOGITS[2:-2])
    student = tf.Variable(s)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(losses.kd_loss(t, student, from_logits=True))
    np.testing.assert_allclose(tape.gradient(value, student), np_sigmoid(s) - np_sigmoid(t),
                               atol=1e-6)


def test_layer_align_loss_is_sum_of_squared_l2_norms_and_stops_teacher():
    rng = np.random.default_rng(0)
    g = [rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)]
    f = [rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)]
    expected = sum(np.sum((f64(a) - f64(b)) ** 2, axis=1) for a, b in zip(g, f))
    np.testing.assert_allclose(losses.layer_align_loss(g, f), expected, rtol=1e-5)
    teacher = [tf.Variable(x) for x in f]
    with tf.GradientTape() as tape:
        value = losses.layer_align_loss(g, teacher)
    assert tape.gradient(value, teacher) == [None, None]
    with pytest.raises(ValueError):
        losses.layer_align_loss(g, f[:1])


def np_similarity(fs, ft):
    def norm_gram(f):
        g = f64(f) @ f64(f).T
        return g / np.linalg.norm(g, axis=1, keepdims=True)
    b = fs.shape[0]
    return np.sum((norm_gram(fs) - norm_gram(ft)) ** 2) / b ** 2


def test_similarity_kd_mean_is_the_paper_loss_and_rows_split_over_replicas():
    rng = np.random.default_rng(1)
    fs = rng.normal(size=(6, 4)).astype(np.float32)
    ft = rng.normal(size=(6, 3)).astype(np.float32)
    per_example = losses.similarity_kd_loss([fs], [ft]).numpy()
    assert per_example.shape == (6,)
    assert per_example.mean() == pytest.approx(np_similarity(fs, ft), rel=1e-5)
    # Two "replicas" holding rows 0-2 and 3-5, each compared against the whole batch.
    halves = [losses.similarity_kd_loss([fs[i:i + 3]], [ft[i:i + 3]], [fs], [ft]).numpy()
              for i in (0, 3)]
    np.testing.assert_allclose(np.concatenate(halves), per_example, rtol=1e-6)


def test_adversarial_losses_match_binary_cross_entropy():
    d_t = np.array([[2.0], [-1.0], [30.0]], np.float32)
    d_s = np.array([[-0.5], [3.0], [-30.0]], np.float32)
    bce1 = lambda x: -np_log_sigmoid(x)  # noqa: E731  label 1
    bce0 = lambda x: -np_log_sigmoid(-x)  # noqa: E731  label 0
    np.testing.assert_allclose(losses.discriminator_loss([d_t, d_t], [d_s, d_s]),
                               2 * (bce1(d_t) + bce0(d_s))[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses.adversarial_student_loss([d_s]), bce1(d_s)[:, 0],
                               rtol=1e-5, atol=1e-6)


def test_the_hand_written_gradients_let_their_traced_graph_go():
    # tf.custom_gradient kept every trace's graph, and the variables it captured
    # (a model's tables and optimizer slots), alive for the life of the process.
    v = tf.Variable(np.array([-2.0, 0.0, 2.0], np.float32))

    @tf.function
    def gradient():
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(SmeLU(1.0)(v) + GradientReversal(0.5)(v))
        return tape.gradient(y, v)

    np.testing.assert_allclose(gradient(), [0.0 - 0.5, 0.5 - 0.5, 1.0 - 0.5])
    graph = weakref.ref(gradient.get_concrete_function().graph)
    del gradient
    gc.collect()
    assert graph() is None


def test_smelu_matches_piecewise_definition_and_is_smooth():
    beta = 0.7
    x = np.linspace(-3, 3, 601).astype(np.float32)
    expected = np.where(x <= -beta, 0.0, np.where(x >= beta, x, (x + beta) ** 2 / (4 * beta)))
    np.testing.assert_allclose(SmeLU(beta)(x), expected, atol=1e-6)
    v = tf.Variable(np.array([-1e30, -beta, 0.0, beta, 1e30], np.float32))
    with tf.GradientTape() as tape:
        y = SmeLU(beta)(v)
    np.testing.assert_allclose(tape.gradient(y, v), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    # The hand-written gradient against finite differences of the definition.
    x = np.linspace(-2, 2, 41) + 0.013
    h = 1e-6
    f = lambda z: np.where(z <= -beta, 0.0, np.where(z >= beta, z, (z + beta) ** 2 / (4 * beta)))  # noqa: E731
    v = tf.Variable(x.astype(np.float32))
    with tf.GradientTape() as tape:
        y = SmeLU(beta)(v)
    np.testing.assert_allclose(tape.gradient(y, v), (f(x + h) - f(x - h)) / (2 * h), atol=1e-5)
