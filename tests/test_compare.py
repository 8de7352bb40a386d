"""`pfdx compare` on a small simulated log: its table is the trained models' own
evaluation, its test window is the later time window, and its grid picks by the
validation window.

One CLI run (module fixture, ~1 min on 2 cores): 2 strategies x 1 seed, 1 epoch,
tiny towers, plus a 2-point learning-rate grid for `none`.
"""
import contextlib
import csv
import io
import json

import numpy as np
import pandas as pd
import pytest

from pfdx.config import ConfigError, load_config
from pfdx.models import metrics
from pfdx.models.training import Predictions
from pfdx.pipeline import cli, compare
from pfdx.simulator import schema, simulate

ROWS = 100_000  # ~4.4k clicks
STRATEGIES = ["none", "ha_pfd_v2"]
LEARNING_RATES = [0.0001, 0.02]
SMALL = ["model.epochs=1", "model.hidden_units=[16,8]", "model.mapping_hidden_units=[8]",
         "model.hash_buckets=1000", "runner.direct_running_mode=in_memory",
         "runner.direct_num_workers=1", "data.format=parquet"]


@pytest.fixture(scope="module")
def frame():
    return simulate.simulate(ROWS, seed=3)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, frame):
    root = tmp_path_factory.mktemp("compare")
    simulate.write(frame, str(root / "log"), fmt="parquet", shards=2)
    out = root / "out"
    argv = ["compare", "--data", str(root / "log"), "--out", str(out),
            "--strategies", ",".join(STRATEGIES), "--seeds", "1",
            "--grid", "none:learning_rate=" + ",".join(map(str, LEARNING_RATES))]
    for item in SMALL + [f"runner.output_root={root}"]:
        argv += ["--set", item]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert cli.main(argv) == 0
    return out, stdout.getvalue()


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(cell):
    return float("nan") if cell == "" else float(cell)


def test_writes_table_runs_and_reliability_diagram(outcome):
    out, stdout = outcome
    for name in ("compare.csv", "compare.md", "runs.csv", "grid.csv", "compare.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = _rows(out / "compare.csv")
    assert [r["strategy"] for r in table] == STRATEGIES
    for column in ("student_auc_mean", "teacher_auc_mean", "label_avg_mean",
                   "student_pred_avg_mean", "student_pred_avg_gap_mean", "student_ece_mean",
                   "student_mce_mean", "student_truth_mae_mean", "student_truth_ece_mean"):
        assert column in table[0], column
    md = (out / "compare.md").read_text()
    assert "| strategy | AUC | teacher AUC | label avg | pred avg (gap)" in md
    assert "ECE vs true CVR" in md and "true CVR (oracle)" in md
    for name in STRATEGIES:
        assert f"| {name} |" in md
    # One progress line per strategy x seed, with its time and metrics.
    assert "[1/2] none            seed 42" in stdout and "[2/2] ha_pfd_v2       seed 42" in stdout
    assert stdout.count(" AUC ") >= 2 + len(LEARNING_RATES)


def test_table_numbers_are_the_models_own_evaluation(outcome):
    out, _ = outcome
    config = load_config(None, SMALL)
    bins = config.evaluation.calibration_bins
    runs = {r["strategy"]: r for r in _rows(out / "runs.csv")}
    for row in _rows(out / "compare.csv"):
        p = Predictions.load(str(out / runs[row["strategy"]]["predictions"]))
        assert 0.0 < p.student.min() and p.student.max() < 1.0
        student, truth = p.student.astype(np.float64), p.truth.astype(np.float64)
        ece, mce = metrics.calibration_errors(p.labels, student, bins)
        expected = {
            "student_auc_mean": metrics.auc(p.labels, student),
            "label_avg_mean": p.labels.mean(),
            "student_pred_avg_mean": student.mean(),
            "student_pred_avg_gap_mean": student.mean() - p.labels.mean(),
            "student_ece_mean": ece, "student_mce_mean": mce,
            "student_truth_mae_mean": np.abs(student - truth).mean(),
            "student_truth_ece_mean": metrics.calibration_errors(truth, student, bins)[0],
        }
        for column, value in expected.items():
            assert _num(row[column]) == pytest.approx(value, rel=1e-9, abs=1e-12), column
        if row["strategy"] == "none":  # no teacher: an empty cell, not a number
            assert p.teacher is None and row["teacher_auc_mean"] == ""
        else:
            assert _num(row["teacher_auc_mean"]) == pytest.approx(
                metrics.auc(p.labels, p.teacher), rel=1e-9)
        assert row["student_auc_std"] == ""  # one seed: no spread


def test_test_window_is_the_last_fifth_of_clicked_time(outcome, frame):
    out, _ = outcome
    clicks = frame[frame[schema.CLICK] == 1]
    t = clicks[schema.EVENT_TIME].to_numpy()
    cutoff = t.max() - 0.2 * (t.max() - t.min())
    test = clicks[t >= cutoff]
    run = _rows(out / "runs.csv")[0]
    p = Predictions.load(str(out / run["predictions"]))
    # Row for row: the same clicked impressions, in log order, with their labels
    # and hidden true CVR.
    np.testing.assert_array_equal(p.labels, test[schema.LABEL].to_numpy())
    np.testing.assert_allclose(p.truth, test[schema.TRUE_CVR].to_numpy(), atol=1e-6)
    summary = json.loads((out / "compare.json").read_text())
    assert summary["windows"]["train"]["rows"] == int((t < cutoff).sum())
    assert summary["windows"]["train"]["time_range"][1] < summary["windows"]["test"]["time_range"][0]
    assert summary["data"]["rows"]["used"] == len(clicks)


def test_grid_chooses_the_best_validation_point(outcome):
    out, _ = outcome
    grid = _rows(out / "grid.csv")
    assert [json.loads(r["params"]) for r in grid] == [{"learning_rate": lr}
                                                      for lr in LEARNING_RATES]
    best = max(grid, key=lambda r: _num(r["student_auc"]))
    table = {r["strategy"]: r for r in _rows(out / "compare.csv")}
    assert json.loads(table["none"]["params"]) == json.loads(best["params"])
    assert json.loads(table["ha_pfd_v2"]["params"]) == {}  # no grid for it
    summary = json.loads((out / "compare.json").read_text())
    assert summary["windows"]["validation"]["rows"] == int(grid[0]["rows"])
    assert summary["windows"]["fit"]["rows"] + summary["windows"]["validation"]["rows"] \
        == summary["windows"]["train"]["rows"]


@pytest.mark.parametrize("overrides, message", [
    (["compare.strategies=[none, distil_everything]"], "compare.strategies: unknown"),
    (["compare.grid.lamda=[1, 10]"], "compare.grid.lamda: 'lamda' is not a tunable"),
    (["compare.grid.kd_plus:lam=[1]"], "compare.grid.kd_plus:lam: unknown strategy"),
    (["compare.seeds=0"], "compare.seeds: 0 is below 1"),
    (["data.time_column=null"], "data.time_column: pfdx compare splits"),
])
def test_bad_settings_name_their_key(tmp_path, overrides, message):
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "log.csv", index=False)
    with pytest.raises(ConfigError, match=message):
        config = load_config(None, overrides)
        compare.run(config, str(tmp_path), str(tmp_path / "out"), log=lambda _: None)
