"""UKD (`ukd_teacher`, `ukd`), impression space: the gradient reversal, the
teacher's and the student's loss terms against numpy references, the dropout
heads, the served student, and the two stages end to end on a tiny log."""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.config import ModelConfig
from pfdx.models import impressions
from pfdx.models.heads import reverse_gradient
from pfdx.models.model import JointModel, build_model

REGULAR = {"user_id": 40, "bid": 9}
PRIVILEGED = {"privileged__page_jump": 3}


def config(strategy, **overrides):
    settings = dict(strategy=strategy, hidden_units=(16, 8), adversarial_hidden_units=(8,))
    return ModelConfig(**{**settings, **overrides})


def make_rows(n, seed):
    rng = np.random.default_rng(seed)
    features = {"user_id": np.array([f"u{i}" for i in rng.integers(0, 30, n)]),
                "bid": rng.integers(0, 9, n),
                "privileged__page_jump": rng.integers(0, 3, n)}
    click = rng.integers(0, 2, n)
    labels = {"label": click * rng.integers(0, 2, n), "click": click,
              "pseudo_label": rng.uniform(0.02, 0.6, n).astype(np.float32)}
    return features, labels


@pytest.fixture(scope="module")
def batch():
    features, labels = make_rows(32, 0)
    return ({k: tf.constant(v) for k, v in features.items()},
            {k: tf.constant(v) for k, v in labels.items()})


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def bce(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def flat(x):
    return np.asarray(x, np.float64).reshape(-1)


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(reverse_gradient(x, 0.5) * tf.constant([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(y, 1.0 - 4.0 + 9.0)  # identity forward
    np.testing.assert_allclose(tape.gradient(y, x), [[-0.5, -1.0, -1.5]])


def test_teacher_terms_and_the_reversed_discriminator_gradient(batch):
    model = JointModel(config("ukd_teacher", ukd_reversal_scale=0.7), REGULAR, PRIVILEGED)
    features, labels = batch
    with tf.GradientTape(persistent=True) as tape:
        terms = model.loss_terms(features, labels)
        out = model.forward(features)
        # Reference: the same discriminator loss with no reversal in between.
        plain = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.reshape(tf.cast(labels["click"], tf.float32), [-1, 1]),
            logits=model.strategy.discriminator(out.student_latents[-1])[0])
    assert set(terms) == {"student_task", "click_discriminator"}
    click, conv = flat(labels["click"]), flat(labels["label"])
    p = sigmoid(flat(out.student_logit))
    np.testing.assert_allclose(terms["student_task"], click * bce(conv, p), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(terms["click_discriminator"], flat(plain), rtol=1e-6)

    tower = model.student.tower.trainable_variables
    reversed_, reference = (tape.gradient(t, tower) for t in (terms["click_discriminator"], plain))
    assert any(np.any(g.numpy()) for g in reversed_[:-2])  # T_f, below the discriminator
    for g, r in zip(reversed_[:-2], reference[:-2]):
        np.testing.assert_allclose(g, -0.7 * r.numpy(), rtol=1e-5, atol=1e-9)
    assert all(g is None for g in reversed_[-2:])  # T_p (the CVR output layer) is not behind T_d
    disc = model.strategy.discriminator.trainable_variables
    for g, r in zip(tape.gradient(terms["click_discriminator"], disc), tape.gradient(plain, disc)):
        np.testing.assert_allclose(g, r, rtol=1e-6)  # the discriminator itself minimises
    assert all(g is None for g in tape.gradient(terms["student_task"], disc))


def kl(a, b):
    p, q = sigmoid(a), sigmoid(b)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def test_student_terms_match_the_reference(batch):
    model = JointModel(config("ukd", ukd_uncertainty_scale=30.0), REGULAR, PRIVILEGED)
    features, labels = batch
    terms = model.loss_terms(features, labels)  # evaluation mode: no dropout
    assert set(terms) == {"cvr_click", "cvr_unclick", "uncertainty", "ctr_task"}
    out = model.forward(features)
    a, b = (flat(out.student_heads[f"cvr_{i}"]) for i in range(2))
    click, conv, pseudo = (flat(labels[k]) for k in ("click", "label", "pseudo_label"))
    weight = np.exp(-30.0 * kl(a, b))
    assert np.all((weight > 0) & (weight <= 1)) and weight.min() < 0.999
    expected = {
        "cvr_click": click * (bce(conv, sigmoid(a)) + bce(conv, sigmoid(b))) / 2,
        "cvr_unclick": 0.5 * (1 - click) * weight
        * (bce(pseudo, sigmoid(a)) + bce(pseudo, sigmoid(b))) / 2,
        "uncertainty": (1 - click) * kl(a, b),
        "ctr_task": 0.2 * bce(click, sigmoid(flat(out.student_heads["ctr"]))),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(terms[name], value, rtol=2e-4, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(flat(out.student_logit), (a + b) / 2, rtol=1e-5)


def test_the_two_heads_drop_out_independently_in_training_only(batch):
    model = JointModel(config("ukd", ukd_dropout=0.5), REGULAR, PRIVILEGED)
    features, _ = batch
    ones = tf.ones([32, 8])  # the shape of h_conv
    masks = [d(ones, training=True).numpy() > 0 for d in model.student.tower.dropouts]
    assert 0.3 < masks[0].mean() < 0.7 and not np.array_equal(masks[0], masks[1])
    evaluation = [model.forward(features).student_logit.numpy() for _ in range(2)]
    np.testing.assert_array_equal(*evaluation)
    training = [model.forward(features, training=True).student_logit.numpy() for _ in range(2)]
    assert not np.allclose(*training)


@pytest.mark.parametrize("serve_ctr", [False, True])
def test_served_student_is_the_mean_of_the_cvr_heads(serve_ctr, batch):
    model = JointModel(config("ukd", serve_ctr=serve_ctr), REGULAR, PRIVILEGED)
    features, labels = batch
    model.loss_terms(features, labels)
    student = model.student_model()
    network = model.student.tower
    served = [network.representation, *network.predictors] + ([network.ctr] if serve_ctr else [])
    assert {v.ref() for v in student.variables} == {
        v.ref() for layer in [model.student.embeddings, *served] for v in layer.variables}
    regular = {k: features[k] for k in REGULAR}
    out = model.forward(features)
    mean_logit = (flat(out.student_heads["cvr_0"]) + flat(out.student_heads["cvr_1"])) / 2
    predictions = student.predictions(regular)
    np.testing.assert_allclose(predictions["cvr"], sigmoid(mean_logit), rtol=1e-5)
    assert ("ctr" in predictions) == serve_ctr


def test_the_student_needs_pseudo_labels(batch):
    model = JointModel(config("ukd"), REGULAR, PRIVILEGED)
    features, labels = batch
    with pytest.raises(ValueError, match="pseudo_label"):
        model.loss_terms(features, {k: labels[k] for k in ("label", "click")})


def test_two_stages_end_to_end():
    tf.keras.utils.set_random_seed(0)
    features, labels = make_rows(400, 3)
    del labels["pseudo_label"]
    rows = tf.data.Dataset.from_tensor_slices((features, labels))

    sampled = list(impressions.sample_unclicked(rows, 0.25, seed=1).as_numpy_iterator())
    clicks = [r for r in sampled if r[1]["click"] == 1]
    assert len(clicks) == int(labels["click"].sum())  # every click is kept ...
    unclicked = len(sampled) - len(clicks)
    assert 0.1 * (400 - len(clicks)) < unclicked < 0.4 * (400 - len(clicks))  # ... ~25 % of the rest
    assert [r[0]["bid"] for r in sampled] == [  # the same sample on every pass
        r[0]["bid"] for r in impressions.sample_unclicked(rows, 0.25, seed=1).as_numpy_iterator()]

    teacher = build_model(config("ukd_teacher"), REGULAR, PRIVILEGED)
    teacher.fit(impressions.sample_unclicked(rows, 0.25, seed=1).batch(64), epochs=1, verbose=0)
    labelled = impressions.with_pseudo_labels(teacher.student_model(), rows.batch(100))
    pseudo = np.concatenate([l["pseudo_label"] for _, l in labelled.as_numpy_iterator()])
    served = teacher.student_model()({k: tf.constant(features[k]) for k in REGULAR}).numpy()
    np.testing.assert_allclose(pseudo, served, rtol=1e-6)
    assert pseudo.shape == (400,) and np.all((pseudo > 0) & (pseudo < 1))

    student = build_model(config("ukd", learning_rate=0.01), REGULAR, PRIVILEGED)
    history = student.fit(labelled, epochs=1, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert student.student_model()({k: tf.constant(features[k]) for k in REGULAR}).shape == (400,)


def test_teacher_epochs_hold_the_same_rows_in_the_same_number_of_steps():
    from pfdx.models.training import sampled_impressions

    features, labels = make_rows(2000, 4)
    del labels["pseudo_label"]
    batches = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    data = sampled_impressions(batches, config("ukd_teacher", ukd_unclicked_rate=0.3,
                                               batch_size=64))
    epochs = [list(data.as_numpy_iterator()) for _ in range(2)]
    rows = [sorted(zip(*(np.concatenate([b[0][k] for b in e]).tolist()
                         for k in ("user_id", "bid", "privileged__page_jump")),
                       np.concatenate([b[1]["click"] for b in e]).tolist()))
            for e in epochs]
    assert rows[0] == rows[1] and len(epochs[0]) == len(epochs[1])
    order = [np.concatenate([b[0]["bid"] for b in e]) for e in epochs]
    assert not np.array_equal(order[0], order[1])  # reshuffled each epoch
    clicks = np.concatenate([b[1]["click"] for b in epochs[0]])
    assert clicks.sum() == labels["click"].sum()  # every click, ~30 % of the rest
    assert 0.2 * (2000 - clicks.sum()) < (clicks == 0).sum() < 0.4 * (2000 - clicks.sum())
