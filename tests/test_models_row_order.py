"""Training must not depend on the order of the log's rows: a label-sorted split
still gives batches whose label mix is the split's."""
import numpy as np
import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils

from pfdx.config import ModelConfig
from pfdx.models import datasets
from pfdx.experiments.windows import dataset_factory

ROWS, POSITIVES = 30_000, 24_000  # KuaiRand-like: 80 % positives, all first


def _write(path, labels):
    """A gzip TFRecord file of examples with one int64 `label` each."""
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for label in labels:
            w.write(tf.train.Example(features=tf.train.Features(feature={"label": tf.train.Feature(
                int64_list=tf.train.Int64List(value=[int(label)]))})).SerializeToString())


def _sorted_log(path):
    _write(path, (i < POSITIVES for i in range(ROWS)))


def _label_batches(patterns, m, shuffle=True):
    schema = schema_utils.schema_from_feature_spec({"label": tf.io.FixedLenFeature([], tf.int64)})
    ds = dataset_factory(patterns, datasets.dataset_options(patterns, m, shuffle), schema)
    return [b["label"].numpy() for b in ds]


def _batch_means(path, m):
    return np.array([b.mean() for b in _label_batches([path], m)])


def test_count_records_counts_every_example(tmp_path):
    path = str(tmp_path / "log.tfrecord.gz")
    _sorted_log(path)
    assert datasets.count_records([str(tmp_path / "*.gz")]) == ROWS


def test_batches_of_a_label_sorted_split_hold_both_classes(tmp_path):
    path = str(tmp_path / "log.tfrecord.gz")
    _sorted_log(path)
    means = _batch_means(path, ModelConfig())
    assert len(means) == int(np.ceil(ROWS / 512))
    # Every full batch is close to the split's 0.8; with tfx-bsl's 10k-row buffer
    # the first ~half of an epoch is all positives.
    assert np.abs(means[:-1] - POSITIVES / ROWS).max() < 0.1
    small = _batch_means(path, ModelConfig(shuffle_buffer_rows=10_000))
    assert (small[:20] == 1.0).all()


def _ids(patterns, m, shuffle):
    return np.concatenate(_label_batches(patterns, m, shuffle))


def test_the_sequential_and_the_parallel_reader_read_every_row_once(tmp_path):
    # Three files of distinct ids; `model.reader_threads` 0 (the default: tf.data's
    # sequential interleave), None (tfx-bsl's parallel interleave) and 2 parallel readers.
    for f in range(3):
        _write(str(tmp_path / f"part-{f}.gz"), range(1000 * f, 1000 * f + 700))
    patterns = [str(tmp_path / "*.gz")]
    expected = sorted(i for f in range(3) for i in range(1000 * f, 1000 * f + 700))
    for threads in (None, 0, 2):
        m = ModelConfig(reader_threads=threads)
        for shuffle in (False, True):
            assert sorted(_ids(patterns, m, shuffle)) == expected
    sequential = ModelConfig()
    assert sequential.reader_threads == 0
    # Seeded and sequential: the same order on every pass.
    np.testing.assert_array_equal(_ids(patterns, sequential, True), _ids(patterns, sequential, True))
