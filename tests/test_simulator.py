import numpy as np
import pandas as pd
import pytest

from pfdx.simulator import schema as S
from pfdx.simulator import simulate


def test_funnel_rates_are_realistic(sim_log):
    ctr = sim_log[S.CLICK].mean()
    clicked = sim_log[sim_log[S.CLICK] == 1]
    cvr = clicked[S.LABEL].mean()
    assert 0.01 <= ctr <= 0.06, ctr
    assert 0.08 <= cvr <= 0.17, cvr
    # the hidden truth is calibrated: mean true CVR matches the observed rate
    assert abs(clicked[S.TRUE_CVR].mean() - cvr) < 0.02


def test_conversion_only_after_click(sim_log):
    assert (sim_log.loc[sim_log[S.CLICK] == 0, S.LABEL] == 0).all()


def test_privileged_signals_missing_exactly_on_unclicked_rows(sim_log):
    clicked = sim_log[S.CLICK] == 1
    for col in S.PRIVILEGED_DISCRETE + S.PRIVILEGED_CONTINUOUS:
        assert sim_log.loc[~clicked, col].isna().all(), col
        assert sim_log.loc[clicked, col].notna().all(), col


def test_column_types(sim_log):
    assert list(sim_log.columns) == list(S.COLUMNS)
    for col in S.REGULAR_CATEGORICAL:
        kind = sim_log[col].dtype.kind
        assert kind in "OU" or col in ("hour", "weekday"), (col, kind)
    for col in S.REGULAR_NUMERIC + S.PRIVILEGED_CONTINUOUS:
        assert sim_log[col].dtype.kind in "if", col
    clicked = sim_log[sim_log[S.CLICK] == 1]
    for col in S.PRIVILEGED_DISCRETE:
        assert set(clicked[col].unique()) <= {0.0, 1.0}, col
    assert (clicked[list(S.PAPER_CONTINUOUS)] >= 0).all().all()
    assert sim_log[S.EVENT_TIME].is_monotonic_increasing


def test_deterministic_for_a_seed():
    a, b = simulate.simulate(5_000, seed=3), simulate.simulate(5_000, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = simulate.simulate(5_000, seed=4)
    assert not a[S.CLICK].equals(c[S.CLICK])


def test_leaks_nearly_equal_label_and_noise_is_independent(sim_log):
    clicked = sim_log[sim_log[S.CLICK] == 1]
    y = clicked[S.LABEL].to_numpy()
    for leak in S.LEAKS_DISCRETE:
        assert (clicked[leak].to_numpy() == y).mean() > 0.95, leak
    for noise in S.NOISE_DISCRETE + S.NOISE_CONTINUOUS:
        assert abs(np.corrcoef(clicked[noise], y)[0, 1]) < 0.06, noise


def test_privileged_signals_know_more_than_regular_features(sim_log):
    """The private session intent shows in post-click signals only."""
    clicked = sim_log[sim_log[S.CLICK] == 1]
    resid = clicked[S.LABEL] - clicked[S.TRUE_CVR]  # what no model of the truth explains
    # button_click tracks the full intent, so it correlates with the label beyond
    # what the user's visible affinity (past conversion rate) explains.
    past_rate = clicked["user_past_conversions"] / (clicked["user_past_clicks"] + 1)
    assert np.corrcoef(clicked["button_click"], clicked[S.TRUE_CVR])[0, 1] > \
        np.corrcoef(past_rate, clicked[S.TRUE_CVR])[0, 1]
    assert abs(resid.mean()) < 0.02


@pytest.mark.parametrize("fmt", ["csv", "parquet", "tfrecord"])
def test_write_formats_round_trip(tmp_path, fmt):
    frame = simulate.simulate(800, seed=1)
    paths = simulate.write(frame, str(tmp_path), fmt=fmt, shards=2)
    assert len(paths) == 2
    if fmt == "csv":
        back = pd.concat(pd.read_csv(p) for p in paths)
    elif fmt == "parquet":
        back = pd.concat(pd.read_parquet(p) for p in paths)
    else:
        import tensorflow as tf
        n = sum(1 for p in paths for _ in tf.data.TFRecordDataset(p))
        assert n == len(frame)
        return
    assert len(back) == len(frame)
    np.testing.assert_array_equal(back[S.LABEL].to_numpy(), frame[S.LABEL].to_numpy())
    np.testing.assert_allclose(back["duration"].to_numpy(), frame["duration"].to_numpy())


def test_cli_simulate(tmp_path):
    from pfdx.pipeline import cli

    assert cli.main(["simulate", "--rows", "500", "--seed", "2", "--out", str(tmp_path),
                     "--format", "csv"]) == 0
    (path,) = tmp_path.glob("*.csv")
    assert len(pd.read_csv(path)) == 500
