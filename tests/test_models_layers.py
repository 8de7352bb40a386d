"""FeatureEmbeddings' input contract, tables stored without their zero rows, and the
Tower's shape and initialisation."""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.models.layers import FeatureEmbeddings, KeptRowsEmbedding, Tower

VOCAB = {"user_id": 50, "bid": 9}


def test_embeddings_accept_ids_of_shape_b_and_b1_and_concatenate_in_name_order():
    layer = FeatureEmbeddings(VOCAB, dim=4)
    ids = {"user_id": tf.constant([3, 49, 0], tf.int64),
           "bid": tf.constant([[1], [8], [0]], tf.int64)}
    out = layer(ids)
    assert out.shape == (3, 8)
    bid_table = layer.tables["bid"].embeddings.numpy()
    user_table = layer.tables["user_id"].embeddings.numpy()
    np.testing.assert_array_equal(out[:, :4], bid_table[[1, 8, 0]])  # "bid" < "user_id"
    np.testing.assert_array_equal(out[:, 4:], user_table[[3, 49, 0]])
    flat = layer({"user_id": ids["user_id"][:, None], "bid": tf.reshape(ids["bid"], [-1])})
    np.testing.assert_array_equal(flat, out)


def test_strings_are_hashed_into_the_vocab_and_extra_keys_ignored():
    layer = FeatureEmbeddings(VOCAB, dim=4)
    users = tf.constant([["u1"], ["u2"], ["u1"]])
    out = layer({"user_id": users, "bid": tf.constant([0, 0, 0], tf.int64),
                 "privileged__x": tf.constant([1, 1, 1], tf.int64)})
    ids = tf.keras.layers.Hashing(num_bins=50)(tf.reshape(users, [-1])).numpy()
    np.testing.assert_array_equal(out[:, 4:], layer.tables["user_id"].embeddings.numpy()[ids])
    np.testing.assert_array_equal(out[0], out[2])


def test_embeddings_reject_float_features_and_name_missing_ones():
    layer = FeatureEmbeddings(VOCAB)
    with pytest.raises(TypeError, match="bid"):
        layer({"user_id": tf.constant([1], tf.int64), "bid": tf.constant([0.5])})
    with pytest.raises(KeyError, match="bid"):
        layer({"user_id": tf.constant([1], tf.int64)})


def test_one_table_per_feature_with_truncated_normal_init():
    layer = FeatureEmbeddings({"a": 4000, "b": 10}, dim=16, init_stddev=0.1)
    layer({"a": tf.constant([0], tf.int64), "b": tf.constant([0], tf.int64)})
    assert [tuple(w.shape) for w in layer.weights] == [(4000, 16), (10, 16)]
    values = layer.tables["a"].embeddings.numpy()
    assert np.abs(values).max() <= 0.2 + 1e-6  # truncated at 2 std
    assert 0.07 < values.std() < 0.1


@pytest.mark.parametrize("kept", [[], [0], [7], [2, 3, 5], list(range(8))])
def test_a_table_without_its_zero_rows_looks_up_every_id_as_the_full_table(kept):
    rng = np.random.default_rng(0)
    table = np.zeros((8, 3), np.float32)
    table[kept] = rng.normal(size=(len(kept), 3))
    compact = KeptRowsEmbedding.of(table)
    ids = tf.constant([7, 0, 3, 3, 6, 5, 1, 2, 4], tf.int64)
    np.testing.assert_array_equal(compact(ids), table[ids.numpy()])
    assert compact.values.shape == (len(kept) + 1, 3)  # the stored rows and one zero row


def test_embeddings_without_zero_rows_give_the_same_output_and_store_fewer_rows():
    layer = FeatureEmbeddings(VOCAB, dim=4)
    ids = {"user_id": tf.constant([3, 49, 0, 11], tf.int64),
           "bid": tf.constant([1, 8, 0, 2], tf.int64)}
    layer(ids)
    kept = layer.zero_rows({"user_id": np.isin(np.arange(50), [3, 49]),
                            "bid": np.ones(9, bool)})
    assert kept == {"user_id": 2, "bid": 9}
    np.testing.assert_array_equal(layer.tables["user_id"].embeddings.numpy()[[0, 11]], 0.0)
    compact = layer.without_zero_rows()
    np.testing.assert_array_equal(compact(ids), layer(ids))
    stored = sum(int(np.prod(v.shape)) for v in compact.variables if v.dtype == tf.float32)
    assert stored == (2 + 1 + 9 + 1) * 4


def test_tower_returns_logit_and_both_hidden_latents():
    tower = Tower((256, 128), beta=1.0, init_stddev=0.1)
    logit, latents = tower(tf.random.normal([5, 24]))
    assert logit.shape == (5, 1)
    assert [tuple(f.shape) for f in latents] == [(5, 256), (5, 128)]
    assert all(np.all(f.numpy() >= 0) for f in latents)  # SmeLU >= 0


def test_every_weight_gets_its_own_random_init():
    a, b = Tower((16, 16)), Tower((16, 16))
    x = tf.ones([1, 16])
    a(x), b(x)
    weights = [w.numpy().ravel() for w in a.weights + b.weights]
    first = {tuple(w[:4]) for w in weights}
    assert len(first) == len(weights)


def test_frozen_tower_passes_gradient_to_inputs_only():
    tower = Tower((8,), output_dim=1)
    x = tf.Variable(tf.random.normal([4, 3]))
    tower(x)
    with tf.GradientTape() as tape:
        out, _ = tower(x, frozen=True)
    grads = tape.gradient(out, [x, *tower.trainable_variables])
    assert grads[0] is not None and all(g is None for g in grads[1:])
    np.testing.assert_allclose(out, tower(x)[0], rtol=1e-6)
