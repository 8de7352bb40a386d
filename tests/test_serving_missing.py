"""An absent feature is served as training treats a missing value.

The raw schema declares a feature that some training examples lack as variable-length
(SchemaGen's VarLenFeature; `pfdx compare` declares every regular feature so), and the
preprocessing_fn maps a missing value to an id of its own: a numeric to the extra
bucket `numeric_buckets`, a categorical to the hash of "". `serving_default` used to
parse every regular feature as a dense [B, 1] FixedLenFeature with a "" / 0 default,
so an absent numeric was served the quantile bucket of 0, and a TFT graph built on a
VarLenFeature could not be exported at all ("Shapes (None, 2) and (None, 1) are
incompatible": dense inputs where the graph takes a SparseTensor). Here a SchemaGen-
like raw schema declares one numeric and one categorical variable-length (every tenth
training row lacks both) and the rest fixed-length; an exported untrained student
must serve rows lacking them exactly as the training path computes them (tfxio on the
raw schema -> TFT layer -> student), which differs from the rows with 0 / "" there.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from pfdx.components import log_rows
from pfdx.config import load_config
from pfdx.serving import client, export, parsing
from pfdx.simulator import simulate
from tests.test_serving_types import (_edit, _float, _int, _text, export_small_student,
                                      fit_transform)
from tests.test_serving_types import serve as serve_types

NUMERIC, CATEGORICAL = "bid", "device"
ABSENT_EVERY = 10


def _without(serialized: bytes, *names: str) -> bytes:
    return _edit(serialized, **{n: None for n in names})


@pytest.fixture(scope="module")
def missing(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving_missing")
    config = load_config(None, [f"runner.output_root={tmp}", "model.hash_buckets=1000",
                                "model.numeric_buckets=8"])
    schema = log_rows.RowSchema.from_config(config.to_dict()["data"], config.space)
    (path,) = simulate.write(simulate.simulate(6000, seed=7), str(tmp / "log"), "tfrecord")
    with open(path, "rb") as stream:
        _, rows = log_rows.read_file(path, stream, "tfrecord", ",", schema)
        examples = []
        for _, row in rows:
            status, example = log_rows.row_to_example(schema, row)
            if status == log_rows.USED:
                examples.append(example.serialized)
    assert len(examples) > 100
    # What ExampleGen makes of rows whose two cells are empty: the features are absent.
    examples = [_without(e, NUMERIC, CATEGORICAL) if i % ABSENT_EVERY == 0 else e
                for i, e in enumerate(examples)]

    tft_output = fit_transform(config, examples, str(tmp / "transform"),
                               variable_length=(NUMERIC, CATEGORICAL))
    raw_spec = tft_output.raw_feature_spec()
    assert isinstance(raw_spec[NUMERIC], tf.io.VarLenFeature)
    assert isinstance(raw_spec[CATEGORICAL], tf.io.VarLenFeature)
    assert isinstance(raw_spec["user_past_clicks"], tf.io.FixedLenFeature)
    regular = config.data.columns.regular
    export_dir = str(tmp / "export")
    # Failed before the fix: dense [B, 1] inputs where the TFT graph takes a SparseTensor.
    student, loaded = export_small_student(config, tft_output, examples, export_dir, seed=7,
                                           weight_sd=0.3)
    return {"config": config, "tft": tft_output, "student": student, "dir": export_dir,
            "examples": examples, "regular": regular, "tmp": tmp, "loaded": loaded}


def serve(missing, examples: list[bytes]) -> np.ndarray:
    return serve_types(missing, examples).reshape(-1)


def trained_path(missing, examples: list[bytes]) -> tuple[np.ndarray, dict]:
    """The training-path computation: the Trainer's tfxio dataset on the raw schema,
    the TFT layer, the student -> (cvr, transformed regular features)."""
    from tfx_bsl.public import tfxio

    from pfdx.experiments import windows

    path = str(missing["tmp"] / f"rows-{len(os.listdir(missing['tmp']))}.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for e in examples:
            writer.write(e)
    options = tfxio.TensorFlowDatasetOptions(batch_size=len(examples), shuffle=False,
                                             num_epochs=1)
    (raw,) = windows.dataset_factory([path], options,
                                     missing["tft"].raw_metadata.schema).take(1)
    assert isinstance(raw[NUMERIC], tf.SparseTensor)  # as the Trainer reads them
    transformed = missing["tft"].transform_features_layer()(raw)
    regular = {k: transformed[k] for k in missing["regular"]}
    cvr = missing["student"].predictions(regular)["cvr"].numpy().reshape(-1)
    return cvr, {k: v.numpy().reshape(-1) for k, v in regular.items()}


def test_absent_features_are_served_as_training_computes_them(missing):
    base = missing["examples"][1:9]
    assert all(NUMERIC in tf.train.Example.FromString(e).features.feature for e in base)
    absent = [_without(e, NUMERIC, CATEGORICAL) for e in base]
    zeroed = [_edit(e, **{NUMERIC: _float(0.0), CATEGORICAL: _text(b"")}) for e in base]

    expected, transformed = trained_path(missing, absent)
    zero_expected, zero_transformed = trained_path(missing, zeroed)
    # The premise: training maps a missing numeric to its own id, not the bucket of 0
    # (a missing categorical hashes as ""; the numeric makes the difference).
    buckets = missing["config"].model.numeric_buckets
    assert (transformed[NUMERIC] == buckets).all()
    assert (zero_transformed[NUMERIC] < buckets).all()
    np.testing.assert_array_equal(transformed[CATEGORICAL], zero_transformed[CATEGORICAL])
    assert np.abs(expected - zero_expected).min() > 1e-3

    stripped = [export.strip_to_regular(e, missing["regular"]) for e in absent]
    np.testing.assert_allclose(serve(missing, stripped), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(serve(missing, zeroed), zero_expected, rtol=0, atol=1e-6)
    # One request at a time; and absent rows batched with present ones.
    np.testing.assert_allclose(serve(missing, stripped[:1]), expected[:1], rtol=0, atol=1e-6)
    mixed = [absent[0], base[1], _without(base[2], NUMERIC), _without(base[3], CATEGORICAL)]
    np.testing.assert_allclose(serve(missing, mixed), trained_path(missing, mixed)[0],
                               rtol=0, atol=1e-6)


def test_other_spellings_of_a_missing_value(missing):
    base = missing["examples"][1]
    (expected,) = serve(missing, [_without(base, NUMERIC, CATEGORICAL)])
    no_list = tf.train.Feature()
    empty = {NUMERIC: tf.train.Feature(float_list=tf.train.FloatList()),
             CATEGORICAL: tf.train.Feature(bytes_list=tf.train.BytesList())}
    cases = [_edit(base, **{NUMERIC: no_list, CATEGORICAL: no_list}),  # no list set
             _edit(base, **empty),  # an empty list: parse_example's no entry
             _edit(base, **{NUMERIC: _text(b""), CATEGORICAL: _text(b"")})]  # empty text
    np.testing.assert_allclose(serve(missing, cases), [expected] * 3, rtol=0, atol=1e-6)
    np.testing.assert_allclose(trained_path(missing, cases[:2])[0], [expected] * 2,
                               rtol=0, atol=1e-6)
    # A fixed-length feature still refuses an empty list, and several values are refused.
    for bad, name in ((_edit(base, user_past_clicks=tf.train.Feature(
            float_list=tf.train.FloatList())), "user_past_clicks"),
            (_edit(base, **{NUMERIC: tf.train.Feature(
                float_list=tf.train.FloatList(value=[1.0, 2.0]))}), NUMERIC)):
        with pytest.raises(tf.errors.InvalidArgumentError, match="one value") as info:
            serve(missing, [bad])
        assert name in str(info.value)


def test_served_as_trained_over_logged_rows_and_the_export_check(missing, tmp_path):
    examples = missing["examples"][:64]  # rows 0, 10, ... lack both features
    stripped = [export.strip_to_regular(e, missing["regular"]) for e in examples]
    np.testing.assert_allclose(serve(missing, stripped), trained_path(missing, examples)[0],
                               rtol=0, atol=1e-6)
    record = export.check_export(missing["student"], missing["tft"], missing["regular"],
                                 missing["dir"], examples, str(tmp_path / "check.json"))
    assert record["max_abs_gap"] <= export.EXPORT_TOLERANCE
    # A logged row in the log's types (int64 ids / counters) is served as its canonical one.
    logged = [_edit(e, weekday=_int(int(tf.train.Example.FromString(e).features
                                        .feature["weekday"].bytes_list.value[0])))
              for e in stripped[:4]]
    np.testing.assert_array_equal(serve(missing, logged), serve(missing, stripped[:4]))


def test_predict_raw_takes_nan_as_a_missing_numeric(missing):
    base = missing["examples"][1:5]
    absent = [_without(e, NUMERIC, CATEGORICAL) for e in base]
    raw = missing["loaded"].signatures[export.RAW_SIGNATURE]
    specs = raw.structured_input_signature[1]
    roles = missing["config"].data.columns
    instances = client.instances_from_examples(base, roles.regular,
                                               categorical=roles.regular_categorical)
    for i in instances:  # how a JSON client sends a missing value: NaN, ""
        i[NUMERIC], i[CATEGORICAL] = math.nan, ""
    out = raw(**{k: tf.constant([i[k] for i in instances], specs[k].dtype) for k in specs})
    np.testing.assert_allclose(out["cvr"].numpy().reshape(-1), serve(missing, absent),
                               rtol=0, atol=1e-6)
    present = client.instances_from_examples(base, roles.regular,
                                             categorical=roles.regular_categorical)
    out = raw(**{k: tf.constant([i[k] for i in present], specs[k].dtype) for k in specs})
    np.testing.assert_allclose(out["cvr"].numpy().reshape(-1), serve(missing, base),
                               rtol=0, atol=1e-6)


def test_parser_gives_what_parse_example_gives_for_each_spec():
    specs = {"c": tf.io.VarLenFeature(tf.string), "x": tf.io.VarLenFeature(tf.float32),
             "f": tf.io.FixedLenFeature([], tf.float32, default_value=-1.0),
             "g": tf.io.FixedLenFeature([1], tf.string)}
    rows = [tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString() for f in (
        {"c": _text(b"a"), "x": _float(2.0), "f": _float(3.0), "g": _text(b"u")},
        {"c": tf.train.Feature(), "x": tf.train.Feature(float_list=tf.train.FloatList())},
        {"other": _text(b"zz")},
        {"c": _int(4), "x": _text(b" 1.5"), "f": _int(2), "g": _float(7.0)},
    )]
    out = parsing.parse_examples(tf.constant(rows), specs)
    assert isinstance(out["c"], tf.SparseTensor) and isinstance(out["x"], tf.SparseTensor)
    for name in ("c", "x"):
        assert out[name].indices.numpy().tolist() == [[0, 0], [3, 0]]
        assert out[name].dense_shape.numpy().tolist() == [4, 1]
    assert out["c"].values.numpy().tolist() == [b"a", b"4"]
    assert out["x"].values.numpy().tolist() == [2.0, 1.5]
    assert out["f"].shape == (4,) and out["f"].numpy().tolist() == [3.0, -1.0, -1.0, 2.0]
    assert out["g"].numpy().tolist() == [[b"u"], [b""], [b""], [b"7"]]
    # The canonically typed rows, as parse_example parses them (a fixed-length feature
    # without a default is "" / 0 where parse_example would refuse the row).
    out = parsing.parse_examples(tf.constant(rows[:3]), specs)
    canonical = tf.io.parse_example(tf.constant(rows[:3]), dict(
        specs, g=tf.io.FixedLenFeature([1], tf.string, default_value="")))
    for name in specs:
        for got, want in zip(tf.nest.flatten(out[name], expand_composites=True),
                             tf.nest.flatten(canonical[name], expand_composites=True)):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.numpy().tolist() == want.numpy().tolist(), name
    # No value in the batch: an empty SparseTensor [B, 0], as parse_example gives.
    out = parsing.parse_examples(tf.constant(rows[1:3]), specs)
    none = tf.io.parse_example(tf.constant(rows[1:3]), {"x": specs["x"]})["x"]
    assert out["x"].dense_shape.numpy().tolist() == none.dense_shape.numpy().tolist() == [2, 0]
    assert out["x"].indices.shape == (0, 2)
    # Of a repeated key the last wins, an empty list included (a missing value).
    from tensorflow.core.example import feature_pb2
    features = b"".join(feature_pb2.Features(feature={"x": f}).SerializeToString() for f in (
        _float(1.0), tf.train.Feature(float_list=tf.train.FloatList())))
    example = b"\x0a" + bytes([len(features)]) + features
    out = parsing.parse_examples(tf.constant([example]), {"x": specs["x"]})["x"]
    assert out.indices.shape == (0, 2)
    for bad in (tf.io.FixedLenFeature([2], tf.float32), tf.io.VarLenFeature(tf.int64),
                tf.io.RaggedFeature(tf.float32)):
        with pytest.raises(ValueError, match="'x'"):
            parsing.parse_examples(tf.constant(rows), {"x": bad})
