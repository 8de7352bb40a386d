"""The TFT preprocessing_fn: raw impressions -> integer ids for the embeddings.

Every model input is an int64 id in [0, vocab) (models.layers.FeatureEmbeddings):
- regular categorical (`model.categorical_encoding`): a vocabulary of the ids the
  train split holds at least `min_id_count` times (the `max_vocabulary` most
  frequent), the rest and ids first seen at serving in `oov_buckets` shared ids after
  it; or `tft.hash_strings` into a table sized to the data: `hash_rows_per_id` rows
  per distinct value of the train split's statistics, rounded up to a power of two,
  at most `hash_buckets` (`hash_rows`). A missing value is the empty string, an id
  like any other. The table sizes are recorded in the Transform artifact: the
  vocabulary files are assets of its graph (one per feature, VOCABULARY_PREFIX +
  name) and travel into the served SavedModel; the hashed tables' rows are
  HASH_ROWS_FILE beside the graph;
- regular numeric: quantile buckets (`tft.bucketize`), missing -> an extra id;
- privileged: the selection artifact's discretisation — continuous z >= threshold
  -> 1, discrete flag -> 0/1, OR-groups combined — missing -> 2, named by
  `contract.privileged_flag` so the Trainer can split the two sides by name.
  A continuous one is also emitted as `privileged_buckets` quantile buckets of its
  value (missing -> an extra id), named by `contract.privileged_quantiles`: the
  teacher reads one of the two encodings (`model.privileged_encoding`,
  `privileged_vocab`).
Labels pass through as int64 (`DataContract.labels`): the conversion, and in
impression space (TAML / UKD) the click.
The raw features it reads and the names it gives: `features/contract.py`.

The serving graph needs regular features only: each output depends on its own raw
column(s), and TFT prunes the graph to the outputs whose inputs are given.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping

import pfdx  # noqa: F401  (Keras flag before TensorFlow)
import tensorflow as tf
import tensorflow_transform as tft

from pfdx.features import contract

PRIVILEGED_VOCAB = 3  # 0, 1, missing
VOCABULARY_PREFIX = "vocabulary__"
# Feature -> rows of its hashed table, beside the Transform's graph.
HASH_ROWS_FILE = "hash_rows.json"


def regular_config(config) -> dict[str, Any]:
    """The DAG-time half of preprocessing_fn's `custom_config` (plain data)."""
    roles = config.data.columns
    return {
        "label": roles.label,
        # Not from_config: the Trainer, which calls this too, is given no data.time_column.
        "click": contract.DataContract(roles, config.space).click_label,
        "regular_categorical": list(roles.regular_categorical),
        "regular_numeric": list(roles.regular_numeric),
        "categorical_encoding": config.model.categorical_encoding,
        "max_vocabulary": config.model.max_vocabulary,
        "min_id_count": config.model.min_id_count,
        "oov_buckets": config.model.oov_buckets,
        "hash_buckets": config.model.hash_buckets,
        "hash_rows_per_id": config.model.hash_rows_per_id,
        "numeric_buckets": config.model.numeric_buckets,
        "privileged_buckets": config.model.privileged_buckets,
    }


def privileged_config(selection: Mapping[str, Any]) -> dict[str, Any]:
    """The run-time half (with `sized_hash_config`), from the selection artifact
    (`load_selection`): final feature -> its member columns and their thresholds."""
    privileged = {}
    for name in selection["selected"]:
        members = tuple(selection["or_groups"].get(name, (name,)))
        privileged[name] = {
            "members": list(members),
            "thresholds": {m: selection["thresholds"][m] for m in members
                           if m in selection["thresholds"]},
        }
    return privileged


def feature_vocab(custom_config: Mapping[str, Any],
                  tf_transform_output: tft.TFTransformOutput) -> dict[str, int]:
    """Regular transformed feature name -> number of ids (a vocabulary's size is
    what the Transform `tf_transform_output` found in the data)."""
    if custom_config["categorical_encoding"] == "hash":
        path = os.path.join(os.path.dirname(tf_transform_output.transform_savedmodel_dir),
                            HASH_ROWS_FILE)
        with tf.io.gfile.GFile(path) as f:
            rows = json.load(f)
        regular = {n: rows[n] for n in custom_config["regular_categorical"]}
    else:
        regular = {n: tf_transform_output.vocabulary_size_by_name(VOCABULARY_PREFIX + n)
                   + custom_config["oov_buckets"] for n in custom_config["regular_categorical"]}
    regular.update({n: custom_config["numeric_buckets"] + 1 for n in custom_config["regular_numeric"]})
    return regular


def privileged_vocab(transformed_names, encoding: str, buckets: int) -> dict[str, int]:
    """The teacher's privileged inputs -> number of ids, among the Transform's
    outputs `transformed_names`: every selected feature's HA-PFD Eq. 8 flag (`binary`), or
    with `quantiles` its quantile buckets in place of the flag where it has them."""
    names = set(transformed_names)
    vocab = {}
    for name in sorted(names):
        feature = contract.flagged_feature(name)
        if feature is None:
            continue
        quantile = contract.privileged_quantiles(feature)
        if encoding == "quantiles" and quantile in names:
            vocab[quantile] = buckets + 1
        else:
            vocab[name] = PRIVILEGED_VOCAB
    return vocab


def hash_rows(distinct_ids: int, rows_per_id: int, cap: int) -> int:
    """A hashed feature's table rows for `distinct_ids` ids in the train split:
    `rows_per_id` rows per id rounded up to a power of two, at most `cap` (`cap`
    itself when `rows_per_id` is 0). About 1 / `rows_per_id` of the rows are trained,
    so an id, seen or new, shares its row with a trained one about that often. A
    power of two divides every larger one: a table that doubles keeps each id's row
    modulo the old size (a warm start tiles it, models/warm_start.py `tile_rows`)."""
    if not rows_per_id:
        return cap
    return min(cap, 1 << (max(1, distinct_ids * rows_per_id) - 1).bit_length())


def distinct_ids(statistics, features: Iterable[str]) -> dict[str, int]:
    """Feature -> its distinct values in a split's TFDV statistics
    (`DatasetFeatureStatisticsList`, StatisticsGen's or `tfdv`'s: exact counts), 0 for
    a feature they lack (never present)."""
    (dataset,) = statistics.datasets
    unique = {f.path.step[-1] if f.path.step else f.name: f.string_stats.unique
              for f in dataset.features}
    return {name: int(unique.get(name, 0)) for name in features}


def sized_hash_config(custom_config: Mapping[str, Any],
                      statistics: Callable[[], Any]) -> dict[str, Any]:
    """`custom_config` with `hash_rows` (feature -> its hashed table's rows; none with
    a vocabulary) sized to the train split's TFDV statistics, which `statistics()`
    gives: called only when a table is sized from them (`hash_rows_per_id` > 0); what
    the Transform then writes to HASH_ROWS_FILE."""
    if custom_config["categorical_encoding"] != "hash":
        return dict(custom_config, hash_rows={})
    names, per_id = custom_config["regular_categorical"], custom_config["hash_rows_per_id"]
    counts = distinct_ids(statistics(), names) if per_id else dict.fromkeys(names, 0)
    return dict(custom_config, hash_rows={
        name: hash_rows(n, per_id, custom_config["hash_buckets"]) for name, n in counts.items()})


def write_hash_rows(transform_dir: str, custom_config: Mapping[str, Any]) -> None:
    """The table sizes the Transform hashed into, beside its graph (`feature_vocab`
    reads them)."""
    with tf.io.gfile.GFile(os.path.join(transform_dir, HASH_ROWS_FILE), "w") as f:
        json.dump(custom_config["hash_rows"], f, indent=1, sort_keys=True)


def dense(x: tf.Tensor | tf.SparseTensor, default: Any) -> tf.Tensor:
    """[B] dense values of a one-value raw column; a missing (sparse) value becomes
    `default`."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(
            tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value=default)
    return tf.reshape(x, [-1])


def _present(x: tf.Tensor | tf.SparseTensor) -> tf.Tensor:
    if isinstance(x, tf.SparseTensor):
        ones = tf.SparseTensor(x.indices, tf.ones_like(x.values, tf.int64), [x.dense_shape[0], 1])
        return tf.reshape(tf.sparse.to_dense(ones), [-1]) > 0
    return tf.ones(tf.shape(tf.reshape(x, [-1])), tf.bool)


def _quantile_ids(raw: tf.Tensor | tf.SparseTensor, n_buckets: int) -> tf.Tensor:
    """Quantile bucket ids in [0, n_buckets) of the present values (the quantiles
    are of those only); a missing value gets id n_buckets."""
    present = _present(raw)
    buckets = tft.bucketize(dense(raw, 0.0), n_buckets, weights=tf.cast(present, tf.float32))
    return tf.where(present, buckets, tf.constant(n_buckets, tf.int64))


def _privileged_flag(inputs, spec: Mapping[str, Any]) -> tf.Tensor:
    """0/1 for the OR of the members' discretised values, 2 when any member is missing."""
    flag, present = None, None
    for member in spec["members"]:
        raw = inputs[member]
        z = dense(raw, 0.0)
        threshold = spec["thresholds"].get(member)
        on = z >= threshold if threshold is not None else z > 0.5
        flag = on if flag is None else tf.logical_or(flag, on)
        p = _present(raw)
        present = p if present is None else tf.logical_and(present, p)
    return tf.where(present, tf.cast(flag, tf.int64), tf.constant(2, tf.int64))


def preprocessing_fn(inputs: Mapping[str, Any], custom_config: Mapping[str, Any]) -> dict[str, tf.Tensor]:
    outputs: dict[str, tf.Tensor] = {}
    for name in custom_config["regular_categorical"]:
        ids = dense(inputs[name], "")
        if custom_config["categorical_encoding"] == "hash":
            outputs[name] = tft.hash_strings(ids, custom_config["hash_rows"][name])
        else:
            outputs[name] = tft.compute_and_apply_vocabulary(
                ids, top_k=custom_config["max_vocabulary"],
                frequency_threshold=custom_config["min_id_count"],
                num_oov_buckets=custom_config["oov_buckets"],
                vocab_filename=VOCABULARY_PREFIX + name)
    for name in custom_config["regular_numeric"]:
        outputs[name] = _quantile_ids(inputs[name], custom_config["numeric_buckets"])
    for name, spec in custom_config["privileged"].items():
        outputs[contract.privileged_flag(name)] = _privileged_flag(inputs, spec)
        (first, *others) = spec["members"]
        if not others and first in spec["thresholds"]:  # a continuous signal
            outputs[contract.privileged_quantiles(name)] = _quantile_ids(
                inputs[first], custom_config["privileged_buckets"])
    for label in (custom_config["label"], custom_config["click"]):
        if label is not None:
            outputs[label] = tf.cast(dense(inputs[label], 0), tf.int64)
    return outputs
