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
                     "hash_buckets": 50, "hash_rows_per_id": 16, **settings}
    custom_config = transform.sized_hash_config(custom_config,
                                                lambda: _statistics(len(set(rows))))
    schema = schema_utils.schema_from_feature_spec(
        {"item": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)})
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp_path / "tmp")):
        transform_fn = ((pipeline | beam.Create([{"item": r, "label": 0} for r in rows]),
                         dataset_metadata.DatasetMetadata(schema))
                        | tft_beam.AnalyzeDataset(functools.partial(
                            transform.preprocessing_fn, custom_config=custom_config)))
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "transform"))
    transform.write_hash_rows(str(tmp_path / "transform"), custom_config)
    return tft.TFTransformOutput(str(tmp_path / "transform")), custom_config


def _statistics(distinct_items: int):
    """TFDV statistics of the train split as StatisticsGen writes them: `item` with
    `distinct_items` distinct values."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = statistics_pb2.DatasetFeatureStatisticsList()
    feature = stats.datasets.add().features.add()
    feature.path.step.append("item")
    feature.string_stats.unique = distinct_items
    return stats


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


def _fingerprint_mod(items: list[str], rows: int) -> list[int]:
    """Fingerprint64 mod `rows`: TensorFlow's string hash, independent of the Transform."""
    import tensorflow as tf

    return tf.strings.to_hash_bucket_fast(items, rows).numpy().tolist()


def test_hash_encoding_without_rows_per_id_keeps_hash_buckets_rows(tmp_path):
    tft_output, custom_config = _fit(tmp_path, ["a", "b", "c", "d"], categorical_encoding="hash",
                                     hash_rows_per_id=0)
    assert transform.feature_vocab(custom_config, tft_output) == {"item": 50}
    assert _ids(tft_output, ["a", "never seen"]) == _fingerprint_mod(["a", "never seen"], 50)


def test_hashed_table_is_sized_to_the_train_split_statistics(tmp_path):
    # 41 distinct ids x 4 rows per id = 164 -> 256 rows, the next power of two.
    rows = [f"u{i}" for i in range(41)] + ["u0"] * 5
    tft_output, custom_config = _fit(tmp_path, rows, categorical_encoding="hash",
                                     hash_rows_per_id=4, hash_buckets=1000)
    assert transform.feature_vocab(custom_config, tft_output) == {"item": 256}
    items = ["u0", "u7", "u40", "never seen", ""]
    assert _ids(tft_output, items) == _fingerprint_mod(items, 256)


def test_hashed_table_stops_at_hash_buckets(tmp_path):
    rows = [f"u{i}" for i in range(41)]
    tft_output, custom_config = _fit(tmp_path, rows, categorical_encoding="hash",
                                     hash_rows_per_id=4, hash_buckets=100)
    assert transform.feature_vocab(custom_config, tft_output) == {"item": 100}
    items = ["u0", "u7", "never seen"]
    assert _ids(tft_output, items) == _fingerprint_mod(items, 100)


def test_hash_rows_are_rows_per_id_rounded_up_to_a_power_of_two():
    def reference(distinct: int, per_id: int, cap: int) -> int:
        rows = 1
        while rows < distinct * per_id:
            rows *= 2
        return min(rows, cap)

    for distinct in [*range(0, 70), 8740, 65536, 2**40 + 1]:
        for per_id, cap in ((1, 10**15), (16, 100_000), (3, 10**15)):
            assert transform.hash_rows(distinct, per_id, cap) == reference(
                distinct, per_id, cap), (distinct, per_id, cap)
    assert transform.hash_rows(8740, 0, 100_000) == 100_000  # 0: the cap, whatever the data


def test_distinct_ids_read_the_statistics_and_count_an_absent_feature_as_none():
    assert transform.distinct_ids(_statistics(41), ["item", "never_present"]) == {
        "item": 41, "never_present": 0}
