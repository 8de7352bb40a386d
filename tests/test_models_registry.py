"""models/registry.py, the TensorFlow-free declaration of every strategy, against
models/strategies.py's factories: the same names in the same order, and per
strategy the same example space, teacher and loss terms; its hyperparameters are
model settings; the config and the registry load without TensorFlow."""
import subprocess
import sys

import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.config import AdversarialKdConfig, AlignmentConfig, EktfConfig, ModelConfig, UkdConfig
from pfdx.models import registry
from pfdx.models.model import JointModel
from pfdx.models.strategies import STRATEGIES

REGULAR = {"user_id": 40, "bid": 9}
PRIVILEGED = {"privileged__page_jump": 3}
TASKS = ("student_task", "teacher_task")


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    n = 16
    click = rng.integers(0, 2, n)
    features = {"user_id": tf.constant(np.array([f"u{i}" for i in rng.integers(0, 30, n)])),
                "bid": tf.constant(rng.integers(0, 9, [n, 1])),
                "privileged__page_jump": tf.constant(rng.integers(0, 3, n))}
    labels = {"label": tf.constant(click * rng.integers(0, 2, n)), "click": tf.constant(click),
              "pseudo_label": tf.constant(rng.uniform(0.02, 0.6, n).astype(np.float32))}
    return features, labels


def test_registry_and_factories_name_the_same_strategies_in_the_same_order():
    assert list(registry.STRATEGIES) == list(STRATEGIES)


@pytest.mark.parametrize("name", list(registry.STRATEGIES))
def test_each_strategy_is_what_its_spec_declares(name, batch):
    spec = registry.STRATEGIES[name]
    config = ModelConfig(strategy=name, hidden_units=(8, 4),
                         alignment=AlignmentConfig(mapping_hidden_units=(4,)),
                         adversarial_kd=AdversarialKdConfig(discriminator_hidden_units=(4,)),
                         ektf=EktfConfig(heads=2), ukd=UkdConfig(discriminator_hidden_units=(4,)))
    model = JointModel(config, REGULAR, PRIVILEGED)
    assert model.strategy.space == spec.space
    assert model.has_teacher == spec.privileged_teacher
    assert spec.reshapes_student == (model.strategy.student_encoder is not None or (
        model.strategy.student_head is not None or model.strategy.owns_student_task))
    features, labels = batch
    if spec.space == registry.CLICK:
        labels = labels["label"]
    assert set(model.loss_terms(features, labels)) - set(TASKS) == spec.loss_terms


@pytest.mark.parametrize("name", list(registry.STRATEGIES))
def test_a_spec_declares_model_settings_and_a_known_teacher_stage(name):
    spec = registry.STRATEGIES[name]
    settings = set(ModelConfig.setting_types())
    assert set(spec.term_weights + spec.settings + spec.tuning_keys) <= settings
    assert set(spec.no_distillation()) <= set(spec.tuning_keys)
    # A teacher is a privileged reader whose tables and rate tuning varies.
    assert spec.reads_privileged >= spec.privileged_teacher
    assert spec.tunes_teacher >= spec.privileged_teacher
    if spec.teacher_stage is not None:
        assert registry.STRATEGIES[spec.teacher_stage].space == spec.space


def test_config_and_registry_load_without_tensorflow():
    code = ("import sys, pfdx.config, pfdx.features.contract, pfdx.models.registry; "
            "assert 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
