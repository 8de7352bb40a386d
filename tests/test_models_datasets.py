"""The batches training iterates (models/datasets.py): every row once per pass, and
no tf.data autotuning thread, whose running optimization each of Keras' per-epoch
iterators waited for when it was destroyed."""
import numpy as np
import tensorflow as tf

from pfdx.config import ModelConfig, PipelineConfig
from pfdx.experiments.windows import dataset_factory
from pfdx.models import datasets


def _passes(ds, n=2):
    return [np.concatenate([b["id"].numpy() for b in ds]) for _ in range(n)]


def test_in_memory_rows_come_shuffled_once_per_pass_without_autotuning():
    rows = {"id": tf.range(1000, dtype=tf.int64)}
    m = ModelConfig(batch_size=64, seed=3)
    ds = datasets.shuffled_rows(rows, m)
    assert ds.options().autotune.enabled is False
    first, second = _passes(ds)
    for order in (first, second):
        assert sorted(order) == list(range(1000))
    assert list(first) != list(second)  # a new order each pass
    again = _passes(datasets.shuffled_rows(rows, m))  # seeded: the same orders
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)


def test_transformed_batches_come_without_autotuning(tmp_path):
    """`transformed_dataset` on a Transform fitted as `pfdx compare` fits it."""
    from pfdx.experiments import preprocessing, windows
    from pfdx.simulator import simulate

    config = PipelineConfig()
    (log,) = simulate.write(simulate.simulate(3000, seed=4), str(tmp_path / "log"))
    rows = windows.read_log([log], config)[0][windows.CLICK]
    window = windows.write_window("train", np.ones(len(rows.labels), bool), rows,
                                  str(tmp_path / "train"))
    output = preprocessing.fit_transform(
        config, {"selected": [], "or_groups": {}, "thresholds": {}}, window, str(tmp_path))
    ds = datasets.transformed_dataset(dataset_factory, [window.pattern], output, config,
                                      shuffle=False)
    assert ds.options().autotune.enabled is False
    labels = np.concatenate([np.ravel(y.numpy()) for _, y in ds])
    np.testing.assert_array_equal(labels, rows.labels)  # every row, in order
