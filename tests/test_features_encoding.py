"""The teacher's privileged inputs in either encoding (features/transform.py)."""
from pfdx.features import transform

OUTPUTS = ["user", "privileged__duration", "privileged_q__duration", "privileged__interact",
           "label"]


def test_binary_encoding_reads_every_eq8_flag():
    assert transform.privileged_vocab(OUTPUTS, "binary", 16) == {
        "privileged__duration": 3, "privileged__interact": 3}


def test_quantile_encoding_replaces_the_flag_where_there_are_buckets():
    # A continuous signal's flag gives way to its 16 buckets + missing; a discrete one
    # (or an OR-group) keeps its flag.
    assert transform.privileged_vocab(OUTPUTS, "quantiles", 16) == {
        "privileged_q__duration": 17, "privileged__interact": 3}


def test_nothing_selected_means_no_privileged_input():
    assert transform.privileged_vocab(["user", "label"], "quantiles", 16) == {}


def _fit(tmp_path, rows: list[str], **settings):
    """The pipeline's preprocessing_fn fitted (TFT on Beam) on one categorical column
    `item` holding `rows`: its TFTransformOutput and the custom_config."""
    import functools

    import apache_beam as beam
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

    custom_config = {"label": "label", "click": None, "regular_categorical": ["item"],
                     "regular_numeric": [], "privileged": {}, "numeric_buckets": 4,
                     "privileged_buckets": 4, "categorical_encoding": "vocabulary",
                     "max_vocabulary": 100, "min_id_count": 2, "oov_buckets": 1,
                     "hash_buckets": 50, "hash_rows_per_id": None, **settings}
    schema = schema_utils.schema_from_feature_spec(
        {"item": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)})
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp_path / "tmp")):
        transform_fn = ((pipeline | beam.Create([{"item": r, "label": 0} for r in rows]),
                         dataset_metadata.DatasetMetadata(schema))
                        | tft_beam.AnalyzeDataset(functools.partial(
                            transform.preprocessing_fn, custom_config=custom_config)))
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "transform"))
    return tft.TFTransformOutput(str(tmp_path / "transform")), custom_config


def _ids(tft_output, items: list[str]) -> list[int]:
    import tensorflow as tf

    layer = tft_output.transform_features_layer()
    return layer({"item": tf.constant(items)})["item"].numpy().tolist()


def test_vocabulary_gives_frequent_ids_rows_and_pools_the_rest(tmp_path):
    rows = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"]  # d: seen once
    tft_output, custom_config = _fit(tmp_path, rows)
    # a, b, c by frequency; d (below min_id_count) and the never-seen e share the OOV id.
    assert _ids(tft_output, ["a", "b", "c", "d", "e"]) == [0, 1, 2, 3, 3]
    assert transform.feature_vocab(custom_config, tft_output) == {"item": 4}


def test_vocabulary_is_capped_at_max_vocabulary(tmp_path):
    rows = ["a"] * 5 + ["b"] * 3 + ["c"] * 2
    tft_output, custom_config = _fit(tmp_path, rows, max_vocabulary=2, oov_buckets=2)
    assert transform.feature_vocab(custom_config, tft_output) == {"item": 4}
    ids = _ids(tft_output, ["a", "b", "c", "zz"])
    assert ids[:2] == [0, 1] and all(i in (2, 3) for i in ids[2:])


def test_hash_encoding_keeps_hash_buckets_rows(tmp_path):
    tft_output, custom_config = _fit(tmp_path, ["a", "b", "c", "d"], categorical_encoding="hash")
    assert transform.feature_vocab(custom_config, tft_output) == {"item": 50}
    assert all(0 <= i < 50 for i in _ids(tft_output, ["a", "never seen"]))


def test_sized_hash_table_has_about_two_rows_per_distinct_id(tmp_path):
    import numpy as np
    import tensorflow as tf

    items = [f"id{i}" for i in range(12)] * 2  # 12 distinct ids: 24 rows -> 32
    tft_output, custom_config = _fit(tmp_path, items, categorical_encoding="hash",
                                     hash_rows_per_id=2, hash_buckets=1000)
    assert transform.feature_vocab(custom_config, tft_output) == {"item": 32}
    seen = items[:12] + ["never seen", "another"]
    # An id's row is its fingerprint modulo the (power of two) rows, as tft.hash_strings
    # gives it: a table that doubles keeps every id's row modulo the old size.
    expected = tf.strings.to_hash_bucket_fast(tf.constant(seen), 2 ** 20).numpy() % 32
    np.testing.assert_array_equal(_ids(tft_output, seen), expected)


def test_sized_hash_table_is_capped_by_hash_buckets(tmp_path):
    items = [f"id{i}" for i in range(40)]  # 80 rows wanted; 50 allows 32
    tft_output, custom_config = _fit(tmp_path, items, categorical_encoding="hash",
                                     hash_rows_per_id=2)
    assert transform.feature_vocab(custom_config, tft_output) == {"item": 32}
    assert all(0 <= i < 32 for i in _ids(tft_output, items + ["never seen"]))


def test_hashed_rows_rounds_to_the_nearest_power_of_two_in_log_scale():
    import tensorflow as tf

    # 2 x 11 = 22 < 16 * sqrt(2) -> 16; 2 x 12 = 24 > 16 * sqrt(2) -> 32.
    cases = {(0, 2, 100): 1, (11, 2, 100): 16, (12, 2, 100): 32, (1000, 2, 100): 64,
             (8929, 2, 100_000): 16384, (6766, 2, 100_000): 16384}
    for (distinct, per_id, cap), rows in cases.items():
        assert transform.hashed_rows(distinct, per_id, cap) == rows
        graph = transform.hashed_rows(tf.constant(distinct, tf.int64), per_id, cap)
        assert int(graph) == rows, (distinct, per_id, cap)
