"""`pfdx compare` reads the log under ExampleGen's rules (issue 17, items 5, 11, 12, 15):
the same quarantine limit and split guards, and the hash split without a time column."""
import pytest

from pfdx.components.data_rules import DataError
from pfdx.config import load_config
from pfdx.experiments.windows import TEST, read_log, split_windows
from pfdx.simulator import simulate


def _log(tmp_path, frame):
    (path,) = simulate.write(frame, str(tmp_path / "logs"), fmt="csv")
    return [path]


def _config(tmp_path, *overrides):
    return load_config(None, [f"runner.output_root={tmp_path}", *overrides])


def test_compare_refuses_a_log_that_run_refuses(tmp_path):
    frame = simulate.simulate(3000, seed=4)
    clicked = frame.index[frame["click"] == 1]
    frame["bid"] = frame["bid"].astype(object)
    frame.loc[clicked[::2], "bid"] = "n/a"  # half the clicked rows
    files = _log(tmp_path, frame)
    with pytest.raises(DataError, match=r"more than data.max_quarantined_fraction=0.05 .*"
                                        r"\n  .*logs.*: field 'bid': 'n/a' is not a number"):
        read_log(files, _config(tmp_path))
    rows, counts, dead = read_log(
        files, _config(tmp_path, "data.max_quarantined_fraction=0.6"))
    assert counts["quarantined"] == len(clicked[::2]) == len(dead)


def test_compare_without_a_time_column_uses_the_hash_split_and_says_so(tmp_path):
    frame = simulate.simulate(6000, seed=5).drop(columns=["event_time"])
    files = _log(tmp_path, frame)
    # What is under test is the split, not the guard on a small log's positives.
    config = _config(tmp_path, "data.time_column=null", "data.min_split_positives=0")
    rows, counts, _ = read_log(files, config, impressions=True)
    said = []
    windows = split_windows(rows, config, str(tmp_path / "work"), said.append)
    assert said == ["no data.time_column: the windows are the pipeline's hash split of the rows"]
    click, impressions = windows["click"], windows["impression"]
    assert sum(w.rows for w in click.values()) == counts["used"]
    # A clicked row falls in the same window in both spaces.
    assert {w: click[w].rows for w in click} == {w: impressions[w].clicks for w in impressions}
    assert 0.1 < click[TEST].rows / counts["used"] < 0.3


def test_compare_stops_on_a_one_class_label(tmp_path):
    frame = simulate.simulate(3000, seed=6).assign(conversion=0)
    config = _config(tmp_path)
    rows, _, _ = read_log(_log(tmp_path, frame), config)
    with pytest.raises(DataError, match="the label column 'conversion' has one class"):
        split_windows(rows, config, str(tmp_path / "work"), print)
