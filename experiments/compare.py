"""`pfdx compare`, the whole comparison: the log's windows (`windows.py`), the
pipeline's preprocessing fitted on TRAIN (`preprocessing.py`), every strategy x seed
trained and tuned as the Trainer does (`runs.py`), the table and its files
(`reports.py`)."""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Iterable, Sequence

from pfdx.config import PipelineConfig
from pfdx.experiments import preprocessing, reports, runs as training_runs, windows as log_windows
from pfdx.experiments.strategies import IMPRESSION, space_of, strategies
from pfdx.experiments.windows import TRAIN
from pfdx.models.registry import STRATEGIES

WORK_DIR = "work"  # the windows' examples, selection and Transform: rebuilt every run


def run(config: PipelineConfig, data: str, out: str,
        log: Callable[[str], None] = functools.partial(print, flush=True)) -> dict[str, Any]:
    """The whole comparison; returns what compare.json holds."""
    import tensorflow as tf

    start = time.perf_counter()
    names = strategies(config)
    work = os.path.join(out, WORK_DIR)
    if tf.io.gfile.exists(work):  # an earlier, perhaps crashed, run's windows and Transform
        tf.io.gfile.rmtree(work)
    tf.io.gfile.makedirs(os.path.join(out, training_runs.PREDICTIONS_DIR))
    spaces = list(dict.fromkeys(space_of(n) for n in names))

    files = log_windows.log_files(data, config)
    rows, counts, dead = log_windows.read_log(files, config, impressions=IMPRESSION in spaces)
    windows = log_windows.split_windows(rows, config, work, log)
    del rows  # the windows are on disk now; training needs the memory
    log(f"read {counts['read']} rows from {len(files)} file(s): {counts['used']} clicked, "
        f"{counts['unclicked']} unclicked, {counts['quarantined']} quarantined; "
        + ", ".join(f"{w.name} {w.rows} rows ({w.conversions} conversions)"
                    for space in windows.values() for w in space.values())
        + f" [{time.perf_counter() - start:.0f}s]")

    selection, tft_output = preprocessing.preprocess(config, names, windows, work)
    log(f"selection and Transform ({', '.join(spaces)} space) fitted on the train window; "
        f"privileged features: {', '.join(selection['selected']) or 'none'} "
        f"[{time.perf_counter() - start:.0f}s]")
    skipped = [] if selection["selected"] else [n for n in names if STRATEGIES[n].reads_privileged]
    if skipped:
        log(f"no privileged feature survived selection: nothing to distil, so "
            f"{', '.join(skipped)} are skipped")
        names = [n for n in names if n not in skipped]
        if not names:
            raise ValueError("no privileged feature survived selection and every strategy "
                             "asked for distils; add `none` to compare the student alone")

    runs, tuning_rows, chosen = training_runs.train(config, names, windows, tft_output, out,
                                                    log, start)
    summary = {
        "data": {"path": data, "files": files, "format": config.data.format, "rows": counts,
                 "quarantined_examples": dead[:20]},
        "windows": {w.name: dataclasses.asdict(w) for space in windows.values()
                    for w in space.values()},
        "selection": {"selected": selection["selected"], "or_groups": selection["or_groups"],
                      "file": os.path.join(WORK_DIR, TRAIN, "selection.json")},
        "config": config.to_dict(), "strategies": names, "skipped": skipped,
        "chosen_params": chosen, "tuning": tuning_rows, "runs": runs,
        "table": aggregate(runs, names),
        "oracle_true_cvr": oracle(out, runs, config.evaluation.calibration_bins),
        "seconds": time.perf_counter() - start,
    }
    reports.write_outputs(out, summary, config)
    return summary


def aggregate(runs: Sequence[dict[str, Any]], names: Iterable[str]) -> list[dict[str, Any]]:
    """Per strategy: every metric's mean and sample standard deviation over seeds
    (std None with one seed; a metric a strategy lacks, e.g. its teacher, is None)."""
    import numpy as np

    table = []
    for name in names:
        rows = [r for r in runs if r["strategy"] == name]
        entry: dict[str, Any] = {"strategy": name, "seeds": len(rows),
                                 "params": rows[0]["params"]}
        for m in reports.METRICS:
            values = np.array([r[m] for r in rows if r.get(m) is not None], dtype=np.float64)
            entry[f"{m}_mean"] = float(values.mean()) if values.size else None
            entry[f"{m}_std"] = float(values.std(ddof=1)) if values.size > 1 else None
        table.append(entry)
    return table


def oracle(out: str, runs: Sequence[dict[str, Any]], bins: int) -> dict[str, Any] | None:
    """The simulator's true CVR scored as if it were a model, on the clicked test rows
    and, when impression-space runs predicted them, over every test impression; None
    when the log has no true CVR."""
    import numpy as np

    from pfdx.models import metrics as model_metrics

    test = reports.load_predictions(out, runs[0]).clicked()
    if test.truth is None or np.isnan(test.truth).any():
        return None
    scores = dict(model_metrics.summary(test.labels, test.truth, bins),
                  truth_auc=model_metrics.expected_auc(test.truth, test.truth))
    every = next((reports.load_predictions(out, r) for r in runs
                  if space_of(r["strategy"]) == IMPRESSION), None)
    if every is not None and not np.isnan(every.truth).any():
        scores.update(impression_truth_auc=model_metrics.expected_auc(every.truth, every.truth),
                      impression_truth_avg=float(every.truth.mean()))
    return scores
