"""Which strategies a comparison trains, in which example space and in which order."""
from __future__ import annotations

from typing import Sequence

from pfdx.config import IMPRESSION_SPACE_STRATEGIES, ConfigError, PipelineConfig
from pfdx.features.contract import CLICK, IMPRESSION
# UKD's two stages: the teacher's served student pseudo-labels the student's batches.
UKD_TEACHER, UKD = "ukd_teacher", "ukd"


def space_of(name: str) -> str:
    """The example space strategy `name` trains in (`PipelineConfig.space`)."""
    return IMPRESSION if name in IMPRESSION_SPACE_STRATEGIES else CLICK


def strategies(config: PipelineConfig) -> list[str]:
    """The strategies to run, in table order: `compare.strategies`, or every
    click-space strategy. `ukd` brings `ukd_teacher`, placed right before it."""
    from pfdx.models.strategies import STRATEGIES

    click_space = [n for n in STRATEGIES if space_of(n) == CLICK]
    names = list(config.compare.strategies) or click_space
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise ConfigError(f"compare.strategies: unknown {unknown}; one of {sorted(STRATEGIES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"compare.strategies: {names} names a strategy twice")
    impression = [n for n in names if space_of(n) == IMPRESSION]
    if impression and config.data.columns.click is None:
        raise ConfigError(f"compare.strategies: {impression} train on every impression and "
                          "need data.columns.click")
    for key in config.tuning.grid:
        prefix = key.rsplit(":", 1)[0] if ":" in key else None
        if prefix is not None and prefix not in STRATEGIES:
            raise ConfigError(f"tuning.grid.{key}: unknown strategy {prefix!r}")
    if UKD in names:
        names = [n for n in names if n != UKD_TEACHER]
        names.insert(names.index(UKD), UKD_TEACHER)
    return names


def run_order(names: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """(strategy, seed) in training order: strategy by strategy, every seed, except
    that each `ukd` seed runs right after the `ukd_teacher` of the same seed (so one
    teacher at a time is kept for its student)."""
    order = []
    for name in names:
        if name == UKD:
            continue
        for seed in seeds:
            order.append((name, seed))
            if name == UKD_TEACHER and UKD in names:
                order.append((UKD, seed))
    return order
