"""Which loss term trains which weights, for every strategy in the registry.

- distillation terms move the student (and the strategy's own nets) but never the
  teacher tower or the privileged embeddings;
- each task loss moves its own tower and not the other's;
- adversarial KD: the discriminator loss moves only the discriminators, the
  student's adversarial loss only the student, and only after the warm-up.
"""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.config import ModelConfig, PipelineConfig
from pfdx.models.model import JointModel
from pfdx.models.registry import IMPRESSION
from pfdx.models.registry import STRATEGIES as SPECS
from pfdx.models.strategies import STRATEGIES, make_strategy

REGULAR = {"user_id": 40, "bid": 9}
PRIVILEGED = {"privileged__page_jump": 3, "privileged__duration": 3}
TASKS = ("student_task", "teacher_task")
# Multi-head and impression-space students own their supervised loss; they have
# their own tests (test_models_ektf.py, test_models_taml.py, test_models_ukd.py).
OWN_TESTS = {n for n, spec in SPECS.items() if spec.space == IMPRESSION
             or make_strategy(ModelConfig(strategy=n), PRIVILEGED).owns_student_task}


SMALL = {"hidden_units": (16, 8), "alignment.mapping_hidden_units": (8,),
         "adversarial_kd.discriminator_hidden_units": (8, 4), "adversarial_kd.warmup_steps": 0}


def small_config(strategy: str, settings: dict | None = None) -> ModelConfig:
    """A small model of `strategy`, with `settings` (dotted paths: `kd.lam`) replaced."""
    return PipelineConfig().with_model({"strategy": strategy, **SMALL, **(settings or {})}).model


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    n = 32
    features = {"user_id": tf.constant(np.array([f"u{i}" for i in rng.integers(0, 30, n)])),
                "bid": tf.constant(rng.integers(0, 9, [n, 1])),
                "privileged__page_jump": tf.constant(rng.integers(0, 3, n)),
                "privileged__duration": tf.constant(rng.integers(0, 3, n))}
    return features, tf.constant(rng.integers(0, 2, n))


def term_gradients(model, batch):
    """{term: {variable ref: True if the term's gradient on it is non-zero}}."""
    with tf.GradientTape(persistent=True) as tape:
        terms = model.loss_terms(*batch)
    variables = model.trainable_variables
    moved = {}
    for name, value in terms.items():
        grads = tape.gradient(value, variables)  # a vector target: gradient of its sum
        moved[name] = {v.ref(): g is not None and bool(np.any(tf.convert_to_tensor(g).numpy()))
                       for v, g in zip(variables, grads)}
    return terms, moved


def refs(*holders):
    return {v.ref() for h in holders for v in h.trainable_variables}


def groups(model):
    student = refs(model.student)
    tower = refs(model.student.tower)
    teacher = refs(model.teacher_tower, model.privileged_embeddings) if model.has_teacher else set()
    strategy_only = refs(model.strategy) - student
    return student, tower, teacher, strategy_only


def test_registry_holds_every_configured_method():
    assert set(STRATEGIES) == {"none", "mtl", "kd", "focal_v1", "focal_v2", "layer_align",
                               "kd_layer_align", "ha_pfd_v1", "ha_pfd_v2", "review_kd",
                               "similarity_kd", "adversarial_kd"} | OWN_TESTS
    assert ModelConfig().strategy == "ha_pfd_v2"
    with pytest.raises(ValueError, match="unknown strategy"):
        JointModel(ModelConfig(strategy="nope"), REGULAR, PRIVILEGED)


@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES) - OWN_TESTS))
def test_each_term_trains_only_its_side(strategy, batch):
    model = JointModel(small_config(strategy), REGULAR, PRIVILEGED)
    terms, moved = term_gradients(model, batch)
    student, tower, teacher, strategy_only = groups(model)
    assert set(terms) - set(TASKS) == SPECS[strategy].loss_terms
    assert model.has_teacher == (strategy not in ("none", "mtl"))
    assert all(t.shape == (32,) for t in terms.values())

    def changes(term, group):
        return {r for r in group if moved[term][r]}

    # Task losses: each moves its whole tower, never the other one.
    assert changes("student_task", tower) == tower
    assert not changes("student_task", teacher | strategy_only)
    if model.has_teacher:
        assert changes("teacher_task", teacher) == teacher
        assert not changes("teacher_task", tower | strategy_only)
    else:
        assert "teacher_task" not in terms

    for term in SPECS[strategy].loss_terms:
        assert not changes(term, teacher), f"{term} moved the teacher"
        if term == "discriminator":
            assert not changes(term, student)
            assert changes(term, strategy_only) == strategy_only
        elif term == "auxiliary":  # MTL: trains the auxiliary towers, which feed the tower
            encoder = refs(model.strategy.encoder)
            assert changes(term, encoder) == encoder and not changes(term, tower)
        else:
            assert changes(term, tower), f"{term} does not train the student tower"
            # The strategy's own nets (mapping DNNs g^(i)) learn from their term.
            if term in ("layer_align", "review"):
                assert changes(term, strategy_only) == strategy_only
            if term == "adversarial":
                assert not changes(term, strategy_only), "adversarial moved a discriminator"


def test_adversarial_student_term_waits_for_the_warm_up(batch):
    config = small_config("adversarial_kd", {"adversarial_kd.warmup_steps": 5})
    model = JointModel(config, REGULAR, PRIVILEGED)
    model.compile(optimizer=tf.keras.optimizers.SGD())
    terms, moved = term_gradients(model, batch)
    assert float(tf.reduce_sum(terms["adversarial"])) == 0.0
    assert not any(moved["adversarial"].values())
    assert float(tf.reduce_sum(terms["discriminator"])) > 0.0
    model.optimizer.iterations.assign(5)
    terms, moved = term_gradients(model, batch)
    assert float(tf.reduce_sum(terms["adversarial"])) > 0.0
    assert any(moved["adversarial"][r] for r in refs(model.student.tower))


def test_lambda_and_gamma_reach_the_focal_term(batch):
    base = JointModel(small_config("focal_v2"), REGULAR, PRIVILEGED)
    base.loss_terms(*batch)
    for overrides in ({"kd.lam": 3.0}, {"kd.gamma": 2.0}):
        other = JointModel(small_config("focal_v2", overrides), REGULAR, PRIVILEGED)
        other.loss_terms(*batch)
        other.set_weights(base.get_weights())
        a, b = base.loss_terms(*batch)["focal_v2"], other.loss_terms(*batch)["focal_v2"]
        if "kd.lam" in overrides:
            np.testing.assert_allclose(b, a * 3.0 / 10.0, rtol=1e-5)
        else:
            assert np.all(b.numpy() <= a.numpy() + 1e-6) and not np.allclose(a, b)
