"""A tf.Example parser for serving that takes each feature in whichever type it was logged.

Why: ExampleGen (`components/log_rows.py`) stores every regular categorical as text
(`bytes_list`) and every regular numeric as `float_list` (the data contract,
`features/contract.py`: `SERVING_KINDS`), so the Transform's raw
schema and `tf.io.parse_example` insist on those types. An ad server that builds its
tf.Example from a logged row as the log holds it sends other types: a KuaiRand-like
`weekday` or `hour` is int64 in Parquet and TFRecord and is read as int64 from CSV by
pandas / pyarrow.csv; `user_past_clicks` likewise; a categorical column with gaps is
read as float64 by pandas. `parse_example` refuses all of these ("Data types don't
match"). This parser decodes the serialized tf.Example itself and casts each expected
feature to the type the Transform graph was built for, with the same rules as
ExampleGen:

  to a categorical (string):  bytes as is; int64 -> its decimal text (3 -> "3");
      a float with an integral value -> that integer's text (3.0 -> "3", as
      `log_rows._as_bytes` stores a typed reader's 3.0); any other float is refused
      (its text form is ambiguous: send the text the log holds).
  to a numeric (float32):  float as is; int64 -> float; bytes -> the decimal number
      it spells ("12", "-1.5e3", surrounding blanks allowed), read as a double then
      rounded to float32 as ExampleGen's float() does; empty text counts as a
      missing value; any other text is refused with an error naming the feature.

One limit: ExampleGen keeps a CSV cell's text as it is, so a categorical column that
a CSV writer spelled "12.0" trained as "12.0", while a float 12.0 is served as "12"
(the Parquet / TFRecord spelling). Send such a column as text.

Each column comes out in the tensor kind of its raw-schema feature spec, so that the
TFT graph sees at serving what it sees in training (`tf.io.parse_example` / tfxio on
the raw schema) and handles a missing value the same way:
  `VarLenFeature` (SchemaGen's feature that may be absent; every regular feature in
      `pfdx compare`'s raw schema): a SparseTensor [B, 0 or 1] as parse_example
      gives; an absent feature, one with no list set, one with an empty list, or
      empty text in a numeric has no entry, i.e. it is a missing value, which the
      preprocessing_fn maps to its own id (a numeric's extra bucket);
  `FixedLenFeature` of shape [1] or [] (a feature present in every training example),
      or a bare dtype (= FixedLenFeature([1])): a dense tensor of that shape; an absent
      feature, one with no list set, or empty text in a numeric is the spec's default
      value, or "" / 0 when it has none (as before: training had no such row).
A feature with several values is refused, and so is one with zero values in a
FixedLenFeature, and so are bytes that are not a tf.Example (parse_example's
InvalidArgumentError, as before). Features the model does not take (privileged
signals, ids, labels) are ignored whatever their type. Every refusal is an
InvalidArgumentError naming the feature and the value.

How: `tf.io.decode_proto` walks the message - `tensorflow.Example` -> `tensorflow.Features`
(its `feature` map is a repeated `tensorflow.Features.FeatureEntry` of key / value) ->
`tensorflow.Feature` (`bytes_list` | `float_list` | `int64_list`) -> the list's values -
vectorised over the batch (a fixed number of ops whatever the batch size or the
number of features). DecodeProtoV2 is a core TensorFlow op (`tf.io.decode_proto`,
kernel in tensorflow/core/kernels) and the tf.Example descriptors are compiled into
every TensorFlow binary (`descriptor_source="local://"`), so TF Serving's
`tensorflow_model_server` runs the signature with no custom op. Of two repeated keys
the last wins, as in protobuf's own parsing of a map.

Cost (serving_default end to end, parse + TFT graph + student, the simulated log's 14
regular features, 2 busy shared cores): +0.16 ms per request at batch 1 (p50 0.35 ->
0.51 ms) and +13 us per example at batch 512 (3.3 -> 9.9 ms per batch): decode_proto
decodes five nested message levels where the fast Example parser makes one pass.
Conversions run only on the entries that need one, so a canonically typed request
pays for the decoding alone. Feeding each column in its raw-schema kind (a
SparseTensor for a VarLenFeature) costs within the noise of that measurement.

Why here and not at ExampleGen: the other route - keep each column's logged type in
the raw schema and cast inside the TFT graph - needs ExampleGen, the schema, the
preprocessing_fn and the Trainer's parsing to agree on per-column types that differ
between log formats (CSV has no types; one Parquet file may say int64 where another
says double), and it would still refuse a request typed differently from the
training log. Casting at the serving boundary keeps one canonical raw schema for
training and accepts any of the three tf.Example types from any client.
"""
from __future__ import annotations

from typing import Mapping, Union

import tensorflow as tf

from pfdx.features import contract

# A decimal number as text: what float() reads from a CSV cell, less inf / nan (which
# ExampleGen quarantines) and Python's digit separators.
NUMBER = r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*"
SUPPORTED = tuple(tf.as_dtype(kind.dtype) for kind in contract.SERVING_KINDS)
_INT64_BOUND = 2.0 ** 63
_NO_SUCH_FEATURE = "\x00pfdx: a key no tf.Example holds"

Spec = Union[tf.dtypes.DType, tf.io.FixedLenFeature, tf.io.VarLenFeature]
Parsed = Union[tf.Tensor, tf.SparseTensor]


def column_spec(name: str, spec: Spec) -> tf.io.FixedLenFeature | tf.io.VarLenFeature:
    """`spec` as a parsing spec this parser produces (a dtype = FixedLenFeature([1]) with
    the "" / 0 default); ValueError for a dtype or a kind it does not produce."""
    if isinstance(spec, tf.dtypes.DType):
        spec = tf.io.FixedLenFeature([1], spec)
    if not isinstance(spec, (tf.io.FixedLenFeature, tf.io.VarLenFeature)):
        raise ValueError(f"feature {name!r}: serving parses FixedLenFeature ([] or [1]) and "
                         f"VarLenFeature specs, not {spec!r}")
    if spec.dtype not in SUPPORTED:
        raise ValueError(f"feature {name!r}: serving parses {[d.name for d in SUPPORTED]}, "
                         f"not {spec.dtype.name}")
    if isinstance(spec, tf.io.FixedLenFeature):
        if list(spec.shape) not in ([], [1]):
            raise ValueError(f"feature {name!r}: serving parses one value per feature, not a "
                             f"FixedLenFeature of shape {list(spec.shape)}")
        default = spec.default_value
        if default is None:
            default = "" if spec.dtype == tf.string else 0.0
        elif isinstance(default, (list, tuple)):
            (default,) = default
        spec = tf.io.FixedLenFeature(spec.shape, spec.dtype, default)
    return spec


def to_spec(values: tf.Tensor, present: tf.Tensor, spec) -> Parsed:
    """[B] `values` (where `present`) in the tensor kind of `spec` (`column_spec`'s):
    what parse_example gives for that spec when the rows hold those values."""
    if isinstance(spec, tf.io.VarLenFeature):
        rows = tf.where(present)  # [n, 1]
        return tf.SparseTensor(
            tf.concat([rows, tf.zeros_like(rows)], 1), tf.gather_nd(values, rows),
            tf.stack([tf.shape(present, out_type=tf.int64)[0],
                      tf.cast(tf.reduce_any(present), tf.int64)]))
    dense = tf.where(present, values, tf.constant(spec.default_value, values.dtype))
    return tf.reshape(dense, [-1] + list(spec.shape))


def _decode(serialized: tf.Tensor, message: str, fields: list[str], types: list[tf.DType]):
    """decode_proto of [N] messages -> (sizes [N, F], [values [N, W]] per field)."""
    return tf.io.decode_proto(serialized, message, fields, types, descriptor_source="local://")


def _pad_example(first_column: str) -> bytes:
    """An example appended to every batch, dropped at the end: one entry of each list
    kind under a known key, so that every decode_proto below has a message to decode
    (it refuses an empty batch) and every field it returns is at least one wide."""
    from tensorflow.core.example import feature_pb2

    kinds = (feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[b""])),
             feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[0.0])),
             feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[0])))
    # A map holds one value per key; concatenated Features messages merge entry by entry.
    features = b"".join(feature_pb2.Features(feature={first_column: kind}).SerializeToString()
                        for kind in kinds)
    return b"\x0a" + _varint(len(features)) + features  # Example.features, field 1


def _varint(n: int) -> bytes:
    """A length as protobuf's wire format writes it."""
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _convert(mask: tf.Tensor, base: tf.Tensor, source: tf.Tensor, convert) -> tf.Tensor:
    """`base` with `convert(source)` where `mask`, converting those entries only."""
    at = tf.where(mask)
    return tf.tensor_scatter_nd_update(base, at, convert(tf.gather_nd(source, at)))


def _check(bad: tf.Tensor, message: str, keys: tf.Tensor, values: tf.Tensor) -> tf.Operation:
    return tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [f"serving_default: {message}; feature(s):", tf.boolean_mask(keys, bad),
         "value(s):", tf.boolean_mask(values, bad)], summarize=8)


def parse_examples(serialized: tf.Tensor, columns: Mapping[str, Spec]) -> dict[str, Parsed]:
    """Serialized tf.Examples [B] -> {column: its values} for each of `columns`, whatever
    type each feature was sent in. A column's spec is a FixedLenFeature ([] or [1]) or a
    VarLenFeature of tf.string or tf.float32 (the raw schema's), or a bare dtype
    (FixedLenFeature([1])); it comes out as `tf.io.parse_example` gives that spec."""
    specs = {name: column_spec(name, spec) for name, spec in columns.items()}
    columns = {name: spec.dtype for name, spec in specs.items()}
    names = list(columns)
    n_columns = len(names)
    serialized = tf.reshape(serialized, [-1])
    # Bytes that are not a tf.Example fail as before, with parse_example's
    # InvalidArgumentError ("Could not parse example input"), before any decoding.
    # A data dependency (the rows, counted by that parse), not a control one: Grappler
    # prunes a stateless op whose outputs only feed control edges.
    checked = tf.io.parse_example(serialized, {_NO_SUCH_FEATURE: tf.io.VarLenFeature(tf.int64)})
    batch = tf.cast(checked[_NO_SUCH_FEATURE].dense_shape[0], tf.int32)
    serialized = tf.concat([serialized[:batch], [_pad_example(names[0])]], 0)

    # Example.features -> its FeatureEntry messages, flattened to [E] with their row.
    _, (features,) = _decode(serialized, "tensorflow.Example", ["features"], [tf.string])
    counts, (entries,) = _decode(features[:, 0], "tensorflow.Features", ["feature"], [tf.string])
    in_row = tf.sequence_mask(counts[:, 0], tf.shape(entries)[1])
    row = tf.cast(tf.where(in_row)[:, 0], tf.int32)
    entries = tf.boolean_mask(entries, in_row)
    _, (keys, values) = _decode(entries, "tensorflow.Features.FeatureEntry", ["key", "value"],
                                [tf.string, tf.string])
    keys, values = keys[:, 0], values[:, 0]

    # Which expected column each entry is (a fingerprint narrows it down, the text
    # confirms); entries of other features are dropped here.
    fingerprints = tf.strings.to_hash_bucket_fast(names, 2 ** 62)
    column = tf.argmax(tf.cast(tf.equal(tf.strings.to_hash_bucket_fast(keys, 2 ** 62)[:, None],
                                        fingerprints[None, :]), tf.int32),
                       axis=1, output_type=tf.int32)
    known = tf.equal(keys, tf.gather(tf.constant(names), column))
    keys, values, row, column = (tf.boolean_mask(t, known) for t in (keys, values, row, column))

    kinds, lists = _decode(values, "tensorflow.Feature", ["bytes_list", "float_list", "int64_list"],
                           [tf.string] * 3)
    n_text, (texts,) = _decode(lists[0][:, 0], "tensorflow.BytesList", ["value"], [tf.string])
    n_float, (floats,) = _decode(lists[1][:, 0], "tensorflow.FloatList", ["value"], [tf.float32])
    n_int, (ints,) = _decode(lists[2][:, 0], "tensorflow.Int64List", ["value"], [tf.int64])
    text, number, integer = texts[:, 0], floats[:, 0], ints[:, 0]
    is_text, is_float, is_int = n_text[:, 0] > 0, n_float[:, 0] > 0, n_int[:, 0] > 0
    n_values = n_text[:, 0] + n_float[:, 0] + n_int[:, 0]
    # A Feature with no list set is absent (parse_example's default applies); an empty
    # list in a VarLenFeature is a missing value too (parse_example gives no entry).
    wanted = tf.reduce_any(kinds > 0, axis=1) & (row < batch)
    empty = n_values == 0
    empty &= tf.gather(tf.constant([isinstance(specs[n], tf.io.VarLenFeature) for n in names]),
                       column)
    to_text = tf.gather(tf.constant([columns[n] == tf.string for n in names]), column) & wanted
    to_number = wanted & ~to_text

    # Conversions run on the entries that need them only: none for a canonical request.
    as_text = _convert(to_text & is_int, text, integer, tf.strings.as_string)
    as_text = _convert(to_text & is_float, as_text, number,
                       lambda x: tf.strings.as_string(tf.cast(x, tf.int64)))
    as_number = tf.where(is_float, number, tf.cast(integer, tf.float32))
    from_text = to_number & is_text & (tf.strings.length(text) > 0)
    spelled = _convert(from_text, tf.ones_like(from_text), text,
                       lambda x: tf.strings.regex_full_match(x, NUMBER))
    as_number = _convert(from_text & spelled, as_number, text,
                         lambda x: tf.cast(tf.strings.to_number(x, tf.float64), tf.float32))
    # Empty text in a numeric is a missing value: the default, or no entry.
    valued = ~(to_number & is_text & (tf.strings.length(text) == 0)) & ~empty

    checks = [
        _check(wanted & ~empty & (n_values != 1),
               "one value per feature is expected, got this many",
               keys, n_values),
        _check(from_text & ~spelled, "text that is not a number in a numeric feature", keys, text),
        _check(to_text & is_float & ((tf.math.floor(number) != number)
                                     | (tf.abs(number) >= _INT64_BOUND)),
               "a float that is not an integer in a categorical feature (send its text)",
               keys, number),
    ]

    # The last usable entry of each (row, column) slot; index n_entries = absent.
    n_entries = tf.shape(keys)[0]
    slot = row * n_columns + column
    index = tf.where(wanted, tf.range(n_entries), -1)
    last = tf.math.unsorted_segment_max(index, slot, (batch + 1) * n_columns)  # + the pad row
    pick = tf.reshape(tf.where(last >= 0, last, n_entries), [batch + 1, n_columns])[:batch]
    with tf.control_dependencies(checks):
        text_out = tf.gather(tf.concat([as_text, [""]], 0), pick)
        number_out = tf.gather(tf.concat([as_number, [0.0]], 0), pick)
        present = tf.gather(tf.concat([valued, [False]], 0), pick)
    return {name: to_spec((text_out if columns[name] == tf.string else number_out)[:, k],
                          present[:, k], specs[name])
            for k, name in enumerate(names)}
