"""Reading raw event-log files row by row, and turning a row into a tf.Example.

Every row ends in exactly one bucket, so counts reconcile
(read = used + unclicked + quarantined):
- ``used``: a clicked row that became a tf.Example;
- ``unclicked``: an impression without a click: out of CVR's click space, or in
  impression space (`RowSchema.impressions`, the TAML / UKD strategies) a
  tf.Example too, with the click column (0/1) kept as a label;
- ``quarantined``: a row that cannot be trusted, written with its file, row
  number and reason to the dead-letter output: a label/click/flag that is not
  0/1, a number that does not parse or is NaN/inf, a negative value in a
  `data.non_negative` column, a conversion without a click, or a post-click
  (privileged) signal on an unclicked row (a broken click join), a value that
  is not a scalar (a list), not UTF-8 text, or out of its stored type's range.
A file that cannot be read as the configured format at all (missing required
column, not parseable) fails the run with the file named.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
import operator
import re
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import numpy as np
import tensorflow as tf
from google.protobuf import message

from pfdx.features import contract

USED, UNCLICKED, QUARANTINED = "used", "unclicked", "quarantined"
STATUSES = (USED, UNCLICKED, QUARANTINED)


class Example(NamedTuple):
    """A row that became a tf.Example: its time (None without a time column), its
    label (0/1) and the serialized tf.Example."""

    time: float | None
    label: int
    serialized: bytes


class LogFormatError(ValueError):
    """A whole file is unusable; the message names the file."""


@dataclasses.dataclass(frozen=True)
class RowSchema:
    """What the converter needs from the data contract (`features/contract.py`) and
    the config's reading rules (plain data, picklable)."""

    label: str
    click: str | None
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]  # regular numeric + privileged candidates
    time: str | None
    truth: str | None
    ignore: tuple[str, ...]
    privileged: tuple[str, ...]
    flags: tuple[str, ...]  # privileged discrete: 0/1 only
    non_negative: tuple[str, ...]
    # The contract's stored kind of each feature an example may hold.
    kinds: Mapping[str, contract.Kind]
    # Impression space: unclicked rows become examples too, and every example
    # carries its click label.
    impressions: bool = False

    @classmethod
    def from_config(cls, data: Mapping[str, Any], space: str = contract.CLICK) -> "RowSchema":
        """`data`: the config's `data` section as a dict; `space`: "click" or
        "impression" (`PipelineConfig.space`)."""
        data_contract = contract.DataContract.from_data(data, space)
        roles = data_contract.roles
        non_negative = data["non_negative"]
        if non_negative is None:
            non_negative = roles.regular_numeric + roles.privileged_continuous
        return cls(label=roles.label, click=roles.click,
                   categorical=roles.regular_categorical,
                   numeric=roles.regular_numeric + roles.privileged,
                   time=data_contract.time, truth=roles.truth, ignore=roles.ignore,
                   privileged=roles.privileged, flags=roles.privileged_discrete,
                   non_negative=tuple(non_negative), impressions=space == contract.IMPRESSION,
                   kinds={name: f.kind for name, f in data_contract.example_features.items()})

    # Cached: the converter reads both for every cell of every row.
    @functools.cached_property
    def required(self) -> tuple[str, ...]:
        optional = (self.click, self.time, self.truth)
        return tuple(c for c in (self.label, *optional, *self.categorical, *self.numeric)
                     if c is not None)

    @property
    def drops_unclicked(self) -> bool:
        """Click space with a click column: an unclicked row becomes no example."""
        return not self.impressions and self.click is not None

    @functools.cached_property
    def known(self) -> frozenset[str]:
        return frozenset(self.required) | frozenset(self.ignore)

    def check_header(self, path: str, header: list[str]) -> list[str]:
        """Fails on missing required columns; returns unknown extra columns."""
        missing = [c for c in self.required if c not in header]
        if missing:
            raise LogFormatError(f"{path}: missing required column(s) {missing}; "
                                 f"the file has {header}")
        dupes = sorted({c for c in header if header.count(c) > 1})
        if dupes:
            raise LogFormatError(f"{path}: duplicated column(s) {dupes}")
        return [c for c in header if c not in self.known]


def _is_missing(value: Any) -> bool:
    """An empty cell, a null or an absent feature. (A NaN is not: in a numeric column
    it is a bad value; only a categorical column reads pandas' NaN as missing.)"""
    return value is None or value == ""


# Text cells are decoded with errors="surrogateescape": an undecodable byte becomes a
# lone surrogate, so the row is quarantined under its own number instead of the
# decoder losing a whole buffer of rows.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# What pandas, Spark and spreadsheets write for booleans; read as 1 / 0 in 0/1 columns.
_BOOLEANS = {"true": 1.0, "True": 1.0, "TRUE": 1.0, "false": 0.0, "False": 0.0, "FALSE": 0.0}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_LIMIT = math.nextafter(2.0 ** 63, 0.0)  # the largest float an int64 holds


def _check_cell(name: str, value: Any) -> None:
    """A cell must be one value (a Parquet list or a multi-valued TFRecord feature
    is not) and, as text, valid UTF-8."""
    if isinstance(value, (list, tuple, dict)):
        raise ValueError(f"field {name!r}: {value!r} is not a scalar")
    if isinstance(value, str) and not value.isascii() and _UNDECODABLE.search(value):
        raw = value.encode("utf-8", "surrogateescape")
        raise ValueError(f"field {name!r}: {raw!r} is not UTF-8 text")


def _check_cells(names: tuple[str, ...], row: Mapping[str, Any]) -> None:
    """`_check_cell` of each of `names`. A row of ASCII text alone (most CSV rows)
    passes as a whole: one C-level join instead of a call per cell, a third of
    reading a 1M-row log."""
    values = list(map(row.get, names))
    try:
        if "".join(values).isascii():
            return
    except TypeError:
        pass  # not all text (Parquet, TFRecord, a missing column): cell by cell
    for name, value in zip(names, values):
        _check_cell(name, value)


def _parse_float(name: str, value: Any, booleans: bool = False) -> float:
    if booleans and isinstance(value, str) and value in _BOOLEANS:
        return _BOOLEANS[value]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"field {name!r}: {value!r} is not a number") from None


def _as_float(name: str, value: Any, limit: float = _FLOAT32_MAX) -> float:
    """A finite number that its stored type (float32 features, int64 time) holds."""
    x = _parse_float(name, value)
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"field {name!r}: {value!r} is not finite")
    if abs(x) > limit:
        raise ValueError(f"field {name!r}: {value!r} is out of range of its stored type")
    return x


def _as_flag(name: str, value: Any) -> int:
    x = _parse_float(name, value, booleans=True)
    if x not in (0.0, 1.0):
        raise ValueError(f"field {name!r}: {value!r} is not 0/1")
    return int(x)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a numeric id read by a typed reader: 12.0 -> b"12"
    return str(value).encode("utf-8")


def _check_unclicked(schema: RowSchema, row: Mapping[str, Any]) -> None:
    """Post-click signals exist only after a click: an unclicked row may hold none
    (empty, 0/false or NaN); anything else means the click column or the join is wrong."""
    values = list(map(row.get, schema.privileged))
    if values.count(None) + values.count("") == len(values):
        return  # the usual unclicked row: no signal at all
    for name, v in zip(schema.privileged, values):
        if _is_missing(v):
            continue
        x = _parse_float(name, v, booleans=name in schema.flags)
        if x != 0.0 and not math.isnan(x):
            raise ValueError(f"field {name!r}: post-click signal {v!r} on an unclicked row")


def _numeric(schema: RowSchema, name: str, value: Any) -> float:
    if name in schema.flags:
        return float(_as_flag(name, value))
    x = _as_float(name, value)
    if x < 0.0 and name in schema.non_negative:
        raise ValueError(f"field {name!r}: {value!r} is negative (data.non_negative)")
    return x


_FIELD_REASON = re.compile(r"field '([^']*)'")


def reason_key(reason: str) -> str:
    """What a quarantine reason is about, to count by: the field it names, else the
    row-level problem (e.g. 'wrong column count')."""
    field = _FIELD_REASON.match(reason)
    return field.group(1) if field else reason.split(":", 1)[0]


def row_to_example(schema: RowSchema, row: Mapping[str, Any]) -> tuple[str, Any]:
    """(USED, Example) | (UNCLICKED, None) | (QUARANTINED, reason); in impression
    space an unclicked row is (UNCLICKED, Example). Each value is stored in its
    contract kind (`RowSchema.kinds`)."""
    try:
        _check_cells(schema.required, row)
        label = _as_flag(schema.label, row.get(schema.label))
        clicked = schema.click is None or _as_flag(schema.click, row.get(schema.click)) == 1
        if not clicked:
            if label == 1:
                raise ValueError(f"field {schema.label!r}: conversion without a click")
            _check_unclicked(schema, row)
            if not schema.impressions:
                return UNCLICKED, None
        values: dict[str, Any] = {schema.label: label}
        if schema.impressions and schema.click is not None:
            values[schema.click] = int(clicked)
        time = None
        if schema.time is not None:
            time = _as_float(schema.time, row.get(schema.time), limit=_INT64_LIMIT)
            values[schema.time] = int(time)
        for name in schema.categorical:
            v = row.get(name)
            if not _is_missing(v) and not (isinstance(v, float) and math.isnan(v)):
                values[name] = _as_bytes(v)
        for name in schema.numeric + ((schema.truth,) if schema.truth else ()):
            v = row.get(name)
            # An unclicked row has no post-click signals (checked above): absent.
            if not _is_missing(v) and (clicked or name not in schema.privileged):
                values[name] = _numeric(schema, name, v)
    except ValueError as e:
        return QUARANTINED, str(e)
    example = tf.train.Example()
    for name, value in values.items():
        getattr(example.features.feature[name], schema.kinds[name].list).value.append(value)
    return USED if clicked else UNCLICKED, Example(
        time, label, example.SerializeToString(deterministic=True))


# Readers. `read_file` checks a file's header (CSV / Parquet) at once and returns
# the extra columns no role names and the rows: (row_number, {column: value}), or
# (row_number, reason) for a row that cannot be read, or (row_number, UNCLICKED) for
# a row bucketed from its cells alone (`_plain_unclicked`); `read_rows` adds each
# row's bucket. Row numbers are 1-based data rows (CSV line = row + 1 for the header;
# TFRecord: the record index + 1).

Rows = Iterator[tuple[int, "dict[str, Any] | str"]]


def _plain_unclicked(schema: RowSchema, header: list[str]) -> Callable[[list[str]], bool] | None:
    """In click space, a test of a CSV row's cells that holds only for rows that
    `row_to_example` buckets UNCLICKED: click and label "0", every post-click signal
    empty, all text ASCII. Such rows, most of an ad log, skip the dict and the checks
    of each cell: 250k rows of the simulated log read in 1.2 s instead of 3.2 s. None
    in impression space or without a click column, where every row is read in full."""
    if not schema.drops_unclicked:
        return None
    # label and click last: always two or more columns, so itemgetter gives a tuple.
    cells = operator.itemgetter(*(header.index(c) for c in (*schema.privileged, schema.label,
                                                             schema.click)))
    plain = ("",) * len(schema.privileged) + ("0", "0")
    return lambda row: cells(row) == plain and "".join(row).isascii()


def is_side_file(path: str) -> bool:
    """What Spark and Hadoop write beside their data (_SUCCESS, _metadata,
    .part-0.crc) and hidden files: never a log file."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith(("_", ".")) or name.endswith(".crc")


def read_file(path: str, stream: io.BufferedIOBase, fmt: str, separator: str,
              schema: RowSchema) -> tuple[list[str], Rows]:
    """(unknown header columns, rows) of one file in `fmt` (csv | parquet | tfrecord)."""
    if fmt == "csv":
        return _read_csv(path, stream, separator, schema)
    if fmt == "parquet":
        return _read_parquet(path, stream, schema)
    return [], _read_tfrecord(path)


class Row(NamedTuple):
    """One row of a file and its bucket: `payload` is the Example (USED, and UNCLICKED
    in impression space), None (UNCLICKED in click space) or the reason (QUARANTINED);
    `record` is the row as read ({column: value}; None when it could not be read, or
    for a row bucketed UNCLICKED from its cells alone)."""

    number: int
    status: str
    payload: "Example | str | None"
    record: "dict[str, Any] | None"


def read_rows(path: str, stream: io.BufferedIOBase, fmt: str, separator: str,
              schema: RowSchema) -> tuple[set[str], Iterator[Row]]:
    """(unknown columns, rows) of one file, each row converted (`row_to_example`)
    into its bucket: what ExampleGen and `pfdx compare` read. The unknown columns are
    those no role names: the header's at once, a TFRecord's (no header) as its
    records show them, so the set is complete once the rows are read."""
    header_unknown, records = read_file(path, stream, fmt, separator, schema)
    unknown = set(header_unknown)
    known = schema.known

    def rows() -> Iterator[Row]:
        for number, record in records:
            if record is UNCLICKED:
                yield Row(number, UNCLICKED, None, None)
                continue
            if isinstance(record, str):
                yield Row(number, QUARANTINED, record, None)
                continue
            if not known.issuperset(record):  # C-level; the slow path only for new columns
                unknown.update(c for c in record if c not in known)
            yield Row(number, *row_to_example(schema, record), record)

    return unknown, rows()


def _read_csv(path: str, stream: io.BufferedIOBase, separator: str,
              schema: RowSchema) -> tuple[list[str], Rows]:
    # utf-8-sig: a byte-order mark (Excel, PowerShell) is not part of the first column.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text, delimiter=separator)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return [], iter(())  # an empty file holds no rows; the caller counts the file
    except csv.Error as e:
        raise LogFormatError(f"{path}: cannot read the header: {e}") from None
    if any(_UNDECODABLE.search(h) for h in header):
        raise LogFormatError(f"{path}: the header is not UTF-8 text")
    unknown = schema.check_header(path, header)
    return unknown, _csv_rows(reader, header, _plain_unclicked(schema, header))


def _csv_rows(reader: Iterator[list[str]], header: list[str],
              unclicked: Callable[[list[str]], bool] | None) -> Rows:
    width = len(header)
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            row += 1
            yield row, f"unreadable CSV row: {e}"
            continue
        row += 1
        if not cells:
            continue  # a blank line is not a row
        if len(cells) != width:
            yield row, f"wrong column count: {len(cells)} cells, header has {width}"
            continue
        if unclicked is not None and unclicked(cells):
            yield row, UNCLICKED
            continue
        yield row, dict(zip(header, cells))


def _read_parquet(path: str, stream: io.BufferedIOBase,
                  schema: RowSchema) -> tuple[list[str], Rows]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not stream.read(1):
        return [], iter(())  # a 0-byte file is an empty file, counted by the caller
    stream.seek(0)
    try:
        pfile = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError) as e:
        raise LogFormatError(f"{path}: not a readable Parquet file: {e}") from None

    unknown = schema.check_header(path, pfile.schema_arrow.names)
    unclicked = _plain_unclicked_columns(schema, pfile.schema_arrow)

    def rows() -> Rows:
        row = 0
        try:
            for batch in pfile.iter_batches(batch_size=8192):
                plain = unclicked(batch) if unclicked is not None else None
                if plain is None or not plain.any():
                    for record in batch.to_pylist():
                        row += 1
                        yield row, record
                    continue
                records = iter(batch.filter(pa.array(~plain)).to_pylist())
                for is_plain in plain.tolist():
                    row += 1
                    yield row, UNCLICKED if is_plain else next(records)
        except (pa.ArrowException, OSError) as e:
            raise LogFormatError(f"{path}: unreadable Parquet data after row {row}: {e}") from None

    return unknown, rows()


def _plain_unclicked_columns(schema: RowSchema, arrow_schema) -> Callable[[Any], np.ndarray] | None:
    """`_plain_unclicked` for Parquet, on a batch's columns: per row, whether click and
    label are 0 (false, "0") and every post-click signal null, NaN, 0 (false, "").
    Such a row skips the conversion to a dict, which cost most of reading a Parquet
    log (250k rows of the simulated log: 1.2 s instead of 7.3 s). None in impression
    space, without a click column, or when a column the test or `row_to_example`'s
    checks read is not a plain number, boolean or string (a list is quarantined row by
    row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def text(t) -> bool:
        return pa.types.is_string(t) or pa.types.is_large_string(t)

    def plain_type(t) -> bool:
        return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                or text(t))

    types = dict(zip(arrow_schema.names, arrow_schema.types))
    if not (schema.drops_unclicked and all(plain_type(types[c]) for c in schema.required)):
        return None

    def equals(column, number: float, text_value: str):
        t = column.type
        if pa.types.is_boolean(t):
            return pc.equal(column, bool(number))
        return pc.equal(column, text_value if text(t) else number)

    def no_signal(column):
        # Kleene logic: a null is absent, whatever the other tests make of it.
        absent = pc.or_kleene(pc.is_null(column), equals(column, 0, ""))
        if pa.types.is_floating(column.type):
            absent = pc.or_kleene(absent, pc.is_nan(column))
        return absent

    def plain(batch) -> np.ndarray:
        mask = pc.and_kleene(equals(batch.column(schema.label), 0, "0"),
                             equals(batch.column(schema.click), 0, "0"))
        for name in schema.privileged:
            mask = pc.and_kleene(mask, no_signal(batch.column(name)))
        return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)

    return plain


def _read_tfrecord(path: str) -> Rows:
    """tf.Example records; a feature absent from a record is a missing value, and a
    feature with several values is kept as a list (quarantined as not a scalar).

    TFRecords have no header, so a missing required column shows up per row
    (e.g. the label) as a quarantined row rather than as a file error.
    TFRecord framing is read by TensorFlow from the path itself.
    """
    compression = "GZIP" if path.endswith(".gz") else ""
    row = 0
    try:
        for raw in tf.compat.v1.io.tf_record_iterator(
                path, tf.io.TFRecordOptions(compression_type=compression)):
            row += 1
            try:
                example = tf.train.Example.FromString(raw)
            except message.DecodeError as e:
                yield row, f"not a tf.Example record: {e}"
                continue
            yield row, {name: _feature_value(feat)
                        for name, feat in example.features.feature.items()}
    except tf.errors.DataLossError as e:
        raise LogFormatError(f"{path}: corrupt TFRecord after record {row}: {e.message}") from None


def _feature_value(feature: tf.train.Feature) -> Any:
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if kind == "bytes_list":
        values = [v.decode("utf-8", "surrogateescape") for v in values]
    return None if not values else values[0] if len(values) == 1 else values
