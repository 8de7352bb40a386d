"""Per-run tuning (candidates, choice on validation) and the baseline gate."""
import math
import weakref
from types import SimpleNamespace

import numpy as np
import pytest

from pfdx.config import EvaluationConfig, load_config
from pfdx.models import champion, registry, strategies, tuning


def _config(*overrides):
    return load_config(None, list(overrides))


NO_DISTILLATION = {"alignment.weight": 0.0, "kd.lam": 0.0, "share_embeddings": False}


def test_setup_trains_every_learning_rate_and_encoding_without_distillation():
    config = _config("model.strategy=ha_pfd_v2")
    points = tuning.setup_candidates(config)
    assert [(p["learning_rate"], p["privileged_encoding"]) for p in points] == [
        (0.0025, "binary"), (0.0025, "quantiles"), (0.025, "binary"), (0.025, "quantiles")]
    assert all({k: p[k] for k in NO_DISTILLATION} == NO_DISTILLATION for p in points)
    # `none` reads only the learning rate.
    assert tuning.setup_candidates(_config("model.strategy=none")) == [
        {"learning_rate": 0.0025}, {"learning_rate": 0.025}]


def test_distillation_stage_keeps_the_setup_and_starts_from_the_configured_weights():
    config = _config("model.strategy=ha_pfd_v2", "tuning.max_trials=3")
    setup = {**NO_DISTILLATION, "learning_rate": 0.025, "privileged_encoding": "quantiles"}
    points = tuning.distillation_candidates(config, setup)
    fixed = {"learning_rate": 0.025, "privileged_encoding": "quantiles"}
    assert points[0] == fixed and len(points) == 4
    assert all({k: p[k] for k in fixed} == fixed for p in points)
    assert all(set(p) <= set(registry.STRATEGIES["ha_pfd_v2"].tuning_keys) for p in points)
    assert len({tuple(sorted(p.items())) for p in points}) == 4
    # No weights to tune: no second stage.
    assert tuning.distillation_candidates(_config("model.strategy=none"), {}) == []


def test_a_strategy_specific_grid_entry_replaces_the_shared_one():
    config = _config("model.strategy=kd", "tuning.max_trials=50",
                     'tuning.grid={"kd.lam": [1, 10], "kd:kd.lam": [3], "learning_rate": [0.0025]}')
    points = tuning.distillation_candidates(config, {"kd.lam": 0.0, "learning_rate": 0.0025})
    assert [p.get("kd.lam") for p in points] == [None, 3]


def test_tuning_off_trains_the_configured_values_only():
    config = _config("tuning.enabled=false")
    assert tuning.setup_candidates(config) == [{}]
    assert tuning.distillation_candidates(config, {}) == []


def test_every_strategy_declares_its_term_weights():
    assert set(registry.STRATEGIES) == set(strategies.STRATEGIES)
    settings = set(load_config().model.setting_types())
    assert all(set(s.term_weights) <= settings for s in registry.STRATEGIES.values())


def _fake_train(score):
    """A train function whose validation metrics are `score(model config)`."""
    calls = []

    def train(config, name):
        calls.append(config.model)
        return SimpleNamespace(metrics=score(config.model))
    return train, calls


def test_setup_picks_the_student_learning_rate_and_the_teacher_encoding():
    config = _config("model.strategy=ha_pfd_v2", "tuning.max_trials=1",
                     'tuning.grid={"kd.lam": [1], "learning_rate": [0.0025, 0.025], '
                     '"privileged_encoding": [binary, quantiles]}')

    def score(m):
        student = {0.0025: 0.70, 0.025: 0.72}[m.learning_rate] + 0.05 * (m.kd.lam == 1)
        teacher = {"binary": 0.80, "quantiles": 0.85}[m.privileged_encoding]
        return {"validation_student_auc": student, "validation_teacher_auc": teacher}

    train, calls = _fake_train(score)
    outcome = tuning.tune(config, train)
    assert len(calls) == 4 + 2  # setup grid, then the configured weights and one draw
    second_stage = calls[4:]
    assert {(m.learning_rate, m.privileged_encoding) for m in second_stage} == {(0.025, "quantiles")}
    assert outcome.best.params["kd.lam"] == 1 and outcome.best.params["learning_rate"] == 0.025



def test_setup_gives_the_teacher_its_own_learning_rate_when_it_prefers_another():
    config = _config("model.strategy=ha_pfd_v2", "tuning.max_trials=0",
                     'tuning.grid={"learning_rate": [0.0025, 0.025], '
                     '"privileged_encoding": [binary, quantiles]}')

    def score(m):
        student = {0.0025: 0.70, 0.025: 0.72}[m.learning_rate]
        teacher = ({0.0025: 0.86, 0.025: 0.80}[m.teacher_learning_rate or m.learning_rate]
                   + 0.01 * (m.privileged_encoding == "binary"))
        return {"validation_student_auc": student, "validation_teacher_auc": teacher}

    train, calls = _fake_train(score)
    outcome = tuning.tune(config, train)
    # The grid, then the pair: the student's rate, the teacher's rate and encoding.
    assert len(calls) == 4 + 1 + 1  # + the configured weights at that point
    pair = calls[4]
    assert (pair.learning_rate, pair.teacher_learning_rate, pair.privileged_encoding) == (
        0.025, 0.0025, "binary")
    assert (pair.kd.lam, pair.alignment.weight, pair.share_embeddings) == (0.0, 0.0, False)
    assert outcome.best.params["teacher_learning_rate"] == 0.0025
    assert {(m.learning_rate, m.teacher_learning_rate) for m in calls[5:]} == {(0.025, 0.0025)}
    # Agreeing sides: no extra trial, one rate for both.
    train, calls = _fake_train(lambda m: {"validation_student_auc": 0.7,
                                          "validation_teacher_auc": 0.8})
    assert "teacher_learning_rate" not in tuning.tune(config, train).best.params
    assert len(calls) == 4 + 1

def test_tune_keeps_the_no_distillation_point_when_distillation_loses_and_nan_never_wins():
    config = _config("model.strategy=kd", "model.kd.lam=10", 'tuning.grid={"kd.lam": [1]}')
    scores = {0.0: 0.72, 10.0: math.nan, 1.0: 0.70}
    train, calls = _fake_train(lambda m: {"validation_student_auc": scores[m.kd.lam]})
    outcome = tuning.tune(config, train)
    assert [m.kd.lam for m in calls] == [0.0, 10.0, 1.0]
    assert outcome.best.params == {"kd.lam": 0.0, "share_embeddings": False}
    assert outcome.best_result.metrics["validation_student_auc"] == 0.72
    # A lower-is-better metric flips the choice.
    config = _config("model.strategy=kd", "model.kd.lam=10", 'tuning.grid={"kd.lam": [1]}',
                     "tuning.metric=student_ece")
    scores = {0.0: 0.05, 10.0: 0.01, 1.0: 0.02}
    train, _ = _fake_train(lambda m: {"validation_student_ece": scores[m.kd.lam]})
    outcome = tuning.tune(config, train)
    assert outcome.best.params == {}


class _Result:
    """A stand-in trial result that can be referenced weakly (a SimpleNamespace cannot)."""

    def __init__(self, metrics):
        self.metrics = metrics


def test_the_distillation_stage_holds_only_the_result_leading_it():
    config = _config("model.strategy=kd", "model.kd.lam=10", "tuning.max_trials=4",
                     'tuning.grid={"kd.lam": [1, 2, 3, 5]}')
    scores = {0.0: 0.70, 10.0: 0.71, 1.0: 0.73, 2.0: 0.74, 3.0: 0.74, 5.0: 0.72}
    distilled, alive_at_start = [], []

    def train(config, name):
        if name.startswith("distillation"):
            alive_at_start.append(sum(r() is not None for _, r in distilled))
        result = _Result({"validation_student_auc": scores[config.model.kd.lam]})
        if name.startswith("distillation"):
            distilled.append((config.model.kd.lam, weakref.ref(result)))
        return result

    outcome = tuning.tune(config, train)
    assert len(distilled) == 5
    # Every trial after the first starts beside the one result leading so far.
    assert alive_at_start == [0, 1, 1, 1, 1]
    # The first of the two best (2 and 3 tie) wins, as when every result was held.
    lams = [lam for lam, _ in distilled]
    winner = min((lam for lam in lams if scores[lam] == 0.74), key=lams.index)
    assert outcome.best.params["kd.lam"] == winner
    assert outcome.best_result is dict(distilled)[winner]()
    assert [lam for lam, r in distilled if r() is not None] == [winner]


def _validation(labels, scores):
    """A train result on `scores` of the validation rows `labels`, with its AUC."""
    from sklearn.metrics import roc_auc_score

    from pfdx.models.predictions import Predictions

    return SimpleNamespace(metrics={"validation_student_auc": roc_auc_score(labels, scores)},
                           validation=Predictions(labels, scores, None, None))


def _rival(labels, base, clear: bool):
    """Scores ahead of `base` (labels + N(0, 1.5) noise): by moving every positive up
    (clear), or another draw of the same noise that happens to rank a little better."""
    from sklearn.metrics import roc_auc_score

    if clear:
        return base + 0.5 * labels
    for seed in range(100):
        noisy = labels + np.random.default_rng(seed).normal(0, 1.5, len(base))
        if roc_auc_score(labels, noisy) > roc_auc_score(labels, base):
            return noisy
    raise AssertionError("no noisy rival ahead")


@pytest.mark.parametrize("distilled", [False, True])
def test_distillation_must_be_ahead_by_more_than_a_standard_error(distilled):
    """A rival whose lead is noise keeps the no-distillation point; a clear lead wins."""
    rng = np.random.default_rng(0)
    labels = (rng.random(3000) < 0.3).astype(int)
    base = labels + rng.normal(0, 1.5, 3000)
    results = {0.0: _validation(labels, base),
               10.0: _validation(labels, _rival(labels, base, clear=distilled))}
    config = _config("model.strategy=kd", "model.kd.lam=10", "tuning.max_trials=0")
    lines = []
    outcome = tuning.tune(config, lambda c, name: results[c.model.kd.lam], log=lines.append)
    gain = outcome.trials[-1].metrics["validation_gain"]
    assert gain > 0 and outcome.trials[-1].metrics["validation_gain_se"] > 0
    assert (outcome.best.params.get("kd.lam") is None) == distilled
    assert lines[-1].endswith(("distillation" if distilled else "no distillation") + " kept")
    # With no margin, any lead wins.
    config = _config("model.strategy=kd", "model.kd.lam=10", "tuning.max_trials=0",
                     "tuning.min_gain_se=0")
    assert "kd.lam" not in tuning.tune(config, lambda c, name: results[c.model.kd.lam]).best.params


GATE = EvaluationConfig(baseline_auc_tolerance=0.0, baseline_ece_tolerance=0.005)


@pytest.mark.parametrize("distilled, shipped", [
    ({"student_auc": 0.71, "student_ece": 0.020}, champion.DISTILLED),
    ({"student_auc": 0.70, "student_ece": 0.024}, champion.DISTILLED),   # ties, within ECE tolerance
    ({"student_auc": 0.69, "student_ece": 0.010}, champion.STUDENT_ALONE),  # loses on AUC
    ({"student_auc": 0.75, "student_ece": 0.030}, champion.STUDENT_ALONE),  # loses on ECE
    ({"student_auc": math.nan, "student_ece": 0.010}, champion.STUDENT_ALONE),
])
def test_the_gate_refuses_a_distilled_student_that_loses_to_the_baseline(distilled, shipped):
    baseline = {"student_auc": 0.70, "student_ece": 0.020}
    decision = champion.gate(distilled, baseline, GATE)
    assert decision.shipped == shipped
    if shipped == champion.STUDENT_ALONE:
        assert "worse than the student alone" in decision.reason


def _fitter(auc_by_strategy):
    """A Fitter stand-in: every model of a strategy scores `auc_by_strategy[it]` (or
    that function of its config)."""
    trained = []

    def fit(config, name):
        trained.append(config.model.strategy)
        auc = auc_by_strategy[config.model.strategy]
        auc = auc(config) if callable(auc) else auc
        m = {"validation_student_auc": auc, "best_epoch": 1}
        if config.model.strategy != "none":
            m["validation_teacher_auc"] = 0.9
        return SimpleNamespace(metrics=m, name=config.model.strategy)

    def finish(config, fitted, name):
        m = dict(fitted.metrics, student_auc=fitted.metrics["validation_student_auc"],
                 student_ece=0.01)
        if "validation_teacher_auc" in m:
            m["teacher_auc"] = m["validation_teacher_auc"]
        return SimpleNamespace(metrics=m, name=fitted.name)

    def student_alone(config, fitted):
        return SimpleNamespace(metrics=dict(fitted.metrics), name="none")
    return SimpleNamespace(fit=fit, finish=finish, student_alone=student_alone), trained


def test_train_champion_ships_the_student_alone_when_distillation_loses():
    # Without refit the student alone trains its own trials (scored apart here).
    config = _config("model.strategy=ha_pfd_v2", "tuning.max_trials=0", "model.refit=false")
    fitter, trained = _fitter({"none": 0.8, "ha_pfd_v2": 0.7})
    result = champion.train_champion(config, fitter, privileged_inputs=True)
    assert result.decision.shipped == champion.STUDENT_ALONE
    assert result.shipped.name == "none"
    metrics = result.metrics()
    assert metrics["shipped"] == champion.STUDENT_ALONE and metrics["teacher_auc"] == 0.9
    assert {k: metrics["distilled"]["trials"][0]["params"][k] for k in NO_DISTILLATION} \
        == NO_DISTILLATION
    assert set(trained) == {"none", "ha_pfd_v2"}


@pytest.mark.parametrize("gain, kept", [(0.0, True), (0.1, False)])
def test_a_shipped_distilled_student_says_when_tuning_kept_no_distillation(gain, kept):
    config = _config("model.strategy=ha_pfd_v2", "tuning.max_trials=0", "tuning.min_gain_se=0",
                     "model.refit=false")
    fitter, _ = _fitter({"none": 0.8, "ha_pfd_v2": lambda c: 0.8 + gain * (c.model.kd.lam > 0)})
    result = champion.train_champion(config, fitter, privileged_inputs=True)
    assert result.decision.shipped == champion.DISTILLED
    assert ("tuning kept no distillation" in result.decision.reason) == kept


def test_the_student_alone_is_read_off_the_setup_stage_that_trained_it():
    config = _config("model.strategy=ha_pfd_v2", "tuning.max_trials=0")
    auc = {0.0025: 0.70, 0.025: 0.75}
    fitter, trained = _fitter({"none": 0.8, "ha_pfd_v2": lambda c: auc[c.model.learning_rate]})
    converted = []

    def student_alone(c, fitted):
        converted.append((c.model.strategy, c.model.learning_rate, fitted.name))
        return SimpleNamespace(metrics=dict(fitted.metrics), name="none")

    fitter.student_alone = student_alone
    result = champion.train_champion(config, fitter, privileged_inputs=True)
    assert set(trained) == {"ha_pfd_v2"}  # no trial of its own
    assert converted == [("none", 0.025, "ha_pfd_v2")]  # the setup stage's winner
    alone = result.metrics()["student_alone"]
    assert alone["chosen"] == {"learning_rate": 0.025}
    assert [(t["params"], t["validation_student_auc"]) for t in alone["trials"]] == [
        ({"learning_rate": 0.0025}, 0.70), ({"learning_rate": 0.025}, 0.75)]
    assert not any("teacher" in k for t in alone["trials"] for k in t)
    # Other rates than the setup stage trained, or no setup stage: its own trials.
    for override in ('tuning.grid={"none:learning_rate": [0.01], "learning_rate": [0.0025]}',
                     "tuning.enabled=false", "model.strategy=ektf"):
        fitter, trained = _fitter({"none": 0.8, "ha_pfd_v2": 0.7, "ektf": 0.7})
        champion.train_champion(_config("model.strategy=ha_pfd_v2", "tuning.max_trials=0",
                                        override), fitter, privileged_inputs=True)
        assert "none" in trained


def test_nothing_to_distil_trains_and_ships_the_student_alone():
    config = _config("model.strategy=ha_pfd_v2", "tuning.max_trials=0")
    fitter, trained = _fitter({"none": 0.8, "ha_pfd_v2": 0.9})
    result = champion.train_champion(config, fitter, privileged_inputs=False)
    assert set(trained) == {"none"}
    assert result.decision.shipped == champion.STUDENT_ALONE
    assert "no privileged feature survived selection" in result.decision.reason
    assert "distilled" not in result.metrics()
