"""The three example splits every pfdx run trains, validates and evaluates on.

- `train`: what the models fit on (and the selection and the Transform analyse);
- `validation`: the last `data.validation_fraction` of the train time range, the
  most recent data before eval: early stopping, per-run tuning of the distillation
  weights, the baseline gate's comparison and post-hoc calibration all read it;
- `eval`: the last `data.eval_fraction` of the whole time range, held out for the
  Trainer's final metrics and the Evaluator's blessing.

Without a time column the rows are assigned by a hash of the serialized example
in the same proportions. ExampleGen and `pfdx compare` cut with these functions,
so a compare window is the pipeline's split, row for row.
"""
from __future__ import annotations

import zlib

TRAIN, VALIDATION, EVAL = "train", "validation", "eval"
SPLITS = (TRAIN, VALIDATION, EVAL)  # partition index -> split name

_HASH_BUCKETS = 10_000


def time_cuts(lo: float, hi: float, eval_fraction: float,
              validation_fraction: float) -> tuple[float, float]:
    """(eval cut, validation cut) of the time range [lo, hi]: eval from the eval cut
    on, validation from the validation cut up to the eval cut."""
    eval_cut = hi - eval_fraction * (hi - lo)
    return eval_cut, eval_cut - validation_fraction * (eval_cut - lo)


def split_by_time(time: float, cuts: tuple[float, float]) -> int:
    """Index into SPLITS of a row logged at `time`."""
    eval_cut, validation_cut = cuts
    if time >= eval_cut:
        return 2
    return int(time >= validation_cut)


def split_by_hash(serialized: bytes, eval_fraction: float, validation_fraction: float) -> int:
    """Index into SPLITS from a crc32 of the serialized example: deterministic across
    runs and workers; eval takes `eval_fraction` of the rows, validation
    `validation_fraction` of the rest."""
    u = (zlib.crc32(serialized) % _HASH_BUCKETS) / _HASH_BUCKETS
    if u < eval_fraction:
        return 2
    return int(u < eval_fraction + validation_fraction * (1.0 - eval_fraction))


# Spans (data.spans, docs/data-and-failures.md, Continuous training): a run that reads several spans
# cuts its eval split from the newest span only, so that every run is judged on the
# freshest data. With one span (or none) these give the split of the functions above.

def span_time_cuts(all_range: tuple[float, float], newest_range: tuple[float, float],
                   older_range: tuple[float, float] | None, eval_fraction: float,
                   validation_fraction: float, newest_span_eval: bool) -> tuple[float, float]:
    """(eval cut of the newest span's rows, validation cut of every other row).

    "tail" (`newest_span_eval` False): eval is the newest span's rows from the last
    `eval_fraction` of the newest span's time range on; validation the last
    `validation_fraction` of the rest of the time range (`all_range` up to the eval
    cut). "newest_span": eval is the whole newest span (eval cut -inf); validation
    the last `validation_fraction` of the older spans' time range."""
    if newest_span_eval:
        lo, hi = older_range if older_range is not None else all_range
        return float("-inf"), hi - validation_fraction * (hi - lo)
    eval_cut, _ = time_cuts(*newest_range, eval_fraction, validation_fraction)
    return eval_cut, eval_cut - validation_fraction * (eval_cut - all_range[0])


def split_by_span_time(time: float, newest: bool, cuts: tuple[float, float]) -> int:
    """Index into SPLITS of a row logged at `time`, `newest` when its file is in the
    newest span; `cuts` from span_time_cuts. Only the newest span's rows are eval."""
    eval_cut, validation_cut = cuts
    if newest and time >= eval_cut:
        return 2
    return int(time >= validation_cut)


def split_by_span_hash(serialized: bytes, newest: bool, eval_fraction: float,
                       validation_fraction: float, newest_span_eval: bool) -> int:
    """The hash split (no time column) over several spans: eval from the newest span
    only (`eval_fraction` of its rows, or all of them for "newest_span"); older spans
    give train and validation (`validation_fraction` of their rows)."""
    if newest:
        return 2 if newest_span_eval else split_by_hash(serialized, eval_fraction,
                                                        validation_fraction)
    return split_by_hash(serialized, 0.0, validation_fraction)
