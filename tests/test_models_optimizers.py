"""LazyAdam (models/optimizers.py) against a numpy Adam with decoupled weight decay:
dense variables as Keras' Adam, embedding rows in a batch as Adam on those rows
(duplicate ids summed), rows outside it untouched until they are caught up; and,
caught up (`flush`), every row as Keras' own Adam leaves it."""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.models.optimizers import LazyAdam

LR, WD, B1, B2, EPS = 0.01, 0.1, 0.9, 0.999, 1e-7


def _adam(w, m, v, g, t):
    """One numpy step of Adam with decoupled weight decay (Keras' order: decay, then
    the moment update), at step t (1-based); returns (w, m, v)."""
    w = w - LR * WD * w
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g * g
    alpha = LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t)
    return w - alpha * m / (np.sqrt(v) + EPS), m, v


def test_matches_numpy_adam_on_dense_and_on_the_batchs_rows():
    rng = np.random.default_rng(0)
    table0, dense0 = rng.normal(size=(6, 3)), rng.normal(size=(4,))
    table = tf.Variable(table0, dtype=tf.float64)
    dense = tf.Variable(dense0, dtype=tf.float64)
    optimizer = LazyAdam(learning_rate=LR, weight_decay=WD, beta_1=B1, beta_2=B2, epsilon=EPS)
    w_t, m_t, v_t = table0.copy(), np.zeros_like(table0), np.zeros_like(table0)
    w_d, m_d, v_d = dense0.copy(), np.zeros_like(dense0), np.zeros_like(dense0)
    steps = [np.array([1, 4, 1]), np.array([4, 2])]  # row 1 twice in step 1; 0, 3, 5 never
    last = np.zeros(6, np.int64)
    for t, ids in enumerate(steps, start=1):
        values = rng.normal(size=(ids.size, 3))
        g_dense = rng.normal(size=(4,))
        optimizer.apply_gradients([
            (tf.IndexedSlices(tf.constant(values), tf.constant(ids)), table),
            (tf.constant(g_dense), dense)])
        rows = np.unique(ids)
        g = np.zeros_like(table0)
        np.add.at(g, ids, values)
        # A row first seen now catches up on the weight decay of the steps before
        # (no momentum yet: nothing else to catch up on in these two steps).
        w_t[rows] *= (1 - LR * WD) ** (t - 1 - last[rows])[:, None]
        last[rows] = t
        w_t[rows], m_t[rows], v_t[rows] = _adam(w_t[rows], m_t[rows], v_t[rows], g[rows], t)
        w_d, m_d, v_d = _adam(w_d, m_d, v_d, g_dense, t)
        # rtol 1e-6: the optimizer keeps lr in float32.
        np.testing.assert_allclose(table.numpy(), w_t, rtol=1e-6)
        np.testing.assert_allclose(dense.numpy(), w_d, rtol=1e-6)
    untouched = [0, 3, 5]
    np.testing.assert_array_equal(table.numpy()[untouched], table0[untouched])


def _sparse_steps(rows=40, dim=3, steps=300, seed=2):
    """Row gradients without duplicate ids: a few hot rows in most steps, rare rows
    now and then, some rows never (Keras' Adam sums squares of duplicates; LazyAdam
    squares their sum)."""
    rng = np.random.default_rng(seed)
    hot = np.arange(4)
    for _ in range(steps):
        rare = rng.choice(np.arange(4, rows - 5), size=rng.integers(0, 4), replace=False)
        ids = np.concatenate([hot[rng.random(4) < 0.7], rare]).astype(np.int64)
        scale = rng.choice([1e-4, 1e-2, 1.0], ids.size)[:, None]
        yield ids, rng.normal(size=(ids.size, dim)) * scale


@pytest.mark.parametrize("flush_every", [None, 7])
def test_caught_up_rows_equal_keras_adam(flush_every):
    """Rows keep moving on their momentum and decay while absent, as in Keras' Adam:
    after `flush` the table, both moments included, is Keras' to float32 rounding,
    whether or not it was flushed in between (a flush mid-run changes nothing)."""
    start = np.random.default_rng(3).normal(size=(40, 3)).astype(np.float32)
    lazy_table, keras_table = tf.Variable(start), tf.Variable(start)
    lazy = LazyAdam(learning_rate=0.01, weight_decay=0.001)
    keras = tf.keras.optimizers.Adam(learning_rate=0.01, weight_decay=0.001)
    for step, (ids, values) in enumerate(_sparse_steps(), start=1):
        for opt, table in ((lazy, lazy_table), (keras, keras_table)):
            grad = tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(ids),
                                    tf.constant(start.shape, tf.int64))
            opt.apply_gradients([(grad, table)])
        if flush_every and step % flush_every == 0:
            lazy.flush()
    moved = np.abs(keras_table.numpy() - start).max()
    assert not np.allclose(lazy_table.numpy(), keras_table.numpy(), atol=1e-3 * moved)
    lazy.flush()
    np.testing.assert_allclose(lazy_table.numpy(), keras_table.numpy(), atol=2e-4 * moved)
    for slot in ("_momentums", "_velocities"):
        np.testing.assert_allclose(getattr(lazy, slot)[0].numpy(), getattr(keras, slot)[0].numpy(),
                                   rtol=1e-4, atol=1e-12)
    assert lazy.iterations.numpy() == keras.iterations.numpy() == 300


def test_tables_of_several_shapes_and_decays_step_together_as_keras_adam():
    """A step updates every table's rows at once (their rows concatenated, then split
    back by table): tables of other sizes and widths, one excluded from weight decay,
    int32 and int64 ids, duplicate ids, each caught up as Keras' Adam leaves it."""
    rng = np.random.default_rng(4)
    shapes = [(40, 3), (3, 3), (25, 2), (40, 3)]
    starts = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    tables = {opt: [tf.Variable(start, name=f"table{i}") for i, start in enumerate(starts)]
              for opt in (LazyAdam(learning_rate=0.01, weight_decay=0.001),
                          tf.keras.optimizers.Adam(learning_rate=0.01, weight_decay=0.001))}
    for opt in tables:
        opt.exclude_from_weight_decay(var_names=["table3"])
    for _ in range(200):
        grads = []
        for i, (rows, dim) in enumerate(shapes):
            ids = rng.choice(rows, size=rng.integers(1, 4))  # with repeats
            values = rng.normal(size=(ids.size, dim)) * rng.choice([1e-2, 1.0], (ids.size, 1))
            grads.append((values.astype(np.float32), ids.astype(np.int32 if i == 2 else np.int64)))
        for opt, variables in tables.items():
            opt.apply_gradients([(tf.IndexedSlices(tf.constant(values), tf.constant(ids),
                                                   tf.constant(var.shape, tf.int64)), var)
                                 for (values, ids), var in zip(grads, variables)])
    lazy, keras = tables
    lazy.flush()
    for i, (a, b) in enumerate(zip(tables[lazy], tables[keras])):
        moved = np.abs(b.numpy() - starts[i]).max()
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-4 * moved)
        for slot in ("_momentums", "_velocities"):
            np.testing.assert_allclose(getattr(lazy, slot)[i].numpy(),
                                       getattr(keras, slot)[i].numpy(), rtol=1e-4, atol=1e-12)


def test_dense_updates_equal_keras_adam():
    rng = np.random.default_rng(1)
    start = rng.normal(size=(5,))
    a, b = tf.Variable(start), tf.Variable(start)
    lazy = LazyAdam(learning_rate=LR, weight_decay=WD)
    keras = tf.keras.optimizers.Adam(learning_rate=LR, weight_decay=WD)
    for _ in range(3):
        g = tf.constant(rng.normal(size=(5,)))
        lazy.apply_gradients([(g, a)])
        keras.apply_gradients([(g, b)])
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


@pytest.mark.parametrize("option", ["amsgrad", "use_ema"])
def test_whole_table_options_are_refused(option):
    with pytest.raises(ValueError, match=option):
        LazyAdam(**{option: True})


def test_the_setting_picks_the_optimizer_and_names_its_key():
    from pfdx.config import ConfigError, ModelConfig, load_config
    from pfdx.models.model import make_optimizer

    assert isinstance(make_optimizer(ModelConfig()), LazyAdam)  # the default
    paper = make_optimizer(ModelConfig(embedding_optimizer="adam"))
    assert type(paper) is tf.keras.optimizers.Adam
    with pytest.raises(ConfigError, match="model.embedding_optimizer"):
        load_config(None, ["model.embedding_optimizer=sgd"])


def test_marking_an_unbuilt_optimizer_caught_up_does_nothing():
    """A warm start marks both optimizers; a strategy without a teacher never builds
    the teacher's (pipeline runs with the student alone beside every strategy)."""
    optimizer = LazyAdam(learning_rate=0.01)
    optimizer.mark_caught_up()
    assert getattr(optimizer, "_last_steps", None) is None
