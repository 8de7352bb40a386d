"""Per-run tuning of a strategy on the validation split (`tuning` in the config).

A production run cannot assume the paper's regime (a teacher at AUC 0.97 that makes
λ 10 of Focal V2 a small correction): it measures its own, in two stages.

1. Setup, without distillation (every weight of the strategy's terms 0, and a
   teacher with its own embeddings, so the student trains exactly as it would
   alone): every combination of the grid's learning rates and privileged
   encodings. The learning rate is the one whose student scores best; the teacher's
   learning rate and the privileged encoding the ones whose *teacher* scores best
   (validation AUC) -- a distilled student can only be as good as what it learns
   from. Student and teacher are independent here, so each side's choice reads off
   the same trials; when the two rates differ, one more trial trains the pair.
2. Distillation, at the setup's learning rates and encoding: the configured values
   of the strategy's weights (the paper's, unless the config changes them) and up
   to `tuning.max_trials` points drawn from the rest of `tuning.grid` (seeded by
   `model.seed`), next to the setup's no-distillation winner. The best student wins,
   so tuning chooses distillation only when it helps on this log -- and, for the
   AUC, clearly: by more than `tuning.min_gain_se` standard errors of the paired
   difference on the validation rows (models/auc_difference.py), else the
   no-distillation point stays.

Each candidate trains on the train split with early stopping on the validation split
(models/training.py `Fitter.fit`) and is scored there by `tuning.metric`; a strategy
varies only what it reads (models/registry.py `tuning_keys`). Nothing here reads the eval
split. The Trainer (models/champion.py) and `pfdx compare` both call `tune`, then
make the best candidate their final model (`Fitter.finish`).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import random
import time
from typing import Any, Callable

import numpy as np

from pfdx.config import PipelineConfig
from pfdx.models import auc_difference, registry

LOWER_IS_BETTER = {"student_ece", "student_mce"}


@dataclasses.dataclass
class Trial:
    params: dict[str, Any]  # model settings (dotted paths) changed from the config
    metrics: dict[str, Any]  # the run's metrics (validation_* among them)
    seconds: float

    def score(self, metric: str) -> float:
        """Higher is better; NaN (e.g. an AUC of one class) never wins."""
        value = float(self.metrics.get(f"validation_{metric}", math.nan))
        return -value if metric in LOWER_IS_BETTER else value


@dataclasses.dataclass
class Outcome:
    best: Trial
    best_result: Any  # what `train` returned for the best trial
    trials: list[Trial]
    # A strategy whose setup stage trains the student alone (registry
    # `StrategySpec.setup_student_alone`): that stage's trials and its winner (trial,
    # result), which `student_alone` reads the student alone's tuning off.
    setup: list[Trial] = dataclasses.field(default_factory=list)
    no_distillation: tuple[Trial, Any] | None = None

    def table(self) -> list[dict[str, Any]]:
        """One plain row per trial, for reports and MLMD."""
        return [{"params": t.params, "seconds": round(t.seconds, 1),
                 **{k: v for k, v in t.metrics.items() if k.startswith("validation_")
                    or k in ("epochs_trained", "best_epoch")}} for t in self.trials]


def grid_for(config: PipelineConfig, strategy: str) -> dict[str, tuple[Any, ...]]:
    """`tuning.grid` for `strategy`: shared entries, replaced by `strategy:path`
    ones, restricted to the settings the strategy reads, sorted by path (the
    seeded draws of `distillation_candidates` follow this order)."""
    paths = registry.STRATEGIES[strategy].tuning_keys
    grid = {k: v for k, v in config.tuning.grid.items() if ":" not in k}
    grid.update({k.split(":", 1)[1]: v for k, v in config.tuning.grid.items()
                 if k.split(":", 1)[0] == strategy and ":" in k})
    return {p: tuple(grid[p]) for p in sorted(grid) if p in paths}


SETUP_FIELDS = ("learning_rate", "teacher_learning_rate", "privileged_encoding")


def _combinations(grid: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def _distinct(points: list[dict[str, Any]], config: PipelineConfig,
              seen: set | None = None) -> list[dict[str, Any]]:
    """`points` without repeats of the values the strategy reads (nor of `seen`)."""
    m, seen = config.model, set() if seen is None else seen
    paths = registry.STRATEGIES[m.strategy].tuning_keys
    out = []
    for point in points:
        key = tuple(point.get(p, m.get(p)) for p in paths)
        if key not in seen:
            seen.add(key)
            out.append(point)
    return out


def setup_candidates(config: PipelineConfig) -> list[dict[str, Any]]:
    """Stage 1: no distillation, at every learning rate x privileged encoding of the
    grid (the configured values when tuning is off)."""
    if not config.tuning.enabled:
        return [{}]
    grid = {f: v for f, v in grid_for(config, config.model.strategy).items() if f in SETUP_FIELDS}
    base = registry.STRATEGIES[config.model.strategy].no_distillation()
    return _distinct([{**base, **point} for point in _combinations(grid)], config)


def distillation_candidates(config: PipelineConfig, setup: dict[str, Any]) -> list[dict[str, Any]]:
    """Stage 2 at the chosen `setup` point: the configured weights, then up to
    `tuning.max_trials` draws of the other grid settings; none that repeats `setup`."""
    m = config.model
    if not config.tuning.enabled or not registry.STRATEGIES[m.strategy].no_distillation():
        return []  # nothing to weigh (`none`, EKTF's own heads)
    fixed = {f: v for f, v in setup.items() if f in SETUP_FIELDS}
    grid = {f: v for f, v in grid_for(config, m.strategy).items() if f not in SETUP_FIELDS}
    drawn = _combinations(grid)
    random.Random(m.seed).shuffle(drawn)
    seen: set = set()
    _distinct([setup], config, seen)
    points = _distinct([fixed] + [{**fixed, **d} for d in drawn], config, seen)
    return points[:1 + config.tuning.max_trials]


def tune(config: PipelineConfig, train: Callable[[PipelineConfig, str], Any],
         log: Callable[[str], None] = lambda _: None) -> Outcome:
    """The two stages of the module docstring; `train(config, trial_name)` returns
    an object with `.metrics` (models/training.py `Result`). The setup stage holds
    its results until it has chosen; the distillation stage only its leading one."""
    metric = config.tuning.metric
    trials: list[Trial] = []

    def run(points: list[dict[str, Any]], stage: str,
            leader_only: bool = False) -> list[tuple[Trial, Any]]:
        """The stage's (trial, result) pairs; `leader_only`: a trial's result is
        dropped (None) once another trial leads the stage, the only result that can
        still win it (`_best` keeps the first of equal scores)."""
        out = []
        for point in points:
            start = time.perf_counter()
            result = train(config.with_model(point), f"{stage}-{len(trials)}")
            trial = Trial(point, dict(result.metrics), time.perf_counter() - start)
            trials.append(trial)
            teacher = trial.metrics.get("validation_teacher_auc")
            log(f"{stage} trial {len(trials) - 1} {point or '(configured values)'}: validation "
                f"{metric} {trial.metrics.get(f'validation_{metric}', math.nan):.4f}"
                + (f", teacher AUC {teacher:.4f}" if teacher is not None else "")
                + f", {trial.metrics.get('best_epoch')} epoch(s)")
            out.append((trial, result))
            if leader_only:
                leader = _best(out, lambda t: t.score(metric))
                # A result holds a model, its tables and optimizer slots: the others go.
                out = [pair if pair is leader else (pair[0], None) for pair in out]
                del result, leader
        return out

    setup = run(setup_candidates(config), "setup")
    lr = _best(setup, lambda t: t.score(metric))[0].params.get("learning_rate")
    if registry.STRATEGIES[config.model.strategy].tunes_teacher:
        # The teacher's best trial gives its learning rate and the encoding; the
        # student's at that encoding is the one at its own rate (no distillation and
        # no shared embeddings: the two sides did not interact). A tie keeps one rate.
        best = _best(sorted(setup, key=lambda pair: pair[0].params.get("learning_rate") != lr),
                     lambda t: float(t.metrics.get("validation_teacher_auc", math.nan)))
        teacher_lr = best[0].params.get("learning_rate")
        encoding = {k: v for k, v in best[0].params.items() if k != "learning_rate"}
        chosen = next((t, r) for t, r in setup if t.params.get("learning_rate") == lr and {
            k: v for k, v in t.params.items() if k != "learning_rate"} == encoding)
        if teacher_lr != lr:
            chosen = run([{**chosen[0].params, "teacher_learning_rate": teacher_lr}], "setup")[0]
    else:  # the encodings trained the same student: without a teacher (MTL) it decides
        chosen = _best([(t, r) for t, r in setup if t.params.get("learning_rate") == lr],
                       lambda t: t.score(metric))
    setup_trials = [t for t, _ in setup]
    del setup
    distillation = run(distillation_candidates(config, chosen[0].params), "distillation",
                       leader_only=True)
    best = _best([chosen] + distillation, lambda t: t.score(metric))
    if best is not chosen and not _clearly_ahead(config, best, chosen, log):
        best = chosen
    if config.tuning.enabled and registry.STRATEGIES[config.model.strategy].setup_student_alone:
        return Outcome(best[0], best[1], trials, setup_trials, chosen)
    return Outcome(best[0], best[1], trials)


def student_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """A trial's metrics without its teacher's: what the student alone would have."""
    return {k: v for k, v in metrics.items() if "teacher" not in k}


def student_alone(config: PipelineConfig, beside: Outcome,
                  convert: Callable[[PipelineConfig, Any], Any]) -> Outcome | None:
    """The student alone's tuning (`config`: strategy `none`) read off `beside`, the
    tuning of a strategy whose setup stage trained that very student at each learning
    rate (`Outcome.setup`; tests/test_models_setup_student.py checks it to the bit):
    one trial per rate of `config`'s grid, with the student's validation metrics; the
    best is the setup's winner, whose result `convert(config, result)` makes a `none`
    one (models/training.py `Fitter.student_alone`). Saves the student alone's own
    trials, 2 of `make run`'s 13-14 trainings. None when it cannot: no such stage,
    a rate the stage did not train, or `model.refit` off (the shipped model would be
    the converted one, whose optimizer never stepped)."""
    if beside.no_distillation is None or not config.model.refit:
        return None
    default = config.model.learning_rate
    trials = []
    for point in setup_candidates(config):
        rate = point.get("learning_rate", default)
        trial = next((t for t in beside.setup if t.params.get("learning_rate", default) == rate),
                     None)
        if trial is None:
            return None
        trials.append(Trial(dict(point), student_metrics(trial.metrics), trial.seconds))
    best = _best([(t, None) for t in trials], lambda t: t.score(config.tuning.metric))[0]
    winner, result = beside.no_distillation
    if winner.params.get("learning_rate", default) != best.params.get("learning_rate", default):
        return None  # the same students score the same: only if that did not hold
    return Outcome(best, convert(config.with_model(best.params), result), trials)


def _clearly_ahead(config: PipelineConfig, rival: tuple[Trial, Any], chosen: tuple[Trial, Any],
                   log: Callable[[str], None]) -> bool:
    """Whether `rival` (distillation) beats `chosen` (none) by more than
    `tuning.min_gain_se` standard errors of their validation AUC difference; recorded
    in the rival's metrics. Only the AUC has one; a result without validation
    predictions (a stand-in) is taken at its score."""
    k, metric = config.tuning.min_gain_se, config.tuning.metric
    a, b = (getattr(result, "validation", None) for _, result in (rival, chosen))
    if k == 0 or metric != "student_auc" or a is None or b is None:
        return True
    a, b = a.clicked(), b.clicked()
    if not np.array_equal(a.labels, b.labels):
        raise ValueError("tuning: two trials' validation predictions are not of the same rows")
    gain, se = auc_difference.lead(a.labels, a.student, b.student)
    rival[0].metrics.update(validation_gain=gain, validation_gain_se=se)
    ahead = bool(gain > k * se)  # NaN (one class): not ahead
    log(f"distillation ahead of no distillation by {gain:.4f} AUC, {k:g} standard error(s) "
        f"{k * se:.4f}: " + ("distillation" if ahead else "no distillation") + " kept")
    return ahead


def reuse(config: PipelineConfig, params: dict[str, Any],
          train: Callable[[PipelineConfig, str], Any]) -> Outcome:
    """No tuning: one candidate at `params` (a warm start keeps the values its base
    run chose, models/champion.py), as an Outcome of one trial."""
    start = time.perf_counter()
    result = train(config.with_model(params), "warm")
    trial = Trial(dict(params), dict(result.metrics), time.perf_counter() - start)
    return Outcome(trial, result, [trial])


def _best(pairs: list[tuple[Trial, Any]], score: Callable[[Trial], float]):
    """The pair with the highest score; NaN never wins over a number (None: empty)."""
    best = None
    for pair in pairs:
        value = score(pair[0])
        if best is None or (not math.isnan(value) and (
                math.isnan(score(best[0])) or value > score(best[0]))):
            best = pair
    return best
