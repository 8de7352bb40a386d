"""UKD (`ukd_teacher`, `ukd`), impression space: the gradient reversal, the
teacher's and the student's loss terms against numpy references of the paper's
formulas (UKD Eq. 9-12 with appendix A.1's symmetric terms), the dropout heads,
the served student ((p + p') / 2), the teacher's 1 : 1 unclicked sample, the
paper's towers one setting away, and the two stages end to end on a tiny log."""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.config import PipelineConfig
from pfdx.models import impressions
from pfdx.models.heads import reverse_gradient
from pfdx.models.model import JointModel, build_model
from pfdx.models.strategy_base import Outputs

REGULAR = {"user_id": 40, "bid": 9}
PRIVILEGED = {"privileged__page_jump": 3}


def config(strategy, settings=None):
    small = {"strategy": strategy, "hidden_units": (16, 8),
             "ukd.discriminator_hidden_units": (8,)}
    return PipelineConfig().with_model({**small, **(settings or {})}).model


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
    model = JointModel(config("ukd_teacher", {"ukd.reversal_scale": 0.7}), REGULAR, PRIVILEGED)
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
        np.testing.assert_allclose(g, -0.7 * r.numpy(), rtol=1e-4, atol=1e-9)
    assert all(g is None for g in reversed_[-2:])  # T_p (the CVR output layer) is not behind T_d
    disc = model.strategy.discriminator.trainable_variables
    for g, r in zip(tape.gradient(terms["click_discriminator"], disc), tape.gradient(plain, disc)):
        np.testing.assert_allclose(g, r, rtol=1e-6)  # the discriminator itself minimises
    assert all(g is None for g in tape.gradient(terms["student_task"], disc))


def kl(p, q):
    """KL(Bern(p) || Bern(q)) of probabilities: UKD Eq. 11, p log p/p' summed over
    the two classes of the softmax output."""
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def paper_terms(click, conv, pseudo, p, p_, p_ctr, alpha=0.5, lam=100.0, gamma=0.2):
    """UKD's per-impression student loss from the paper, probabilities in: Eq. 9's
    clicked and unclicked CVR losses with appendix A.1's symmetric terms for p'
    (summed, each head's weight from the KL that starts at its own prediction),
    Eq. 12's weights, the KL(p || p') regulariser of §3.2.2, and gamma L_CTR (Eq. 10)."""
    return {
        "cvr_click": click * bce(conv, p) + click * bce(conv, p_),
        "cvr_unclick": alpha * (1 - click) * np.exp(-lam * kl(p, p_)) * bce(pseudo, p)
        + alpha * (1 - click) * np.exp(-lam * kl(p_, p)) * bce(pseudo, p_),
        "uncertainty": (1 - click) * kl(p, p_),
        "ctr_task": gamma * bce(click, p_ctr),
    }


def test_student_terms_follow_the_paper_with_asymmetric_heads():
    """Heads far apart, where KL(p || p') and KL(p' || p) differ: each head's
    pseudo-label loss is weighted by the KL from its own prediction (UKD Eq. 12,
    appendix A.1)."""
    a = np.array([-3.0, 2.0, 0.5, -1.0, 1.5])
    b = np.array([-1.0, -0.5, 2.5, -4.0, 1.0])
    c = np.array([0.3, -2.0, 1.0, 0.0, -0.7])
    click, conv = np.array([1.0, 0.0, 0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    pseudo = np.array([0.4, 0.1, 0.7, 0.2, 0.5])
    assert not np.allclose(kl(sigmoid(a), sigmoid(b)), kl(sigmoid(b), sigmoid(a)), rtol=0.1)
    model = JointModel(config("ukd", {"ukd.uncertainty_scale": 2.0}), REGULAR, PRIVILEGED)
    column = lambda x: tf.constant(x.reshape(-1, 1), tf.float32)  # noqa: E731
    out = Outputs(column((a + b) / 2), (), student_heads={
        "cvr_0": column(a), "cvr_1": column(b), "ctr": column(c)})
    terms = model.strategy(out, {}, column(conv), tf.constant(0, tf.int64),
                           side={"click": column(click), "pseudo_label": column(pseudo)})
    expected = paper_terms(click, conv, pseudo, sigmoid(a), sigmoid(b), sigmoid(c), lam=2.0)
    for name, value in expected.items():
        np.testing.assert_allclose(terms[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
    # Not one KL(p || p') weight for both heads.
    shared = 0.5 * (1 - click) * np.exp(-2.0 * kl(sigmoid(a), sigmoid(b))) * (
        bce(pseudo, sigmoid(a)) + bce(pseudo, sigmoid(b)))
    assert not np.allclose(terms["cvr_unclick"], shared, rtol=1e-2)


def test_student_terms_match_the_reference(batch):
    model = JointModel(config("ukd", {"ukd.uncertainty_scale": 30.0}), REGULAR, PRIVILEGED)
    features, labels = batch
    terms = model.loss_terms(features, labels)  # evaluation mode: no dropout
    assert set(terms) == {"cvr_click", "cvr_unclick", "uncertainty", "ctr_task"}
    out = model.forward(features)
    a, b = (sigmoid(flat(out.student_heads[f"cvr_{i}"])) for i in range(2))
    click, conv, pseudo = (flat(labels[k]) for k in ("click", "label", "pseudo_label"))
    weight = np.exp(-30.0 * kl(a, b))
    assert np.all((weight > 0) & (weight <= 1)) and weight.min() < 0.999
    expected = paper_terms(click, conv, pseudo, a, b, sigmoid(flat(out.student_heads["ctr"])),
                           lam=30.0)
    for name, value in expected.items():
        np.testing.assert_allclose(terms[name], value, rtol=2e-4, atol=1e-7, err_msg=name)


def test_the_two_heads_drop_out_independently_in_training_only(batch):
    model = JointModel(config("ukd", {"ukd.dropout": 0.5}), REGULAR, PRIVILEGED)
    features, _ = batch
    ones = tf.ones([32, 8])  # the shape of h_conv
    masks = [d(ones, training=True).numpy() > 0 for d in model.student.tower.dropouts]
    assert 0.3 < masks[0].mean() < 0.7 and not np.array_equal(masks[0], masks[1])
    evaluation = [model.forward(features).student_logit.numpy() for _ in range(2)]
    np.testing.assert_array_equal(*evaluation)
    training = [model.forward(features, training=True).student_logit.numpy() for _ in range(2)]
    assert not np.allclose(*training)


@pytest.mark.parametrize("serve_ctr", [False, True])
def test_served_student_is_the_mean_of_the_cvr_heads_probabilities(serve_ctr, batch):
    """UKD appendix A.1: inference serves (p_conv + p'_conv) / 2."""
    model = JointModel(config("ukd", {"serve_ctr": serve_ctr}), REGULAR, PRIVILEGED)
    features, labels = batch
    model.loss_terms(features, labels)
    student = model.student_model()
    network = model.student.tower
    served = [network.representation, *network.predictors] + ([network.ctr] if serve_ctr else [])
    assert {v.ref() for v in student.variables} == {
        v.ref() for layer in [model.student.embeddings, model.student.calibration, *served]
        for v in layer.variables}
    # Heads far apart, where the mean probability and the mean logit's sigmoid differ.
    network.predictors[1].out.bias.assign_add([4.0])
    regular = {k: features[k] for k in REGULAR}
    out = model.forward(features)
    p, p_ = (sigmoid(flat(out.student_heads[f"cvr_{i}"])) for i in range(2))
    predictions = student.predictions(regular)
    np.testing.assert_allclose(predictions["cvr"], (p + p_) / 2, rtol=1e-5)
    np.testing.assert_allclose(student(regular), (p + p_) / 2, rtol=1e-5)
    mean_logit = (flat(out.student_heads["cvr_0"]) + flat(out.student_heads["cvr_1"])) / 2
    assert not np.allclose(predictions["cvr"], sigmoid(mean_logit), rtol=1e-2)
    assert ("ctr" in predictions) == serve_ctr


def test_the_papers_towers_are_one_setting_away(batch):
    """`ukd.hidden_units` shapes the teacher's tower and the student's CVR
    representation and CTR tower (UKD appendix A.1: [1024, 512, 256] + a predictor);
    unset, both follow `hidden_units`."""
    features, labels = batch

    def widths(tower):
        return [d.kernel.shape[-1] for d in tower.hidden] + [tower.out.kernel.shape[-1]]

    for units, expected in (((32, 16, 12), [32, 16, 12]), (None, [16, 8])):
        teacher = JointModel(config("ukd_teacher", {"ukd.hidden_units": units}), REGULAR,
                             PRIVILEGED)
        teacher.loss_terms(features, labels)
        assert widths(teacher.student.tower) == expected + [1]
        student = JointModel(config("ukd", {"ukd.hidden_units": units}), REGULAR, PRIVILEGED)
        student.loss_terms(features, labels)
        network = student.student.tower
        assert widths(network.representation) == expected
        assert [widths(p) for p in network.predictors] == [[1], [1]]
        assert widths(network.ctr) == expected + [1]


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

    student = build_model(config("ukd", {"learning_rate": 0.01}), REGULAR, PRIVILEGED)
    history = student.fit(labelled, epochs=1, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert student.student_model()({k: tf.constant(features[k]) for k in REGULAR}).shape == (400,)


def click_batches(n, ctr, seed):
    features, labels = make_rows(n, seed)
    del labels["pseudo_label"]
    labels["click"] = (np.random.default_rng(seed + 1).uniform(size=n) < ctr).astype(np.int64)
    labels["label"] = labels["label"] * labels["click"]
    return labels["click"], tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)


def test_the_balanced_rate_is_the_observed_odds_of_a_click():
    """UKD appendix A.1's 1 : 1: sampling unclicked rows at CTR / (1 - CTR)."""
    click, batches = click_batches(3000, 0.07, 5)
    n_click = click.sum()
    assert impressions.balanced_unclicked_rate(batches) == pytest.approx(
        n_click / (3000 - n_click), rel=1e-12)
    _, ones = click_batches(50, 1.0, 6)
    assert impressions.balanced_unclicked_rate(ones) == 1.0  # no unclicked row to sample
    _, none = click_batches(50, 0.0, 7)
    with pytest.raises(ValueError, match="no clicked"):
        impressions.balanced_unclicked_rate(none)


def test_the_teacher_samples_one_unclicked_row_per_click_by_default():
    from pfdx.models.datasets import sampled_impressions

    click, batches = click_batches(4000, 0.06, 8)
    assert config("ukd_teacher").ukd.unclicked_rate is None
    data = sampled_impressions(batches, config("ukd_teacher", {"batch_size": 256}))
    sampled = np.concatenate([b[1]["click"] for b in data.as_numpy_iterator()])
    n_click = click.sum()
    assert sampled.sum() == n_click
    # Binomial(4000 - n_click, n_click / (4000 - n_click)): mean n_click, sd < sqrt(n_click).
    assert abs((sampled == 0).sum() - n_click) < 4 * np.sqrt(n_click)


def test_teacher_epochs_hold_the_same_rows_in_the_same_number_of_steps():
    from pfdx.models.datasets import sampled_impressions

    features, labels = make_rows(2000, 4)
    del labels["pseudo_label"]
    batches = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    data = sampled_impressions(batches, config("ukd_teacher", {"ukd.unclicked_rate": 0.3,
                                                "batch_size": 64}))
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
