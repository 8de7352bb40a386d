"""Issue 17.16: a logged row replayed as the log holds it is served like its canonical example.

ExampleGen stores categoricals as text and numerics as floats; an ad server building
its tf.Example from a logged row sends the log's own types (KuaiRand-like int64
`weekday` / `hour`, int64 `user_past_clicks`). One simulated log is written as CSV,
Parquet and TFRecord; each clicked row is read back with a typed reader (pandas and
pyarrow.csv for CSV, pyarrow for Parquet, the records themselves for TFRecord), turned
into a tf.Example with those types and sent to the exported student's
`serving_default` (a real SavedModel, reloaded), which must answer exactly what it
answers for the canonical example ExampleGen makes of the same row.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from pfdx.components import log_rows
from pfdx.config import load_config
from pfdx.serving import client, export, parsing
from pfdx.simulator import simulate

FORMATS = ("csv", "parquet", "tfrecord")
INT64_LOGGED = ("hour", "weekday", "user_past_clicks", "user_past_conversions")


def logged_example(row: dict) -> bytes:
    """A tf.Example of a whole logged row in the types its reader gave (a None / NaN
    is an absent feature, as the simulator's TFRecord writer does)."""
    feats = {}
    for name, v in row.items():
        if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
            continue
        if isinstance(v, (bool, np.bool_, int, np.integer)):
            feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
        elif isinstance(v, (float, np.floating)):
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)]))
        else:
            feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def kinds(serialized: bytes) -> dict[str, str]:
    return {k: f.WhichOneof("kind")
            for k, f in tf.train.Example.FromString(serialized).features.feature.items()}


def fit_transform(config, examples: list[bytes], out_dir: str, variable_length=()):
    """The TFT analysis of `features/transform.py` on `examples` (regular features and
    the label; nothing privileged is served), with the raw schema SchemaGen infers
    from ExampleGen's examples of the simulated log; the `variable_length` features
    as SchemaGen declares one that some examples lack (a VarLenFeature)."""
    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

    from pfdx.features import transform

    roles = config.data.columns
    # What SchemaGen (infer_feature_shape) makes of always-present one-value features.
    spec = {roles.label: tf.io.FixedLenFeature([1], tf.int64)}
    spec.update((n, tf.io.FixedLenFeature([1], tf.string)) for n in roles.regular_categorical)
    spec.update((n, tf.io.FixedLenFeature([1], tf.float32)) for n in roles.regular_numeric)
    spec.update((n, tf.io.VarLenFeature(spec[n].dtype)) for n in variable_length)
    schema = schema_utils.schema_from_feature_spec(spec)
    # The hashed tables sized as the pipeline sizes them: TFDV's statistics of the examples.
    def statistics():
        statistics_dir = out_dir + "-statistics"
        os.makedirs(statistics_dir)
        with tf.io.TFRecordWriter(os.path.join(statistics_dir, "examples.tfrecord")) as writer:
            for serialized in examples:
                writer.write(serialized)
        return tfdv.generate_statistics_from_tfrecord(
            os.path.join(statistics_dir, "examples.tfrecord"),
            output_path=os.path.join(statistics_dir, "statistics.tfrecord"))

    custom_config = dict(transform.sized_hash_config(transform.regular_config(config), statistics),
                         privileged={})
    instances = []
    for serialized in examples:
        feature = tf.train.Example.FromString(serialized).features.feature
        instance = {n: list(getattr(feature[n], feature[n].WhichOneof("kind")).value)
                    for n in spec if n in feature}
        instance.update((n, []) for n in variable_length if n not in feature)
        instances.append(instance)
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp"),
                                                        force_tf_compat_v1=False):
        raw = pipeline | beam.Create(instances)
        transform_fn = ((raw, dataset_metadata.DatasetMetadata(schema))
                        | tft_beam.AnalyzeDataset(functools.partial(
                            transform.preprocessing_fn, custom_config=custom_config)))
        _ = transform_fn | tft_beam.WriteTransformFn(out_dir)
    transform.write_hash_rows(out_dir, custom_config)
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(schema),
                               os.path.join(out_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return tft.TFTransformOutput(out_dir)


def typed_rows(fmt: str, path: str) -> dict[str, list]:
    """Each reader of `fmt` -> the file's rows as it types them."""
    if fmt == "csv":
        import pandas as pd
        import pyarrow.csv as pv

        return {"pandas": pd.read_csv(path).to_dict("records"),
                "pyarrow": pv.read_csv(path).to_pylist()}
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return {"pyarrow": pq.read_table(path).to_pylist()}
    return {"records": [r.numpy() for r in tf.data.TFRecordDataset(path)]}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving_types")
    config = load_config(None, [f"runner.output_root={tmp}", "model.hash_buckets=1000",
                                "model.numeric_buckets=8"])
    schema = log_rows.RowSchema.from_config(config.to_dict()["data"], config.space)
    df = simulate.simulate(3000, seed=5)
    replays = {}  # (format, reader) -> [(logged tf.Example, canonical tf.Example)]
    for fmt in FORMATS:
        (path,) = simulate.write(df, str(tmp / fmt), fmt)
        with open(path, "rb") as stream:
            _, rows = log_rows.read_rows(path, stream, fmt, ",", schema)
            canonical = {row.number: row.payload.serialized for row in rows
                         if row.status == log_rows.USED}
        for reader, logged in typed_rows(fmt, path).items():
            replays[fmt, reader] = [
                (r if isinstance(r, bytes) else logged_example(r), canonical[i + 1])
                for i, r in enumerate(logged) if i + 1 in canonical]
    examples = [c for _, c in replays["csv", "pandas"]]
    assert len(examples) > 100

    tft_output = fit_transform(config, examples, str(tmp / "transform"))
    export_dir = str(tmp / "export")
    student, loaded = export_small_student(config, tft_output, examples, export_dir, seed=5)
    return {"config": config, "replays": replays, "student": student, "tft": tft_output,
            "dir": export_dir, "examples": examples, "tmp": tmp, "loaded": loaded}


def export_small_student(config, tft_output, examples: list[bytes], export_dir: str, seed: int,
                         weight_sd: float | None = None):
    """(student, the SavedModel loaded back): an untrained student (hidden 16, 8) on
    `tft_output`, exported as the Trainer does; with `weight_sd`, its weights drawn
    at that spread (the initial ones barely tell ids apart)."""
    from pfdx.features import transform
    from pfdx.models.model import build_model

    tf.keras.utils.set_random_seed(seed)
    model = build_model(dataclasses.replace(config.model, hidden_units=(16, 8)),
                        transform.feature_vocab(transform.regular_config(config), tft_output),
                        {})
    student = model.student_model()
    parsed = tf.io.parse_example(examples[:4], tft_output.raw_feature_spec())
    student(tft_output.transform_features_layer()(parsed))  # creates the variables
    if weight_sd is not None:
        rng = np.random.default_rng(seed)
        for weight in student.trainable_variables:
            weight.assign(rng.normal(0.0, weight_sd, weight.shape).astype(np.float32))
    export.export_student(student, tft_output, config.data.columns.regular, export_dir)
    return student, tf.saved_model.load(export_dir)


def serve(served, examples: list[bytes]) -> np.ndarray:
    fn = served["loaded"].signatures["serving_default"]
    return fn(examples=tf.constant(examples))["cvr"].numpy()


def before(served, examples: list[bytes]) -> np.ndarray:
    """What `serving_default` answered before issue 17.16: parse_example on the raw
    schema's types (FixedLenFeature [1] with "" / 0 defaults), the TFT graph, the student."""
    spec = export.serving_feature_spec(served["tft"], served["config"].data.columns.regular)
    transformed = served["tft"].transform_features_layer()(tf.io.parse_example(examples, spec))
    return served["student"].predictions(transformed)["cvr"].numpy()


@pytest.mark.parametrize("fmt,reader", [("csv", "pandas"), ("csv", "pyarrow"),
                                        ("parquet", "pyarrow"), ("tfrecord", "records")])
def test_a_row_replayed_as_logged_gets_its_canonical_prediction(served, fmt, reader):
    pairs = served["replays"][fmt, reader]
    logged, canonical = [p[0] for p in pairs], [p[1] for p in pairs]
    # The replay really holds the log's types: int64 ids / counters, not ExampleGen's.
    first = kinds(logged[0])
    assert {first[n] for n in INT64_LOGGED} == {"int64_list"}
    assert {kinds(canonical[0])[n] for n in INT64_LOGGED} == {"bytes_list", "float_list"}
    expected = serve(served, canonical)
    assert expected.std() > 0  # a model that tells rows apart, so equality means something
    np.testing.assert_array_equal(serve(served, logged), expected)
    # One request at a time, as an ad server sends them.
    for one, same in zip(logged[:3], canonical[:3]):
        np.testing.assert_array_equal(serve(served, [one]), serve(served, [same]))


def test_canonical_requests_are_served_as_before_and_as_the_student_predicts(served, tmp_path):
    examples = served["examples"][:64]
    np.testing.assert_allclose(serve(served, examples), before(served, examples), atol=1e-7)
    stripped = [export.strip_to_regular(e, served["config"].data.columns.regular) for e in examples]
    np.testing.assert_allclose(serve(served, stripped), before(served, examples), atol=1e-7)
    record = export.check_export(served["student"], served["tft"],
                                 served["config"].data.columns.regular, served["dir"], examples,
                                 str(tmp_path / "check.json"))
    assert record["max_abs_gap"] <= export.EXPORT_TOLERANCE


def _edit(serialized: bytes, **features: tf.train.Feature | None) -> bytes:
    example = tf.train.Example.FromString(serialized)
    for name, feature in features.items():
        if feature is None:
            del example.features.feature[name]
        else:
            example.features.feature[name].CopyFrom(feature)
    return example.SerializeToString()


def _text(v: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _float(v: float) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[v]))


def _int(v: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))


def test_missing_values_behave_as_before(served):
    base = served["examples"][0]
    cases = [_edit(base, weekday=None, bid=None),  # absent
             _edit(base, device=tf.train.Feature(), user_past_clicks=tf.train.Feature()),  # no list
             _edit(base, user_id=None, ad_id=None, user_past_conversions=None), b""]
    np.testing.assert_allclose(serve(served, cases), before(served, cases), atol=1e-7)
    # Empty text in a numeric is a missing value (as in a CSV cell): the default.
    np.testing.assert_array_equal(serve(served, [_edit(base, bid=_text(b""))]),
                                  serve(served, [_edit(base, bid=None)]))


def test_other_spellings_of_the_same_value(served):
    base = _edit(served["examples"][0], weekday=_text(b"3"), hour=_text(b"14"), bid=_float(2.5),
                 user_past_clicks=_float(7.0))
    same = [_edit(base, weekday=_int(3), hour=_float(14.0)),  # a gappy column read as float
            _edit(base, bid=_text(b"2.5"), user_past_clicks=_text(b" 7 ")),
            _edit(base, user_past_clicks=_int(7), bid=_text(b"25e-1"))]
    np.testing.assert_array_equal(serve(served, same), serve(served, [base] * 3))
    assert serve(served, [_edit(base, weekday=_int(4))]) != serve(served, [base])


@pytest.mark.parametrize("feature,message", [
    ({"bid": _text(b"12 EUR")}, "text that is not a number"),
    ({"bid": _text(b"nan")}, "text that is not a number"),
    ({"weekday": _float(2.5)}, "not an integer in a categorical"),
    ({"bid": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0, 2.0]))}, "one value"),
    ({"device": tf.train.Feature(bytes_list=tf.train.BytesList())}, "one value"),
])
def test_a_value_that_cannot_be_cast_is_refused_naming_the_feature(served, feature, message):
    name = next(iter(feature))
    bad = _edit(served["examples"][0], **feature)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as info:
        serve(served, [served["examples"][1], bad])
    assert name in str(info.value)


def test_bytes_that_are_not_a_tf_example_are_refused_as_before(served):
    # (ASCII only: TF puts the bytes in the message, which Python decodes as UTF-8.)
    for garbage in (b"\x0a\x05abc", b"not a proto"):
        with pytest.raises(tf.errors.InvalidArgumentError, match="Could not parse example input"):
            serve(served, [served["examples"][0], garbage])


def test_predict_raw_takes_a_logged_row_through_the_client(served):
    pairs = served["replays"]["parquet", "pyarrow"][:16]
    roles = served["config"].data.columns
    instances = client.instances_from_examples([p[0] for p in pairs], roles.regular,
                                               categorical=roles.regular_categorical)
    assert {type(instances[0][n]) for n in INT64_LOGGED} == {str, float}
    raw = served["loaded"].signatures[export.RAW_SIGNATURE]
    specs = raw.structured_input_signature[1]
    out = raw(**{k: tf.constant([i[k] for i in instances], specs[k].dtype) for k in specs})
    np.testing.assert_allclose(out["cvr"].numpy(), serve(served, [p[1] for p in pairs]), atol=1e-6)


def test_parser_on_its_own():
    columns = {"c": tf.string, "x": tf.float32}
    rows = [tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString() for f in (
        {"c": _int(-3), "x": _int(2), "other": _float(1.5)},
        {"c": _float(4.0), "x": _text(b"-1.5e1")},
        {"other": _text(b"zz")},
        {"c": _text(b"a"), "x": _float(0.25)},
    )]
    out = parsing.parse_examples(tf.constant(rows), columns)
    assert out["c"].numpy().reshape(-1).tolist() == [b"-3", b"4", b"", b"a"]
    assert out["x"].numpy().reshape(-1).tolist() == [2.0, -15.0, 0.0, 0.25]
    assert out["c"].shape == (4, 1)
    for nothing in ([], [b""], [b"", b""]):  # no examples; examples without features
        out = parsing.parse_examples(tf.constant(nothing, tf.string), columns)
        assert out["c"].numpy().tolist() == [[b""]] * len(nothing)
        assert out["x"].numpy().tolist() == [[0.0]] * len(nothing)
    with pytest.raises(ValueError, match="int64"):
        parsing.parse_examples(tf.constant(rows), {"c": tf.int64})
    # Of a repeated key the last wins, as protobuf parses a map.
    from tensorflow.core.example import feature_pb2
    first = feature_pb2.Features(feature={"c": _text(b"first")}).SerializeToString()
    second = feature_pb2.Features(feature={"c": _text(b"second")}).SerializeToString()
    features = first + second  # concatenated messages merge; the map keeps both entries
    example = b"\x0a" + bytes([len(features)]) + features
    assert parsing.parse_examples(tf.constant([example]), columns)["c"].numpy()[0, 0] == b"second"


def test_client_converts_a_logged_row_as_serving_default_does():
    row = tf.train.Example(features=tf.train.Features(feature={
        "weekday": _int(3), "hour": _float(14.0), "device": _text(b"ios"),
        "bid": _text(b" 2.5"), "user_past_clicks": _int(7), "user_past_conversions": _text(b""),
        "duration": _float(1.5)})).SerializeToString()
    regular = ("weekday", "hour", "device", "bid", "user_past_clicks", "user_past_conversions")
    (instance,) = client.instances_from_examples([row], regular,
                                                 categorical=("weekday", "hour", "device"))
    assert instance == {"weekday": "3", "hour": "14", "device": "ios", "bid": 2.5,
                        "user_past_clicks": 7.0}
    (as_logged,) = client.instances_from_examples([row], regular)
    assert as_logged["weekday"] == 3 and as_logged["bid"] == " 2.5"
    for bad in ({"bid": _text(b"nan")}, {"hour": _float(14.5)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            client.instances_from_examples([_edit(row, **bad)], regular,
                                           categorical=("weekday", "hour", "device"))


def test_the_signatures_trace_without_autograph(served, autograph_conversions):
    """The parser, the TFT layer and the student are plain graph code: autograph's
    source transform of them took most of the export (8 s of 9 on `make run`'s log)."""
    module = export.StudentServingModule(served["student"], served["tft"],
                                         served["config"].data.columns.regular)
    assert set(module.signatures()) == {"serving_default", export.RAW_SIGNATURE}
    assert autograph_conversions == []
