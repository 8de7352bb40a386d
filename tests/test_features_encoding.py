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
                     "hash_buckets": 50, **settings}
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
