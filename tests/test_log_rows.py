import csv
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from pfdx.components import log_rows
from pfdx.config import load_config

SCHEMA = log_rows.RowSchema.from_config(load_config().to_dict()["data"])


def _row(**over):
    row = {c: "1" for c in SCHEMA.required}
    row.update({"user_id": "u1", "click": "1", "conversion": "0", "event_time": "1700000000"})
    row.update(over)
    return row


def test_clicked_row_becomes_typed_example():
    status, (time, label, payload) = log_rows.row_to_example(SCHEMA, _row(user_id="123", bid="0.5"))
    assert status == log_rows.USED and time == 1700000000 and label == 0
    ex = tf.train.Example.FromString(payload)
    f = ex.features.feature
    assert f["user_id"].bytes_list.value == [b"123"]  # ids stay categorical strings
    assert f["bid"].float_list.value == [0.5]
    assert f["conversion"].int64_list.value == [0]
    assert "click" not in f and "impression_id" not in f


def test_missing_values_are_absent_features():
    status, (_, _, payload) = log_rows.row_to_example(SCHEMA, _row(duration="", device=""))
    f = tf.train.Example.FromString(payload).features.feature
    assert status == log_rows.USED and "duration" not in f and "device" not in f


def test_unclicked_rows_are_counted_not_used():
    unclicked = _row(click="0", **{c: "" for c in SCHEMA.privileged})  # no post-click signals
    assert log_rows.row_to_example(SCHEMA, unclicked) == (log_rows.UNCLICKED, None)


IMPRESSIONS = log_rows.RowSchema.from_config(load_config().to_dict()["data"], "impression")


def test_impression_space_keeps_unclicked_rows_with_their_click_label():
    # Unclicked rows may log post-click signals as empty, 0 or NaN: none is kept.
    unclicked = _row(click="0", **{**{c: "" for c in SCHEMA.privileged},
                                   "duration": "nan", "page_jump": "0"})
    status, (time, _, payload) = log_rows.row_to_example(IMPRESSIONS, unclicked)
    f = tf.train.Example.FromString(payload).features.feature
    assert status == log_rows.UNCLICKED and time == 1700000000
    assert f["click"].int64_list.value == [0] and f["conversion"].int64_list.value == [0]
    assert f["user_id"].bytes_list.value == [b"u1"] and "bid" in f
    assert not set(f) & set(IMPRESSIONS.privileged)

    status, (_, _, payload) = log_rows.row_to_example(IMPRESSIONS, _row(conversion="1"))
    f = tf.train.Example.FromString(payload).features.feature
    assert status == log_rows.USED and f["click"].int64_list.value == [1]
    assert f["conversion"].int64_list.value == [1] and "duration" in f


@pytest.mark.parametrize("over, reason", [
    ({"click": "0", "conversion": "1"}, "conversion without a click"),
    ({"click": "0", "duration": "12"}, "post-click signal '12' on an unclicked row"),
    ({"click": "2"}, "field 'click': '2' is not 0/1"),
])
def test_impression_space_quarantines_what_click_space_does(over, reason):
    for schema in (SCHEMA, IMPRESSIONS):
        status, why = log_rows.row_to_example(schema, _row(**{**{c: "" for c in SCHEMA.privileged},
                                                             **over}))
        assert status == log_rows.QUARANTINED and reason in why


@pytest.mark.parametrize("over, reason", [
    ({"conversion": "2"}, "field 'conversion': '2' is not 0/1"),
    ({"conversion": "yes"}, "field 'conversion': 'yes' is not a number"),
    ({"click": "0", "conversion": "1"}, "conversion without a click"),
    ({"bid": "abc"}, "field 'bid': 'abc' is not a number"),
    ({"duration": "nan"}, "field 'duration': 'nan' is not finite"),
    ({"duration": "inf"}, "field 'duration': 'inf' is not finite"),
    ({"event_time": ""}, "field 'event_time'"),
    ({"duration": "-3.5"}, "field 'duration': '-3.5' is negative (data.non_negative)"),
    ({"bid": -0.1}, "field 'bid': -0.1 is negative"),
    ({"page_jump": "2"}, "field 'page_jump': '2' is not 0/1"),
    ({"duration": float("nan")}, "field 'duration': nan is not finite"),  # a typed reader's NaN
])
def test_bad_rows_are_quarantined_with_a_reason(over, reason):
    status, why = log_rows.row_to_example(SCHEMA, _row(**over))
    assert status == log_rows.QUARANTINED
    assert reason in why
    assert log_rows.reason_key(why) == next(iter(k for k in over if k != "click"))


def _unclicked(value, **over):
    return _row(**{"click": "0", **{c: value for c in SCHEMA.privileged}, **over})


@pytest.mark.parametrize("value", ["", None, "0", 0.0, float("nan"), "nan"])
def test_unclicked_rows_may_carry_empty_or_zero_post_click_signals(value):
    assert log_rows.row_to_example(SCHEMA, _unclicked(value)) == (log_rows.UNCLICKED, None)


@pytest.mark.parametrize("over, reason", [
    ({"duration": "12.5"}, "field 'duration': post-click signal '12.5' on an unclicked row"),
    ({"page_jump": 1.0}, "field 'page_jump': post-click signal 1.0 on an unclicked row"),
    ({"duration": "abc"}, "field 'duration': 'abc' is not a number"),
])
def test_post_click_signals_on_unclicked_rows_are_quarantined(over, reason):
    # A broken click join: the row is out of click space, but not to be trusted.
    status, why = log_rows.row_to_example(SCHEMA, _unclicked("", **over))
    assert (status, why) == (log_rows.QUARANTINED, reason)


def test_non_negative_columns_come_from_the_config():
    data = load_config(None, ["data.non_negative=[duration]"]).to_dict()["data"]
    schema = log_rows.RowSchema.from_config(data)
    assert schema.non_negative == ("duration",)
    assert log_rows.row_to_example(schema, _row(bid="-1"))[0] == log_rows.USED
    assert log_rows.row_to_example(schema, _row(duration="-1"))[0] == log_rows.QUARANTINED
    # Default: every regular numeric and privileged continuous column.
    assert set(SCHEMA.non_negative) == {"user_past_clicks", "user_past_conversions", "bid",
                                        "duration", "click_leave_time", "in_platform_time",
                                        "noise_scroll_speed"}


def test_a_nan_category_is_a_missing_value():
    status, (_, _, payload) = log_rows.row_to_example(SCHEMA, _row(device=float("nan")))
    assert status == log_rows.USED
    assert "device" not in tf.train.Example.FromString(payload).features.feature


def test_reason_keys_of_row_level_problems():
    assert log_rows.reason_key("wrong column count: 2 cells, header has 40") == "wrong column count"


def _read_csv(data: bytes, path: str = "f.csv"):
    unknown, rows = log_rows.read_file(path, io.BytesIO(data), "csv", ",", SCHEMA)
    return unknown, list(rows)


HEADER = ",".join(SCHEMA.required)
GOOD = ",".join("1" for _ in SCHEMA.required)


def test_csv_reader_flags_wrong_width_and_names_missing_columns():
    _, rows = _read_csv(f"{HEADER}\n{GOOD}\n1,2\n\n{GOOD}\n".encode())
    assert [r for r, _ in rows] == [1, 2, 4]
    assert "wrong column count: 2 cells" in rows[1][1]
    no_label = ",".join(c for c in SCHEMA.required if c != "conversion")
    with pytest.raises(log_rows.LogFormatError,
                       match=r"f.csv: missing required column\(s\) \['conversion'\]; the file has"):
        _read_csv(f"{no_label}\n".encode())
    assert _read_csv(b"", "e.csv") == ([], [])


def test_a_non_utf8_byte_quarantines_its_row_only_under_its_own_number():
    # Issue 17.1: the decoder used to drop a whole buffer of rows, uncounted.
    rows = [dict(_row(), device=f"d{i}") for i in range(5000)]
    lines = [HEADER] + [",".join(r[c] for c in SCHEMA.required) for r in rows]
    data = "\n".join(lines).encode().replace(b"d2065", b"d\xe9")
    _, read = _read_csv(data)
    assert [r for r, _ in read] == list(range(1, 5001))
    results = {r: log_rows.row_to_example(SCHEMA, record) for r, record in read}
    bad = {r: why for r, (status, why) in results.items() if status == log_rows.QUARANTINED}
    assert bad == {2066: "field 'device': b'd\\xe9' is not UTF-8 text"}
    with pytest.raises(log_rows.LogFormatError, match="f.csv: the header is not UTF-8"):
        _read_csv(b"conversion,\xe9\n1,2\n")


def test_plain_unclicked_csv_rows_skip_the_checks_and_land_where_the_checks_put_them():
    """`read_rows` buckets an unclicked row with no signal from its cells alone (its
    record None); every row lands where `row_to_example` of the row puts it."""
    plain = _row(click="0", **{c: "" for c in SCHEMA.privileged})
    rows = [plain,
            dict(plain, device="t\u00e9l\u00e9"),  # text that is not ASCII
            dict(plain, device="BAD"),  # a byte that is not UTF-8
            dict(plain, click="false"), dict(plain, conversion="0.0"),
            dict(plain, page_jump="0"), dict(plain, duration="nan"),
            dict(plain, page_jump="1"),  # a post-click signal without a click
            dict(plain, conversion="1"),  # a conversion without a click
            dict(plain, click="2"), _row(), dict(plain, bid="not a number")]
    lines = [HEADER] + [",".join(r[c] for c in SCHEMA.required) for r in rows]
    data = "\n".join(lines).encode().replace(b"BAD", b"b\xe9d")
    _, read = log_rows.read_rows("f.csv", io.BytesIO(data), "csv", ",", SCHEMA)
    read = list(read)
    decoded = io.TextIOWrapper(io.BytesIO(data), "utf-8", "surrogateescape", newline="")
    expected = [log_rows.row_to_example(SCHEMA, r) for r in csv.DictReader(decoded)]
    assert [(r.status, r.payload) for r in read] == expected
    # The last: a bad number, but unclicked rows' numbers are not read either way.
    assert [r.record is None for r in read] == [True] + [False] * (len(rows) - 2) + [True]
    assert [s for s, _ in expected] == [log_rows.UNCLICKED] * 2 + [log_rows.QUARANTINED] + [
        log_rows.UNCLICKED] * 4 + [log_rows.QUARANTINED] * 3 + [log_rows.USED, log_rows.UNCLICKED]
    # Impression space reads every row in full: its unclicked rows are examples.
    _, read = log_rows.read_rows("f.csv", io.BytesIO(data), "csv", ",", IMPRESSIONS)
    assert all(r.record is not None for r in read)


def _parquet(rows: list[dict]) -> io.BytesIO:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    buf.seek(0)
    return buf


def test_plain_unclicked_parquet_rows_are_bucketed_from_their_columns():
    """As for CSV, on typed columns: a signal that is null, NaN or 0 is no signal."""
    numeric = set(SCHEMA.numeric) | {SCHEMA.truth}
    clicked = {c: 1 if c in (SCHEMA.label, SCHEMA.click) else 1.0 if c in numeric else
               1700000000 if c == SCHEMA.time else "x" for c in SCHEMA.required}
    plain = dict(clicked, **{SCHEMA.label: 0, SCHEMA.click: 0},
                 **{c: None for c in SCHEMA.privileged})
    rows = [plain, dict(plain, duration=float("nan")), dict(plain, page_jump=0.0),
            dict(plain, page_jump=1.0),  # a post-click signal without a click
            dict(plain, conversion=1),  # a conversion without a click
            dict(plain, click=None), clicked, dict(plain, bid=float("nan"))]
    _, read = log_rows.read_rows("f.parquet", _parquet(rows), "parquet", ",", SCHEMA)
    read = list(read)
    records = pq.read_table(_parquet(rows)).to_pylist()
    assert [(r.status, r.payload) for r in read] == [
        log_rows.row_to_example(SCHEMA, r) for r in records]
    assert [r.status for r in read] == [log_rows.UNCLICKED] * 3 + [log_rows.QUARANTINED] * 3 + [
        log_rows.USED, log_rows.UNCLICKED]
    assert [r.record is None for r in read] == [True] * 3 + [False] * 4 + [True]
    # A list in any column read: every row is read in full (the list is quarantined).
    listed = [dict(row, device=["a"]) for row in rows]
    _, read = log_rows.read_rows("f.parquet", _parquet(listed), "parquet", ",", SCHEMA)
    assert all(r.record is not None for r in read)


def test_a_byte_order_mark_is_not_part_of_the_first_column():
    # Issue 17.7: "\ufeffconversion" is "conversion".
    unknown, rows = _read_csv(f"\ufeff{HEADER}\n{GOOD}\n".encode())
    assert unknown == [] and list(rows[0][1])[0] == SCHEMA.required[0]


@pytest.mark.parametrize("value, wanted", [
    ("1e308", "field 'bid': '1e308' is out of range of its stored type"),
    ("-1e39", "field 'bid': '-1e39' is out of range of its stored type"),
    ("3e38", None),  # float32 holds it
])
def test_the_range_check_uses_the_stored_float32(value, wanted):
    # Issue 17.2: finite in float64, infinite once stored as float32.
    status, out = log_rows.row_to_example(SCHEMA, _row(bid=value))
    assert status == (log_rows.USED if wanted is None else log_rows.QUARANTINED)
    assert wanted is None or out == wanted
    status, why = log_rows.row_to_example(SCHEMA, _row(event_time="1e19"))
    assert (status, why) == (log_rows.QUARANTINED,
                             "field 'event_time': '1e19' is out of range of its stored type")


@pytest.mark.parametrize("field, value", [
    ("device", ["android", "zz"]),  # a Parquet list<string>
    ("conversion", [0, 1]),  # a TFRecord label with two values
    ("bid", (1.0, 2.0)),
])
def test_a_list_value_is_quarantined_as_not_a_scalar(field, value):
    # Issue 17.3: shapes were flattened to text or to their first value.
    status, why = log_rows.row_to_example(SCHEMA, _row(**{field: value}))
    assert (status, why) == (log_rows.QUARANTINED, f"field {field!r}: {value!r} is not a scalar")


@pytest.mark.parametrize("true, false", [("TRUE", "FALSE"), ("true", "false"),
                                         ("True", "False"), (True, False)])
def test_boolean_spellings_are_read_as_1_and_0(true, false):
    # Issue 17.14: what pandas, Spark and spreadsheets write.
    status, (_, label, payload) = log_rows.row_to_example(
        SCHEMA, _row(click=true, conversion=true, page_jump=false))
    f = tf.train.Example.FromString(payload).features.feature
    assert status == log_rows.USED and label == 1 and f["page_jump"].float_list.value == [0.0]
    # An unclicked row's post-click flags may be spelled false too.
    unclicked = _unclicked("", conversion=false, page_jump=false)
    assert log_rows.row_to_example(SCHEMA, unclicked) == (log_rows.UNCLICKED, None)
    status, why = log_rows.row_to_example(SCHEMA, _row(conversion="yes"))
    assert why == "field 'conversion': 'yes' is not a number"


@pytest.mark.parametrize("name, side", [("_SUCCESS", True), ("part-0.csv.crc", True),
                                        (".part-0.csv.crc", True), ("_metadata", True),
                                        (".hidden", True), ("part-0.csv", False),
                                        ("logs/2024_01.csv", False)])
def test_spark_and_hadoop_side_files_are_recognised(name, side):
    assert log_rows.is_side_file(f"/data/{name}") is side
