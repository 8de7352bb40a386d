"""TAML (`taml`), impression space: the CTCVR and self-distillation terms against
numpy references, the gates (Eq. 1), gradient isolation, the labels contract and
the served student (CVR, and CTR when asked)."""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.config import ConfigError, PipelineConfig, from_dict
from pfdx.models import losses
from pfdx.models.model import JointModel, build_model

REGULAR = {"user_id": 40, "bid": 9}
PRIVILEGED = {"privileged__page_jump": 3}
N = 2  # learners per task


def config(settings=None):
    small = {"strategy": "taml", "hidden_units": (16, 8), "taml.learners": N,
             "taml.expert_units": 8}
    return PipelineConfig().with_model({**small, **(settings or {})}).model


def make_batch(n, seed):
    rng = np.random.default_rng(seed)
    features = {"user_id": tf.constant(np.array([f"u{i}" for i in rng.integers(0, 30, n)])),
                "bid": tf.constant(rng.integers(0, 9, n)),
                "privileged__page_jump": tf.constant(rng.integers(0, 3, n))}
    click = rng.integers(0, 2, n)
    conversion = click * rng.integers(0, 2, n)  # conversions only after a click
    return features, {"label": tf.constant(conversion), "click": tf.constant(click)}


@pytest.fixture(scope="module")
def batch():
    return make_batch(32, 0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def bce(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def heads(model, features):
    out = model.forward(features)
    return {k: v.numpy().reshape(-1).astype(np.float64) for k, v in out.student_heads.items()}, \
        out.student_logit.numpy().reshape(-1).astype(np.float64)


def test_ctcvr_loss_is_the_bce_of_the_product():
    rng = np.random.default_rng(1)
    c, v = rng.normal(0, 3, 200), rng.normal(0, 3, 200)
    y = rng.integers(0, 2, 200).astype(np.float64)
    np.testing.assert_allclose(losses.ctcvr_loss(y, c, v), bce(y, sigmoid(c) * sigmoid(v)),
                               rtol=1e-9)
    # Saturated logits stay finite (p_ctcvr capped below 1).
    far = losses.ctcvr_loss(tf.constant([0.0, 1.0]), tf.constant([60.0, -60.0]),
                            tf.constant([60.0, -60.0]))
    assert np.all(np.isfinite(far.numpy()))


def test_loss_terms_match_the_reference(batch):
    model = JointModel(config(), REGULAR, PRIVILEGED)
    features, labels = batch
    terms = model.loss_terms(features, labels)
    assert set(terms) == {"ctr_task", "ctcvr_task", "ctr_self_kd", "cvr_self_kd"}
    h, cvr = heads(model, features)
    click, conv = labels["click"].numpy(), labels["label"].numpy()
    # The fused outputs average the learners' logits.
    np.testing.assert_allclose(cvr, np.mean([h[f"cvr_{l}"] for l in range(N)], 0), rtol=1e-5)
    np.testing.assert_allclose(h["ctr"], np.mean([h[f"ctr_{l}"] for l in range(N)], 0), rtol=1e-5)

    def self_kd(task, fused):
        t = sigmoid(fused)
        return sum(bce(t, sigmoid(h[f"{task}_{l}"])) for l in range(N))

    expected = {
        "ctr_task": bce(click, sigmoid(h["ctr"])),
        "ctcvr_task": bce(click * conv, sigmoid(h["ctr"]) * sigmoid(cvr)),
        "ctr_self_kd": 0.1 * self_kd("ctr", h["ctr"]),
        "cvr_self_kd": 0.1 * self_kd("cvr", cvr),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(terms[name], value, rtol=2e-4, err_msg=name)


def test_each_learner_reads_its_gated_experts(batch):
    """TAML Eq. 1: learner l's input is sum_i softmax(W^l x)_i e_i over [general, task, own]."""
    model = JointModel(config({"taml.experts": 2}), REGULAR, PRIVILEGED)
    features, _ = batch
    h, _ = heads(model, features)
    network = model.student.tower
    x = model.student.embeddings(features)
    general = [e(x).numpy() for e in network.general]
    for task, branch in network.branches.items():
        shared = general + [e(x).numpy() for e in branch.task_experts]
        for l, (gate, own, tower) in enumerate(zip(branch.gates, branch.learner_experts,
                                                   branch.learners.towers)):
            logits = x.numpy() @ gate.kernel.numpy()
            weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            experts = shared + [own(x).numpy()]
            assert weights.shape[1] == len(experts) == 5
            mixed = sum(weights[:, [i]] * e for i, e in enumerate(experts))
            np.testing.assert_allclose(tower(tf.constant(mixed))[0].numpy().reshape(-1),
                                       h[f"{task}_{l}"], rtol=1e-4, atol=1e-6)


def relu(x):
    return np.maximum(x, 0.0)


def smelu(x, beta=1.0):
    return np.where(x >= beta, x, np.where(x <= -beta, 0.0, (x + beta) ** 2 / (4 * beta)))


def mlp(x, layers, activation):
    """A dense stack from its (kernel, bias) pairs: activation on all but the last."""
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            x = activation(x)
    return x


@pytest.mark.parametrize("activation", ["relu", "smelu"])
def test_the_papers_learners_are_one_setting_away(activation, batch):
    """TAML §3.2: learners are 64/32/1 MLPs and experts one 64-unit layer, with
    ReLU: `taml.hidden_units`, `taml.expert_units`, `taml.activation: relu`."""
    act = {"relu": relu, "smelu": smelu}[activation]
    model = JointModel(config({"taml.hidden_units": (12, 6), "taml.activation": activation}),
                       REGULAR, PRIVILEGED)
    features, labels = batch
    model.loss_terms(features, labels)
    network = model.student.tower
    x = model.student.embeddings(features).numpy().astype(np.float64)
    z = np.random.default_rng(4).normal(0, 2, (32, 8))  # a learner's input: the expert width
    for branch in network.branches.values():
        for expert in [*network.general, *branch.task_experts, *branch.learner_experts]:
            dense = expert.layers[0]
            np.testing.assert_allclose(expert(tf.constant(x, tf.float32)).numpy(),
                                       act(x @ dense.kernel.numpy() + dense.bias.numpy()),
                                       rtol=1e-4, atol=1e-5)
        for tower in branch.learners.towers:
            layers = [(d.kernel.numpy(), d.bias.numpy()) for d in [*tower.hidden, tower.out]]
            assert [w.shape[1] for w, _ in layers] == [12, 6, 1]
            np.testing.assert_allclose(tower(tf.constant(z, tf.float32))[0].numpy(),
                                       mlp(z, layers, act), rtol=1e-4, atol=1e-5)
    default = JointModel(config(), REGULAR, PRIVILEGED)
    default.loss_terms(features, labels)
    tower = default.student.tower.branches["cvr"].learners.towers[0]
    assert [d.units for d in tower.hidden] == [16, 8]  # hidden_units, SmeLU
    assert type(tower.activation).__name__ == "SmeLU"


def test_self_distillation_holds_the_fused_teacher_fixed():
    """d/dl_j sum_l KD(p_fused -> p_l) = p_j - p_fused: nothing flows through the mean."""
    rng = np.random.default_rng(2)
    learners = [tf.Variable(rng.normal(0, 2, (16, 1))) for _ in range(3)]
    with tf.GradientTape() as tape:
        fused = tf.add_n(learners) / 3.0
        loss = tf.reduce_sum(losses.self_distillation(fused, learners))
    grads = tape.gradient(loss, learners)
    p_fused = sigmoid(np.mean([v.numpy() for v in learners], 0))
    for v, g in zip(learners, grads):
        np.testing.assert_allclose(g.numpy(), sigmoid(v.numpy()) - p_fused, rtol=1e-9)


def test_terms_train_their_tasks(batch):
    model = JointModel(config(), REGULAR, PRIVILEGED)
    features, labels = batch
    with tf.GradientTape(persistent=True) as tape:
        terms = model.loss_terms(features, labels)
    network = model.student.tower

    def moves(term, layers):
        grads = tape.gradient(terms[term], [v for layer in layers for v in layer.trainable_variables])
        return any(g is not None and np.any(tf.convert_to_tensor(g).numpy()) for g in grads)

    cvr, ctr = network.branches["cvr"], network.branches["ctr"]
    assert moves("ctr_task", [ctr]) and not moves("ctr_task", [cvr])
    assert moves("ctr_task", network.general)  # the shared experts learn from every task
    assert moves("ctcvr_task", [cvr]) and moves("ctcvr_task", [ctr])
    assert moves("cvr_self_kd", [cvr]) and not moves("cvr_self_kd", [ctr])
    assert moves("ctr_self_kd", [ctr]) and not moves("ctr_self_kd", [cvr])


def refs(*holders):
    return {v.ref() for h in holders for v in h.variables}


@pytest.mark.parametrize("serve_ctr", [False, True])
def test_served_student_takes_regular_features_and_serves_cvr(serve_ctr, batch):
    model = JointModel(config({"serve_ctr": serve_ctr}), REGULAR, PRIVILEGED)
    features, labels = batch
    model.loss_terms(features, labels)
    student = model.student_model()
    network = model.student.tower
    served_branches = [network.branches["cvr"]] + ([network.branches["ctr"]] if serve_ctr else [])
    assert refs(student) == refs(model.student.embeddings, model.student.calibration,
                                 *network.general, *served_branches)
    regular = {k: features[k] for k in REGULAR}
    joint = model(features)
    predictions = student.predictions(regular)
    np.testing.assert_allclose(predictions["cvr"], joint["student"], rtol=1e-6)
    np.testing.assert_allclose(student(regular), joint["student"], rtol=1e-6)
    assert ("ctr" in predictions) == serve_ctr
    if serve_ctr:
        np.testing.assert_allclose(predictions["ctr"], joint["ctr"], rtol=1e-6)


def test_impression_labels_contract_and_click_space_metrics(batch):
    model = JointModel(config(), REGULAR, PRIVILEGED)
    features, labels = batch
    with pytest.raises(ValueError, match="labels must be a dict"):
        model.loss_terms(features, labels["label"])
    model.loss_terms(features, labels)
    # The CVR metrics count clicked rows only.
    label_avg = next(m for m in model.metrics if m.name == "label_avg")
    click, conv = labels["click"].numpy(), labels["label"].numpy()
    assert float(label_avg.result()) == pytest.approx(conv[click == 1].mean())


def test_training_on_impressions_learns():
    tf.keras.utils.set_random_seed(0)
    model = build_model(config({"learning_rate": 0.01}), REGULAR, PRIVILEGED)
    features, labels = make_batch(256, 4)
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(128)
    first = float(model.compute_loss((features, labels)))
    history = model.fit(data, epochs=4, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    assert float(model.compute_loss((features, labels))) < first


def test_config_puts_impression_strategies_in_impression_space():
    assert from_dict({"model": {"strategy": "taml"}}).space == "impression"
    assert from_dict({"model": {"strategy": "ektf"}}).space == "click"
    with pytest.raises(ConfigError, match="needs data.columns.click"):
        from_dict({"model": {"strategy": "ukd"}, "data": {"columns": {"click": None}}})
