"""Continuous training: warm start daily against from scratch daily (issue 20 item 7).

`--days` simulated days land one by one. Each day both schedules run the whole pipeline
(pipeline/local_runner.py, LocalDagRunner):
- warm: the newest span only, continuing the last blessed run's joint models
  (models/warm_start.py);
- scratch: every span so far (`data.spans.num_spans` = days so far), cold
  (`warm_start.enabled=false`).
Per day: the run's wall time, its train rows and steps, whether it was blessed, and the
student it trained scored on the *next* day's clicked rows (AUC, ECE; the exported
SavedModel's `predict_raw` on the raw log). Writes results.csv, results.md and
seconds.png to --out.

    .venv/bin/python bench/warm_start.py --days 7 --rows-per-day 100000 \\
        --out bench/results/warm-start
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import sys
import tempfile
import time

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import numpy as np
import pandas as pd
import tensorflow as tf
from ml_metadata import metadata_store
from tfx import v1 as tfx

from pfdx.components.trainer import TRAINING_METRICS_FILE
from pfdx.config import load_config
from pfdx.models import metrics
from pfdx.pipeline import local_runner
from pfdx.reports.tables import markdown_table, number
from pfdx.simulator import simulate

DATES = "day={YYYY}-{MM}-{DD}/*.csv"
SCHEDULES = {"warm": [], "scratch": ["warm_start.enabled=false"]}


def latest(config, type_name: str):
    """The newest artifact of a type in the run's MLMD."""
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path))
    return max(store.get_artifacts_by_type(type_name), key=lambda a: a.id)


def next_day_scores(config, model_uri: str, day_csv: str) -> dict[str, float]:
    """AUC and ECE of the exported student on a day's clicked rows (raw log)."""
    frame = pd.read_csv(day_csv)
    frame = frame[frame[config.data.columns.click] == 1]
    roles = config.data.columns
    serve = tf.saved_model.load(os.path.join(model_uri, "Format-Serving")).signatures["predict_raw"]
    inputs = {c: tf.constant(frame[c].fillna("").astype(str).values)
              for c in roles.regular_categorical}
    inputs.update({c: tf.constant(frame[c].astype("float32").values)
                   for c in roles.regular_numeric})
    p = serve(**inputs)["cvr"].numpy()
    s = metrics.summary(frame[roles.label].values, p, config.evaluation.calibration_bins)
    return {"next_day_auc": s["auc"], "next_day_ece": s["ece"], "next_day_rows": len(frame)}


def run_day(schedule: str, day: int, days: list[str], work: str, overrides: list[str]) -> dict:
    root = os.path.join(work, schedule)
    logs = os.path.join(root, "logs")
    shutil.copytree(os.path.join(work, "all", f"day={days[day]}"),
                    os.path.join(logs, f"day={days[day]}"))
    spans = day + 1 if schedule == "scratch" else 1
    config = load_config(None, [f"runner.output_root={root}", f"data.path={logs}",
                                f"data.file_pattern={DATES}", f"data.spans.num_spans={spans}",
                                *overrides, *SCHEDULES[schedule]])
    start = time.perf_counter()
    summary = local_runner.run(config)
    seconds = time.perf_counter() - start
    model, run = latest(config, "Model"), latest(config, "ModelRun")
    with open(os.path.join(run.uri, TRAINING_METRICS_FILE), encoding="utf-8") as f:
        trained = json.load(f)
    shipped = "distilled" if trained["shipped"] == "distilled_student" else "student_alone"
    row = {"schedule": schedule, "day": days[day], "seconds": round(seconds, 1),
           "train_rows": summary["rows"].get("split:train"), "blessed": summary["blessed"],
           "shipped": trained["shipped"], "warm": ",".join(trained["warm_start"]["warm"]),
           "steps": trained["warm_start"]["steps"]["none"]["after"]
           - trained["warm_start"]["steps"]["none"]["before"],
           "eval_auc": trained[shipped]["metrics"]["student_auc"],
           "eval_ece": trained[shipped]["metrics"]["student_ece"]}
    if day + 1 < len(days):
        (csv_file,) = glob.glob(os.path.join(work, "all", f"day={days[day + 1]}", "*.csv"))
        row.update(next_day_scores(config, model.uri, csv_file))
    print(json.dumps(row), flush=True)
    return row


def write(rows: list[dict], out: str, argv: list[str]) -> None:
    os.makedirs(out, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(os.path.join(out, "results.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    cols = ["day", "seconds", "train_rows", "steps", "blessed", "shipped", "next_day_auc",
            "next_day_ece"]
    lines = ["# Warm start daily vs from scratch daily", "",
             "Command: `.venv/bin/python bench/warm_start.py " + " ".join(argv) + "`", ""]
    for schedule in SCHEDULES:
        lines += [f"## {schedule}", "", markdown_table(cols, [
            [number(r[c]) if isinstance(r.get(c), float) and c != "seconds"
             else str(r.get(c, "-")) for c in cols]
            for r in rows if r["schedule"] == schedule]), ""]
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for schedule in SCHEDULES:
        mine = [r for r in rows if r["schedule"] == schedule]
        ax.plot(range(1, len(mine) + 1), [r["seconds"] for r in mine], "o-", label=schedule)
    ax.set_xlabel("day")
    ax.set_ylabel("pipeline wall time (s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "seconds.png"), dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--rows-per-day", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="bench/results/warm-start")
    parser.add_argument("--work", default=None, help="kept when given; else a temporary folder")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="config override for both schedules, e.g. model.epochs=3")
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="pfdx-warm-start-")
    try:
        simulate.write_days(simulate.simulate(args.rows_per_day * args.days, args.seed,
                                              days=args.days), os.path.join(work, "all"))
        days = sorted(d.split("=", 1)[1] for d in os.listdir(os.path.join(work, "all")))
        rows: list[dict] = []
        for d in range(len(days)):
            for schedule in SCHEDULES:
                rows.append(run_day(schedule, d, days, work, args.overrides))
                write(rows, args.out, argv)  # after every run: a killed benchmark keeps its days
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
