"""Which student a run ships: the tuned distilled student, or the student alone.

Every click-space run trains the configured strategy, tuned on the validation split
(models/tuning.py), and the student alone (`none`, its learning rate tuned the same
way) on the same splits; when the strategy's setup stage trained the student alone's
very student at each rate, its trials are read off that stage instead of trained
again (`tuning.student_alone`). The baseline gate (`gate`) ships the distilled student
only if, on the eval split, it is not worse than the student alone on AUC and ECE
(`evaluation.baseline_*_tolerance`); otherwise the student alone ships, and the run
says why. When no privileged feature survived selection there is nothing to distil:
only the student alone trains and ships. The Evaluator then judges whatever ships
against the last blessed model and the absolute thresholds (pipeline/evaluation.py).

Impression-space strategies (TAML, UKD) train once at their configured values: a
tuned grid over every impression is many times the cost of a click-space run.

A warm-started run (models/warm_start.py) does not re-tune a side its base run saved:
that side trains once at the values the base chose (`base_params`), from the base's
weights; the values decide the model's shape (privileged encoding, shared tables),
so other values could not start from those weights. A side the base did not save
is tuned and starts cold. The gate then judges both sides as in any run.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

from pfdx.config import EvaluationConfig, PipelineConfig
from pfdx.models import registry, tuning

BASELINE = "none"
# Values of `shipped` (training_metrics.json, MLMD); printed with spaces for underscores.
DISTILLED, STUDENT_ALONE = "distilled_student", "student_alone"


@dataclasses.dataclass(frozen=True)
class Decision:
    shipped: str  # DISTILLED | STUDENT_ALONE
    reason: str


def gate(distilled: dict[str, float], baseline: dict[str, float],
         e: EvaluationConfig) -> Decision:
    """The baseline gate on eval metrics (`student_auc`, `student_ece` of each)."""
    auc, base_auc = distilled["student_auc"], baseline["student_auc"]
    ece, base_ece = distilled["student_ece"], baseline["student_ece"]
    failures = []
    if math.isnan(auc) or auc < base_auc - e.baseline_auc_tolerance:
        failures.append(f"AUC {auc:.4f} < the student alone's {base_auc:.4f}"
                        + (f" - {e.baseline_auc_tolerance:g}" if e.baseline_auc_tolerance else ""))
    if math.isnan(ece) or ece > base_ece + e.baseline_ece_tolerance:
        failures.append(f"ECE {ece:.4f} > the student alone's {base_ece:.4f} + "
                        f"{e.baseline_ece_tolerance:g}")
    if failures:
        return Decision(STUDENT_ALONE, "the distilled student is worse than the student "
                        "alone on eval: " + "; ".join(failures))
    return Decision(DISTILLED, f"the distilled student is not worse than the student alone "
                    f"on eval (AUC {auc:.4f} vs {base_auc:.4f}, ECE {ece:.4f} vs {base_ece:.4f})")


@dataclasses.dataclass
class Side:
    """One student of the run: its tuning and its final (shipped-or-not) result."""

    tuning: tuning.Outcome
    final: Any  # models/training.py Result: eval metrics, model, predictions

    def summary(self) -> dict[str, Any]:
        return {"chosen": self.tuning.best.params, "metrics": self.final.metrics,
                "trials": self.tuning.table()}


@dataclasses.dataclass
class Champion:
    """What a run trained and what it ships."""

    decision: Decision
    baseline: Side
    distilled: Side | None  # None: nothing to distil, or the strategy is `none`

    @property
    def shipped(self) -> Any:
        """The shipped Result."""
        side = self.distilled if self.decision.shipped == DISTILLED else self.baseline
        return side.final

    def trained(self) -> dict[str, Side]:
        """Strategy -> the side trained for it (what a warm start can continue)."""
        sides = [self.baseline] + ([self.distilled] if self.distilled is not None else [])
        return {side.final.model.config.strategy: side for side in sides}

    def metrics(self) -> dict[str, Any]:
        """training_metrics.json: the shipped student's metrics at top level (eval
        split; the teacher's too when there is one), then each side's metrics, tuning
        trials and chosen values, and the decision."""
        out = dict(self.shipped.metrics)
        out.update(shipped=self.decision.shipped, ship_reason=self.decision.reason,
                   student_alone=self.baseline.summary())
        if self.distilled is not None:
            out["distilled"] = self.distilled.summary()
            # The teacher is the distilled run's even when the student alone ships.
            out.update({k: v for k, v in self.distilled.final.metrics.items()
                        if k.startswith("teacher_")})
        return out


def train_champion(config: PipelineConfig, fitter: Any, privileged_inputs: bool,
                   log: Callable[[str], None] = lambda _: None,
                   base_params: Mapping[str, dict[str, Any]] = {}) -> Champion:
    """Tunes the configured strategy and the student alone with `fitter.fit(config,
    name)` on the validation split, makes each side's best into its final model with
    `fitter.finish(config, fitted, name)` (models/training.py `Fitter`), then gates on
    eval. `privileged_inputs`: whether any privileged feature survived selection.
    `base_params`: strategy -> the values a warm start's base run chose (not tuned)."""

    strategy = config.model.strategy

    def side(side_config: PipelineConfig, beside: tuning.Outcome | None = None) -> Side:
        name = side_config.model.strategy

        def train(c: PipelineConfig, trial: str) -> Any:
            return fitter.fit(c, f"{name}-{trial}")

        outcome = None
        if name in base_params:
            outcome = tuning.reuse(side_config, base_params[name], train)
        elif beside is not None:
            outcome = tuning.student_alone(side_config, beside, fitter.student_alone)
            if outcome is not None:
                metric = f"validation_{config.tuning.metric}"
                log(f"{name}: trials read off {strategy}'s setup stage (the same students), "
                    f"{metric}: " + ", ".join(f"{t.params} {t.metrics.get(metric, math.nan):.4f}"
                                              for t in outcome.trials))
        if outcome is None:
            outcome = tuning.tune(side_config, train, lambda line: log(f"{name}: {line}"))
        final = fitter.finish(side_config.with_model(outcome.best.params),
                              outcome.best_result, f"{name}-final")
        return Side(outcome, final)

    alone = config.with_model({"strategy": BASELINE})
    if strategy == BASELINE:
        return Champion(Decision(STUDENT_ALONE, "model.strategy is 'none': the student "
                                 "alone"), side(alone), None)
    if not privileged_inputs:
        return Champion(Decision(
            STUDENT_ALONE, f"no privileged feature survived selection: nothing to distil, "
            f"so {strategy!r} was not trained and the student alone ships"), side(alone), None)
    # The distilled side first: its setup stage may train the student alone's trials.
    distilled = side(config)
    baseline = side(alone, distilled.tuning)
    distilled.tuning.no_distillation = None  # its model is not needed any more
    decision = gate(distilled.final.metrics, baseline.final.metrics, config.evaluation)
    none = registry.STRATEGIES[strategy].no_distillation()
    params = distilled.tuning.best.params
    if decision.shipped == DISTILLED and none and all(params.get(k) == v for k, v in none.items()):
        decision = dataclasses.replace(decision, reason=(
            f"{decision.reason}; tuning kept no distillation (every term weight 0), so this "
            "student trained as it would alone, beside its teacher"))
    return Champion(decision, baseline, distilled)
