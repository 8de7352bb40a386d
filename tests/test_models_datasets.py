"""The batches training iterates (models/datasets.py): every row once per pass, and
no tf.data autotuning thread, whose running optimization each of Keras' per-epoch
iterators waited for when it was destroyed."""
import os

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
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    spec = {"id": tf.io.FixedLenFeature([], tf.int64),
            "conversion": tf.io.FixedLenFeature([], tf.int64)}
    raw = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    out = str(tmp_path / "transform")
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp_path / "tmp")):
        transform_fn = ((pipeline | beam.Create([{"id": 0, "conversion": 0}]), raw)
                        | tft_beam.AnalyzeDataset(dict))  # the identity
        _ = transform_fn | tft_beam.WriteTransformFn(out)
    metadata_io.write_metadata(raw, os.path.join(out, tft.TFTransformOutput.RAW_METADATA_DIR))
    path = str(tmp_path / "examples.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as w:
        for i in range(300):
            w.write(tf.train.Example(features=tf.train.Features(feature={
                k: tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2 if k == "conversion"
                                                                          else i]))
                for k in spec})).SerializeToString())
    ds = datasets.transformed_dataset(dataset_factory, [path],
                                      tft.TFTransformOutput(out),
                                      PipelineConfig(), shuffle=False)
    assert ds.options().autotune.enabled is False
    ids = np.concatenate([features["id"].numpy() for features, _ in ds])
    np.testing.assert_array_equal(ids, np.arange(300))
