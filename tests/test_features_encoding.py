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
