"""Named regimes of the simulated log (simulator/README.md documents and measures each).

A scenario is a handful of knobs on one generative story (simulate.py):
conversion = click ∧ (cvr_bias + intent + ε > 0), ε ~ Logistic(0, 1), so
true_cvr = sigmoid(cvr_bias + intent); post-click signals read intent + w·ε.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    # Intercepts of the click and conversion logits: set CTR and CVR among clicks.
    ctr_bias: float = -3.6
    cvr_bias: float = -2.9
    # Zipf exponent of user and ad popularity: at 1.1 the top user has ~15 % of all
    # impressions, so a log's rates swing with a few users' traits.
    popularity_skew: float = 1.1
    # Multiplies the part of the intent that regular features show (user, ad, context).
    visible_scale: float = 1.0
    # log of a user's typical past click count: a deeper history makes the request-time
    # counters (`user_past_clicks`, `user_past_conversions`) sharper reads of the user.
    history_log_mean: float = 2.0
    # Spread of `session_intent`, the part no regular feature shows.
    private_sd: float = 1.2
    # w: how much of this click's own outcome noise ε the post-click signals read.
    outcome_weight: float = 0.0
    # ρ: share of `session_intent` in the click logit (sample-selection bias).
    selection_share: float = 0.0


# Moderate: the regular features show a little more than half of the intent, the
# signals know a little of the outcome, the click a little of the private intent.
# `make run` and most tests use it.
_DEFAULT = Scenario("default", ctr_bias=-3.8, cvr_bias=-3.4, popularity_skew=0.8,
                    visible_scale=1.4, history_log_mean=3.5, private_sd=1.0,
                    outcome_weight=0.3, selection_share=0.15)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    _DEFAULT,
    # HA-PFD Table 2's regime: regular features show most of the intent (student
    # ~0.9), the signals much of the rest (teacher ~0.97), label average ~0.12.
    Scenario("paper", cvr_bias=-4.9, popularity_skew=0.8, visible_scale=3.0,
             history_log_mean=5.5, private_sd=0.8, outcome_weight=0.4),
    # `default` with the click driven by the private intent: clicked rows convert far
    # more than unclicked ones for reasons no regular feature shows.
    dataclasses.replace(_DEFAULT, name="selection-bias", selection_share=0.7),
    # The field defaults: the generator before v2 (signals blind to the outcome, no
    # selection bias), which made the results committed before it.
    Scenario("v1"),
)}


def get(name: str) -> Scenario:
    """The scenario called `name`; an unknown name lists the valid ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown simulator scenario {name!r}; expected one of "
                         f"{', '.join(SCENARIOS)}") from None
