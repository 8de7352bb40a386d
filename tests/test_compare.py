"""`pfdx compare` on a small simulated log: its table is the trained models' own
evaluation, its windows are the pipeline's time splits, and its per-run tuning picks
by the validation window; impression-space strategies (TAML, UKD) run next to the
click-space ones without changing them.

Two CLI runs on one log (module fixtures, 1 epoch, tiny towers): 2 click-space
strategies x 1 seed, tuned over a 2-point learning-rate grid for `none` (and the
fixed candidates); then `ha_pfd_v2`, `taml` and `ukd` (with its `ukd_teacher`) x 1
seed, the impression-space ones at their configured values.
"""
import contextlib
import csv
import io
import json

import numpy as np
import pandas as pd
import pytest

from sklearn.metrics import roc_auc_score

from pfdx.config import ConfigError, load_config
from pfdx.models import metrics, registry
from pfdx.models.predictions import Predictions
from pfdx.experiments import compare, reports, strategies
from pfdx.pipeline import cli
from pfdx.simulator import schema, simulate

ROWS = 100_000  # ~4.4k clicks
STRATEGIES = ["none", "ha_pfd_v2"]
LEARNING_RATES = [0.0001, 0.02]
SMALL = ["model.epochs=1", "model.hidden_units=[16,8]",
         "model.alignment.mapping_hidden_units=[8]", "model.hash_buckets=1000",
         "runner.direct_running_mode=in_memory",
         "runner.direct_num_workers=1", "data.format=parquet", "tuning.max_trials=2"]


@pytest.fixture(scope="module")
def frame():
    return simulate.simulate(ROWS, seed=3)


def run_compare(root, frame, strategies, grid):
    """`pfdx compare` through the CLI on `frame` written as Parquet under `root`, one
    seed and one `--grid`; returns (output folder, what it printed)."""
    simulate.write(frame, str(root / "log"), fmt="parquet", shards=2)
    out = root / "out"
    argv = ["compare", "--data", str(root / "log"), "--out", str(out),
            "--strategies", ",".join(strategies), "--seeds", "1", "--grid", grid]
    for item in SMALL + [f"runner.output_root={root}"]:
        argv += ["--set", item]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert cli.main(argv) == 0
    return out, stdout.getvalue()


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, frame):
    return run_compare(tmp_path_factory.mktemp("compare"), frame, STRATEGIES,
                       "none:learning_rate=" + ",".join(map(str, LEARNING_RATES)))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(cell):
    return float("nan") if cell == "" else float(cell)


@pytest.mark.e2e  # uses a full `pfdx compare` run (module fixture)
def test_writes_table_runs_and_reliability_diagram(outcome):
    out, stdout = outcome
    for name in ("compare.csv", "compare.md", "runs.csv", "tuning.csv", "compare.json"):
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


@pytest.mark.e2e  # uses a full `pfdx compare` run (module fixture)
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
            "student_truth_auc_mean": _expected_auc_by_pairs(truth, student),
        }
        for column, value in expected.items():
            assert _num(row[column]) == pytest.approx(value, rel=1e-9, abs=1e-12), column
        if row["strategy"] == "none":  # no teacher: an empty cell, not a number
            assert p.teacher is None and row["teacher_auc_mean"] == ""
        else:
            assert _num(row["teacher_auc_mean"]) == pytest.approx(
                metrics.auc(p.labels, p.teacher), rel=1e-9)
        assert row["student_auc_std"] == ""  # one seed: no spread



def _expected_auc_by_pairs(truth, scores):
    """AUC against outcomes drawn from `truth`: every ordered pair of distinct rows,
    weighted t_i (1 - t_j), ties one half."""
    t, s = np.asarray(truth, np.float64), np.asarray(scores, np.float64)
    w = np.outer(t, 1.0 - t)
    np.fill_diagonal(w, 0.0)
    return float((w * ((s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :]))).sum()
                 / w.sum())

@pytest.mark.e2e  # uses a full `pfdx compare` run (module fixture)
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
    windows = summary["windows"]
    validation_cut = cutoff - 0.2 * (cutoff - t.min())
    assert windows["train"]["rows"] == int((t < validation_cut).sum())
    assert windows["validation"]["rows"] == int(((t >= validation_cut) & (t < cutoff)).sum())
    assert windows["train"]["time_range"][1] < windows["validation"]["time_range"][0]
    assert windows["validation"]["time_range"][1] < windows["test"]["time_range"][0]
    assert summary["data"]["rows"]["used"] == len(clicks)


@pytest.mark.e2e  # uses a full `pfdx compare` run (module fixture)
def test_tuning_chooses_the_best_validation_point(outcome):
    out, _ = outcome
    trials = _rows(out / "tuning.csv")
    by_strategy = {}
    for r in trials:
        by_strategy.setdefault(r["strategy"], []).append(r)
    # `none`: the grid's learning rates (its setup stage; it has no weights to tune).
    assert [json.loads(r["params"]) for r in by_strategy["none"]] == [
        {"learning_rate": lr} for lr in LEARNING_RATES]
    # ha_pfd_v2 has no grid entry: no distillation, then its configured values.
    assert [json.loads(r["params"]) for r in by_strategy["ha_pfd_v2"]] == [
        {"alignment.weight": 0.0, "kd.lam": 0.0, "share_embeddings": False}, {}]
    table = {r["strategy"]: r for r in _rows(out / "compare.csv")}
    for name, rows in by_strategy.items():
        best = max(rows, key=lambda r: _num(r["validation_student_auc"]))
        assert json.loads(table[name]["params"]) == json.loads(best["params"]), name
    summary = json.loads((out / "compare.json").read_text())
    assert all(int(float(r["validation_rows"])) == summary["windows"]["validation"]["rows"]
               for r in trials)


@pytest.mark.parametrize("overrides, message", [
    (["compare.strategies=[none, distil_everything]"], "compare.strategies: unknown"),
    (["tuning.grid.lamda=[1, 10]"], "tuning.grid.lamda: 'lamda' is not a tunable"),
    (["tuning.grid.kd_plus:kd.lam=[1]"], "tuning.grid.kd_plus:kd.lam: unknown strategy"),
    (["compare.seeds=0"], "compare.seeds: 0 is below 1"),
    (["compare.strategies=[none, taml]", "data.columns.click=null"],
     r"compare.strategies: \['taml'\] train on every impression and need data.columns.click"),
])
def test_bad_settings_name_their_key(tmp_path, overrides, message):
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "log.csv", index=False)
    with pytest.raises(ConfigError, match=message):
        config = load_config(None, overrides)
        compare.run(config, str(tmp_path), str(tmp_path / "out"), log=lambda _: None)


# Impression space ------------------------------------------------------------------
# A second CLI run on the same log: `ha_pfd_v2` (click space, as in `outcome`) next to
# TAML and UKD (`ukd` brings `ukd_teacher`), one seed; the impression-space strategies
# are not tuned (as in the Trainer), so `ukd`'s grid entry is not used; ~1.5 min.

IMPRESSION_STRATEGIES = ["ha_pfd_v2", "taml", "ukd"]
UKD_PSEUDO_WEIGHTS = [1.0]


@pytest.fixture(scope="module")
def impressions(tmp_path_factory, frame, outcome):
    del outcome  # run after it: its results are the baseline
    return run_compare(tmp_path_factory.mktemp("compare-impressions"), frame,
                       IMPRESSION_STRATEGIES,
                       "ukd:ukd.pseudo_weight=" + ",".join(map(str, UKD_PSEUDO_WEIGHTS)))


def _roc_auc(labels, scores):
    """ROC AUC as the trapezoid area under the curve swept over distinct thresholds
    (not the rank formula models/metrics.py uses)."""
    labels, scores = np.asarray(labels, np.float64), np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    labels, scores = labels[order], scores[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), labels.size - 1]  # end of each tie group
    tp = np.r_[0.0, np.cumsum(labels)[last]]
    fp = np.r_[0.0, np.cumsum(1.0 - labels)[last]]
    return float(np.trapz(tp / tp[-1], fp / fp[-1]))


def _test_impressions(frame):
    """The log's impressions from the test cut on; the cut is the clicked rows'."""
    t_clicks = frame.loc[frame[schema.CLICK] == 1, schema.EVENT_TIME].to_numpy()
    cutoff = t_clicks.max() - 0.2 * (t_clicks.max() - t_clicks.min())
    return frame[frame[schema.EVENT_TIME].to_numpy() >= cutoff]


@pytest.mark.e2e  # uses a full `pfdx compare` run (module fixture)
def test_impression_strategies_run_next_to_click_space_ones(impressions, frame):
    out, stdout = impressions
    table = {r["strategy"]: r for r in _rows(out / "compare.csv")}
    assert list(table) == ["ha_pfd_v2", "taml", "ukd_teacher", "ukd"]
    n_test = len(_test_impressions(frame))
    assert table["ha_pfd_v2"]["ctcvr_auc_mean"] == ""  # click space: no CTR head
    for name in ("ha_pfd_v2", "taml", "ukd_teacher", "ukd"):
        # every run, click space too, is scored over the same test impressions
        assert _num(table[name]["impression_rows_mean"]) == n_test
        assert 0.0 < _num(table[name]["impression_truth_auc_mean"]) < 1.0
        assert _num(table[name]["impression_truth_avg_mean"]) == pytest.approx(
            _test_impressions(frame)[schema.TRUE_CVR].mean(), rel=1e-5)
        assert 0.0 < _num(table[name]["student_auc_mean"]) < 1.0
    assert table["ukd_teacher"]["ctr_auc_mean"] == ""  # no CTR head
    for name in ("taml", "ukd"):
        assert 0.0 < _num(table[name]["ctr_auc_mean"]) < 1.0
        assert 0.0 < _num(table[name]["ctcvr_auc_mean"]) < 1.0
    md = (out / "compare.md").read_text()
    assert "| CTR AUC | CTCVR AUC |" in md
    assert "| AUC vs true, clicked | AUC vs true, all impressions |" in md
    assert md.count("| true CVR (oracle) |") == 2
    summary = json.loads((out / "compare.json").read_text())
    windows = summary["windows"]
    assert windows["test_impressions"]["rows"] == n_test
    assert (windows["train_impressions"]["rows"] + windows["validation_impressions"]["rows"]
            + n_test == len(frame))
    assert windows["validation_impressions"]["clicks"] == windows["validation"]["rows"]
    assert windows["test_impressions"]["clicks"] == windows["test"]["rows"]
    assert windows["train_impressions"]["clicks"] == windows["train"]["rows"]
    assert f"impressions {n_test}: AUC(true)" in stdout


@pytest.mark.e2e  # uses a full `pfdx compare` run (module fixture)
def test_impression_test_window_holds_the_click_test_window(impressions, outcome, frame):
    out, _ = impressions
    test = _test_impressions(frame)
    clicked = test[test[schema.CLICK] == 1]
    baseline = Predictions.load(str(outcome[0] / _rows(outcome[0] / "runs.csv")[0]["predictions"]))
    for run in _rows(out / "runs.csv"):
        p = Predictions.load(str(out / run["predictions"]))
        if run["strategy"] == "ha_pfd_v2":
            assert p.clicks is None and p.ctr is None
            continue
        # Every test impression in log order, and its clicked rows are the click-space
        # test window: the same rows, labels and true CVR as the other run's.
        np.testing.assert_array_equal(p.clicks, test[schema.CLICK].to_numpy())
        np.testing.assert_array_equal(p.labels, test[schema.LABEL].to_numpy())
        on_click = p.clicks == 1
        np.testing.assert_array_equal(p.labels[on_click], clicked[schema.LABEL].to_numpy())
        np.testing.assert_array_equal(p.labels[on_click], baseline.labels)
        np.testing.assert_array_equal(p.truth[on_click], baseline.truth)
        assert int(run["rows"]) == baseline.labels.size == int(on_click.sum())
        assert (p.ctr is None) == (run["strategy"] == "ukd_teacher")


@pytest.mark.e2e  # uses a full `pfdx compare` run (module fixture)
def test_ctr_and_ctcvr_auc_match_the_saved_predictions(impressions):
    out, _ = impressions
    config = load_config(None, SMALL)
    bins = config.evaluation.calibration_bins
    runs = {r["strategy"]: r for r in _rows(out / "runs.csv")}
    for name in ("taml", "ukd"):
        p = Predictions.load(str(out / runs[name]["predictions"]))
        student = p.student.astype(np.float64)
        ctr = p.ctr.astype(np.float64)
        on_click = p.clicks == 1
        expected = {
            "ctcvr_auc": _roc_auc(p.clicks * p.labels, ctr * student),
            "ctr_auc": _roc_auc(p.clicks, ctr),
            # the CVR columns: clicked rows only
            "student_auc": _roc_auc(p.labels[on_click], student[on_click]),
            "student_ece": metrics.calibration_errors(p.labels[on_click], student[on_click],
                                                      bins)[0],
            "label_avg": p.labels[on_click].mean(),
        }
        # every impression against the true CVR: sklearn's weighted AUC counts each
        # row against itself (a tie, 1/2); expected_auc leaves those pairs out
        truth = p.truth.astype(np.float64)
        n, pairs = truth.size, truth.sum() * (1.0 - truth).sum()
        own = (truth * (1.0 - truth)).sum()
        weighted = roc_auc_score(np.r_[np.ones(n), np.zeros(n)], np.r_[student, student],
                                 sample_weight=np.r_[truth, 1.0 - truth])
        expected.update(
            impression_truth_auc=(weighted * pairs - 0.5 * own) / (pairs - own),
            impression_truth_mae=np.abs(student - truth).mean(),
            impression_truth_ece=metrics.calibration_errors(truth, student, bins)[0],
            impression_pred_avg=student.mean())
        for column, value in expected.items():
            assert _num(runs[name][column]) == pytest.approx(value, rel=1e-6), (name, column)
        assert _num(runs[name]["impression_rows"]) == p.clicks.size


@pytest.mark.e2e  # uses a full `pfdx compare` run (module fixture)
def test_ukd_student_trains_after_its_teacher(impressions):
    out, stdout = impressions
    runs = _rows(out / "runs.csv")
    names = [r["strategy"] for r in runs]
    assert names.index("ukd_teacher") + 1 == names.index("ukd")
    teacher, student = runs[names.index("ukd_teacher")], runs[names.index("ukd")]
    assert student["teacher_run"] == teacher["predictions"] and teacher["seed"] == student["seed"]
    assert stdout.index("ukd_teacher     seed 42") < stdout.index("ukd             seed 42")
    # Impression-space strategies train at their configured values: one trial each.
    trials = [(r["strategy"], json.loads(r["params"])) for r in _rows(out / "tuning.csv")]
    assert [t for t in trials if t[0] in ("taml", "ukd_teacher", "ukd")] == [
        ("taml", {}), ("ukd_teacher", {}), ("ukd", {})]
    assert stdout.index("[tuning ukd_teacher]") < stdout.index("[tuning ukd]")
    assert json.loads(student["params"]) == {} and json.loads(teacher["params"]) == {}


@pytest.mark.e2e  # uses a full `pfdx compare` run (module fixture)
def test_click_space_results_do_not_change_with_impression_strategies(impressions, outcome):
    (out, _), (baseline_out, _) = impressions, outcome
    run = {r["strategy"]: r for r in _rows(out / "runs.csv")}["ha_pfd_v2"]
    baseline = {r["strategy"]: r for r in _rows(baseline_out / "runs.csv")}["ha_pfd_v2"]
    for column in reports.METRICS:  # the impression-space scores are added, not changed
        if column != "seconds" and not column.startswith("impression_"):
            assert run[column] == baseline[column], column
    assert baseline["impression_truth_auc"] == "" and run["impression_truth_auc"] != ""
    np.testing.assert_array_equal(Predictions.load(str(out / run["predictions"])).student,
                                  Predictions.load(str(baseline_out / baseline["predictions"])).student)
    selected = [json.loads((o / "compare.json").read_text())["selection"]["selected"]
                for o in (out, baseline_out)]
    assert selected[0] == selected[1]


@pytest.mark.parametrize("named, expected", [
    (["none", "ukd"], ["none", "ukd_teacher", "ukd"]),
    (["ukd", "taml", "ukd_teacher"], ["ukd_teacher", "ukd", "taml"]),
    (["taml"], ["taml"]),
])
def test_ukd_brings_its_teacher_right_before_it(named, expected):
    config = load_config(None, ["compare.strategies=" + json.dumps(named)])
    assert strategies.strategies(config) == expected
    order = strategies.run_order(expected, [1, 2])
    if "ukd" in expected:
        i = order.index(("ukd_teacher", 1))
        assert order[i:i + 4] == [("ukd_teacher", 1), ("ukd", 1), ("ukd_teacher", 2), ("ukd", 2)]
    assert sorted(order) == sorted((n, s) for n in expected for s in (1, 2))


def test_default_strategies_are_the_click_space_ones():
    names = strategies.strategies(load_config(None, []))
    assert names and not set(names) & {"taml", "ukd_teacher", "ukd"}


def test_help_lists_every_strategy_name(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in registry.STRATEGIES:
        assert name in text, name


def test_a_new_run_starts_from_an_empty_work_folder(tmp_path):
    # A crashed run leaves TFT's temporary folder behind; its next run must not
    # trip over it ("Directory not empty" from WriteTransformFn).
    stale = tmp_path / "out" / compare.WORK_DIR / "train" / "transform" / "transform_tmp"
    stale.mkdir(parents=True)
    (stale / "half-written").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="--data: no file matches"):
        compare.run(load_config(None, []), str(tmp_path / "empty"), str(tmp_path / "out"),
                    log=lambda _: None)
    assert not (tmp_path / "out" / compare.WORK_DIR).exists()
