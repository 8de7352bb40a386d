import io

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
    status, (time, payload) = log_rows.row_to_example(SCHEMA, _row(user_id="123", bid="0.5"))
    assert status == log_rows.USED and time == 1700000000
    ex = tf.train.Example.FromString(payload)
    f = ex.features.feature
    assert f["user_id"].bytes_list.value == [b"123"]  # ids stay categorical strings
    assert f["bid"].float_list.value == [0.5]
    assert f["conversion"].int64_list.value == [0]
    assert "click" not in f and "impression_id" not in f


def test_missing_values_are_absent_features():
    status, (_, payload) = log_rows.row_to_example(SCHEMA, _row(duration="", device=""))
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
    status, (time, payload) = log_rows.row_to_example(IMPRESSIONS, unclicked)
    f = tf.train.Example.FromString(payload).features.feature
    assert status == log_rows.UNCLICKED and time == 1700000000
    assert f["click"].int64_list.value == [0] and f["conversion"].int64_list.value == [0]
    assert f["user_id"].bytes_list.value == [b"u1"] and "bid" in f
    assert not set(f) & set(IMPRESSIONS.privileged)

    status, (_, payload) = log_rows.row_to_example(IMPRESSIONS, _row(conversion="1"))
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
    return _row(click="0", **{**{c: value for c in SCHEMA.privileged}, **over})


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
    status, (_, payload) = log_rows.row_to_example(SCHEMA, _row(device=float("nan")))
    assert status == log_rows.USED
    assert "device" not in tf.train.Example.FromString(payload).features.feature


def test_reason_keys_of_row_level_problems():
    assert log_rows.reason_key("wrong column count: 2 cells, header has 40") == "wrong column count"


def test_csv_reader_flags_wrong_width_and_names_missing_columns():
    header = ",".join(SCHEMA.required)
    good = ",".join("1" for _ in SCHEMA.required)
    data = f"{header}\n{good}\n1,2\n\n{good}\n".encode()
    rows = list(log_rows.read_csv("f.csv", io.BytesIO(data), ",", SCHEMA))
    assert [r for r, _ in rows] == [1, 2, 4]
    assert "wrong column count: 2 cells" in rows[1][1]
    no_label = ",".join(c for c in SCHEMA.required if c != "conversion")
    with pytest.raises(log_rows.LogFormatError,
                       match=r"f.csv: missing required column\(s\) \['conversion'\]; the file has"):
        list(log_rows.read_csv("f.csv", io.BytesIO(f"{no_label}\n".encode()), ",", SCHEMA))
    assert list(log_rows.read_csv("e.csv", io.BytesIO(b""), ",", SCHEMA)) == []
