"""The exportable student takes regular features only and holds no teacher-side weight;
its rows no gradient reached are zeroed after training and not stored."""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.config import AlignmentConfig, ModelConfig
from pfdx.models.model import JointModel, build_model
from tests.student_export_checks import assert_saved_student_is_regular_only

REGULAR = {"user_id": 40, "bid": 9}
PRIVILEGED = {"privileged__page_jump": 3, "privileged__duration": 3}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(1)
    n = 16
    features = {"user_id": tf.constant(np.array([f"u{i}" for i in rng.integers(0, 30, n)])),
                "bid": tf.constant(rng.integers(0, 9, n)),
                "privileged__page_jump": tf.constant(rng.integers(0, 3, n)),
                "privileged__duration": tf.constant(rng.integers(0, 3, n))}
    return features, tf.constant(rng.integers(0, 2, n))


def built(strategy, batch):
    model = JointModel(ModelConfig(strategy=strategy, hidden_units=(16, 8),
                                   alignment=AlignmentConfig(mapping_hidden_units=(8,))),
                       REGULAR, PRIVILEGED)
    model.loss_terms(*batch)  # creates every variable, the strategy's included
    return model


def refs(*holders):
    return {v.ref() for h in holders for v in h.variables}


@pytest.mark.parametrize("strategy", ["ha_pfd_v2", "adversarial_kd", "mtl"])
def test_student_holds_only_regular_embeddings_and_student_side_nets(strategy, batch):
    model = built(strategy, batch)
    student = model.student_model()
    own = refs(student.embeddings, student.tower, student.calibration)
    if strategy == "mtl":  # the auxiliary towers compute the served model's inputs
        own |= refs(model.strategy.encoder)
    assert refs(student) == own
    assert sorted(student.embeddings.tables) == sorted(REGULAR)
    if model.has_teacher:
        assert not refs(student) & refs(model.teacher_tower, model.privileged_embeddings)
        strategy_nets = refs(model.strategy)
        assert strategy_nets and not refs(student) & strategy_nets


def test_student_needs_no_privileged_input_and_matches_the_joint_model(batch):
    model = built("ha_pfd_v2", batch)
    features = batch[0]
    regular_only = {k: features[k] for k in REGULAR}
    served = model.student_model()(regular_only).numpy()
    assert served.shape == (16,)
    np.testing.assert_allclose(served, model.predict_both(features)["student"], rtol=1e-6)
    assert set(model.predict_both(features)) == {"student", "teacher"}


def test_saved_student_asks_for_regular_features_and_saves_no_teacher_weight(batch, tmp_path):
    model = built("ha_pfd_v2", batch)
    assert_saved_student_is_regular_only(model.student_model(), batch, REGULAR, tmp_path)


@pytest.mark.parametrize("optimizer,share", [("adam", True), ("lazy_adam", False)])
def test_rows_no_gradient_reached_are_zeroed_and_the_saved_student_stores_the_rest(
        optimizer, share, batch, tmp_path):
    config = ModelConfig(hidden_units=(16, 8), embedding_optimizer=optimizer,
                         share_embeddings=share,
                         alignment=AlignmentConfig(mapping_hidden_units=(8,)))
    model = build_model(config, REGULAR, PRIVILEGED)
    features, labels = batch
    model.fit(tf.data.Dataset.from_tensors(batch).repeat(3), verbose=0)
    tables = model.student.embeddings.tables
    ids = model.student.embeddings.ids(features)
    looked_up = {name: np.isin(np.arange(size), ids[name].numpy())
                 for name, size in REGULAR.items()}
    before = {name: layer.embeddings.numpy() for name, layer in tables.items()}
    kept = model.zero_untrained_rows()
    assert kept == {name: int(mask.sum()) for name, mask in looked_up.items()}
    assert kept["user_id"] < REGULAR["user_id"]  # 30 of 40 hash rows at most
    for name, mask in looked_up.items():
        after = tables[name].embeddings.numpy()
        np.testing.assert_array_equal(after[mask], before[name][mask])
        np.testing.assert_array_equal(after[~mask], 0.0)
    if not share:  # the teacher's own tables too
        teacher = model.teacher_regular_embeddings.tables["user_id"].embeddings.numpy()
        assert np.all(teacher[looked_up["user_id"]] != 0)
        np.testing.assert_array_equal(teacher[~looked_up["user_id"]], 0.0)
    served = model.student_model()(features).numpy()
    compact = model.student_model().with_parts(
        embeddings=model.student.embeddings.without_zero_rows())
    np.testing.assert_array_equal(compact(features), served)
    assert_saved_student_is_regular_only(compact, batch, REGULAR, tmp_path)
    stored = sum(int(np.prod(v.shape)) for v in compact.embeddings.variables
                 if v.dtype == tf.float32)
    assert stored == (sum(kept.values()) + len(kept)) * config.embedding_dim
