"""The Transform-ed datasets training reads: raw tf.Example files -> a
`DatasetFactory` (TFX's `data_accessor.tf_dataset_factory` in the Trainer, tfx-bsl's
`TFExampleRecord` in `pfdx compare`; the former is built on the latter) -> the
Transform graph's TFT layer -> (features, labels) batches.

Impression space (`PipelineConfig.space`, TAML / UKD): the labels are a dict
{label, click} (models/model.py); UKD's teacher trains on the clicked rows and a
sample of the unclicked ones (`model.ukd.unclicked_rate`); UKD's student reads the
teacher's CVR as `pseudo_label`, from a raw column written by a batch inference step
(the pipeline's BulkInferrer) or from a teacher model in memory (models/impressions.py).
"""
from __future__ import annotations

from typing import Callable, Sequence

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public import tfxio

from pfdx.config import ModelConfig, PipelineConfig
from pfdx.features import transform
from pfdx.models import impressions, registry
from pfdx.models.strategy_base import CLICK, LABEL, PSEUDO_LABEL

# (file patterns, options, raw schema) -> batches of raw feature dicts.
DatasetFactory = Callable[[list[str], tfxio.TensorFlowDatasetOptions, schema_pb2.Schema],
                          tf.data.Dataset]


def without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` without tf.data's autotuning thread. Keras makes a new iterator each epoch
    and each validation pass, and an iterator's destruction waits for that thread's
    running optimization: tens of milliseconds each on 2 busy cores, about 7 s of
    `make run`'s Trainer (bench/results). The rest stays: an AUTOTUNE parallel map
    runs on every core, and an AUTOTUNE prefetch buffer still grows on demand
    (tf.data's legacy prefetch autotuner, which needs no thread)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def vocabularies(config: PipelineConfig,
                 tf_transform_output: tft.TFTransformOutput) -> tuple[dict[str, int], dict[str, int]]:
    """(regular, privileged) model input -> number of ids. The privileged inputs are
    whatever the Transform emitted for the selection's choice, in the configured
    encoding (`model.privileged_encoding`)."""
    regular = transform.feature_vocab(transform.regular_config(config), tf_transform_output)
    privileged = transform.privileged_vocab(tf_transform_output.transformed_feature_spec(),
                                            config.model.privileged_encoding,
                                            config.model.privileged_buckets)
    return regular, privileged


def truth_column(config: PipelineConfig, tf_transform_output: tft.TFTransformOutput) -> str | None:
    """The true-probability column, when configured and present in the raw schema."""
    truth = config.data.columns.truth
    return truth if truth is not None and truth in tf_transform_output.raw_feature_spec() else None


def _float_column(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    """[B] float values of a one-value raw column; NaN where an example lacks it."""
    return transform.dense(tf.cast(x, tf.float32), np.nan)


def with_pseudo_label_column(schema: schema_pb2.Schema, column: str) -> schema_pb2.Schema:
    """`schema` plus a float `column`: the raw examples of UKD's student carry the
    teacher's CVR, written by batch inference after the Transform was fitted."""
    out = schema_pb2.Schema()
    out.CopyFrom(schema)
    feature = out.feature.add(name=column, type=schema_pb2.FLOAT)
    feature.value_count.min = feature.value_count.max = 1
    return out


def transformed_dataset(factory: DatasetFactory, files: Sequence[str],
                        tf_transform_output: tft.TFTransformOutput, config: PipelineConfig,
                        shuffle: bool, keep_truth: bool = False,
                        pseudo_label_column: str | None = None,
                        rows: int | None = None) -> tf.data.Dataset:
    """One pass over `files`: raw examples -> TFT layer -> (features, labels) batches,
    or (features, labels, true probability) with `keep_truth` -- an empty [0] tensor
    per batch when the examples have no true-probability column. `labels` is the
    conversion, or in impression space {label, click} (+ the raw
    `pseudo_label_column` as "pseudo_label"). `rows`: the examples in `files`, when
    the caller knows them (else counted for a shuffle)."""
    m = config.model
    label, click = config.data.columns.label, config.data.columns.click
    impression = config.space == registry.IMPRESSION
    truth = truth_column(config, tf_transform_output) if keep_truth else None
    schema = tf_transform_output.raw_metadata.schema
    if pseudo_label_column is not None:
        schema = with_pseudo_label_column(schema, pseudo_label_column)
    raw = factory(list(files), dataset_options(files, m, shuffle, rows), schema)
    tft_layer = tf_transform_output.transform_features_layer()

    # Plain graph code: without autograph's source transform the map traces in a tenth
    # of the time (about 2 s less per dataset built).
    @tf.autograph.experimental.do_not_convert
    def apply(features):
        pseudo = features.pop(pseudo_label_column) if pseudo_label_column is not None else None
        out = tft_layer(features)
        y = out.pop(label)
        if impression:
            y = {LABEL: y, CLICK: out.pop(click)}
            if pseudo is not None:
                y[PSEUDO_LABEL] = _float_column(pseudo)
        if keep_truth:
            return out, y, (_float_column(features[truth]) if truth else tf.zeros([0]))
        return out, y

    return without_autotune(
        raw.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))


def dataset_options(files: Sequence[str], m: ModelConfig, shuffle: bool,
                    rows: int | None = None) -> tfxio.TensorFlowDatasetOptions:
    """One pass in batches of `model.batch_size`; shuffled over the whole of `files`
    (up to `model.shuffle_buffer_rows`), so a log sorted by label, user or time still
    gives mixed batches (tfx-bsl's default buffer is 10,000 rows); the files read by
    `model.reader_threads` readers (0: tf.data's sequential interleave; None:
    tfx-bsl's default, its parallel one)."""
    options = tfxio.TensorFlowDatasetOptions(
        batch_size=m.batch_size, shuffle=shuffle, shuffle_seed=m.seed, num_epochs=1,
        drop_final_batch=False)
    if m.reader_threads is not None:
        options = options._replace(reader_num_threads=m.reader_threads or None)
    if shuffle:
        options = options._replace(shuffle_buffer_size=max(1, min(
            count_records(files) if rows is None else rows, m.shuffle_buffer_rows)))
    return options


def in_memory(batches: tf.data.Dataset):
    """Every row of one pass over `batches`, as one structure of tensors (the batches'
    concatenated), or None when a component is not a dense tensor (`shuffled_rows`
    gathers rows by index)."""
    if not all(isinstance(spec, tf.TensorSpec) for spec in tf.nest.flatten(batches.element_spec)):
        return None
    parts = list(batches)
    return tf.nest.map_structure(lambda *t: tf.concat(t, 0), *parts) if parts else None


def shuffled_rows(rows, m: ModelConfig) -> tf.data.Dataset:
    """Batches of `model.batch_size` of `rows` (`in_memory`'s), in another seeded
    order on every pass: the row indices shuffled as a streamed split's records are
    (over at most `shuffle_buffer_rows`), each batch gathered from memory. A pass then
    neither reads, parses nor transforms (the TFT layer) its rows again."""
    count = int(tf.nest.flatten(rows)[0].shape[0])
    order = tf.data.Dataset.range(count).shuffle(max(1, min(count, m.shuffle_buffer_rows)),
                                                 seed=m.seed)
    return without_autotune(order.batch(m.batch_size).map(
        lambda i: tf.nest.map_structure(lambda t: tf.gather(t, i), rows),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))


def count_records(file_patterns: Sequence[str]) -> int:
    """Examples in the gzip TFRecord files matching `file_patterns` (ExampleGen's and
    compare's format): one pass over the serialized records, nothing parsed."""
    files = [f for p in file_patterns for f in tf.io.gfile.glob(p)]
    if not files:
        return 0
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1))


def sampled_impressions(batches: tf.data.Dataset, m: ModelConfig) -> tf.data.Dataset:
    """UKD's teacher data from unshuffled `(features, labels)` batches: every clicked
    row and a `ukd.unclicked_rate` sample of the unclicked ones (None: as many as the
    clicked ones, from the batches' observed CTR), drawn in file order and then
    shuffled, so every epoch holds the same rows in as many steps as the first (what
    Keras expects of a dataset of unknown length)."""
    rate = m.ukd.unclicked_rate
    if rate is None:
        rate = impressions.balanced_unclicked_rate(batches)
    rows = impressions.sample_unclicked(batches.unbatch(), rate, m.seed)
    # The sample is at most the split: a buffer of that many mixes a sorted log.
    return rows.shuffle(m.shuffle_buffer_rows, seed=m.seed).batch(m.batch_size)

