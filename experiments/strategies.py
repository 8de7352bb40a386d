"""Which strategies a comparison trains, in which example space and in which order."""
from __future__ import annotations

from typing import Sequence

from pfdx.config import ConfigError, PipelineConfig
from pfdx.models.registry import CLICK, IMPRESSION, STRATEGIES, names as registry_names


def space_of(name: str) -> str:
    """The example space strategy `name` trains in (`PipelineConfig.space`)."""
    return STRATEGIES[name].space


def teacher_stage(name: str) -> str | None:
    """The strategy whose trained student pseudo-labels `name`'s batches (UKD's)."""
    return STRATEGIES[name].teacher_stage


def strategies(config: PipelineConfig) -> list[str]:
    """The strategies to run, in table order: `compare.strategies`, or every
    click-space strategy. A strategy with a teacher stage (`ukd`) brings it
    (`ukd_teacher`), placed right before it."""
    names = list(config.compare.strategies) or registry_names(CLICK)
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
    for student in [n for n in names if teacher_stage(n) is not None]:
        names = [n for n in names if n != teacher_stage(student)]
        names.insert(names.index(student), teacher_stage(student))
    return names


def run_order(names: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """(strategy, seed) in training order: strategy by strategy, every seed, except
    that a strategy with a teacher stage runs each seed right after its teacher of
    the same seed (so one teacher at a time is kept for its student)."""
    students = {teacher_stage(n): n for n in names if teacher_stage(n) is not None}
    order = []
    for name in names:
        if teacher_stage(name) is not None:
            continue
        for seed in seeds:
            order.append((name, seed))
            if name in students:
                order.append((students[name], seed))
    return order
