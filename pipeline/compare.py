"""`pfdx compare`: every distillation strategy on one train window, scored on a later test window.

What it does, in order (all under `--out`, default `<output_root>/compare`):
1. Reads the raw log (`--data`, in `data.format`) with ExampleGen's own row code
   (`components/log_rows.py`): the same typing, click space and quarantine rules.
   Parquet is read with pyarrow there, not tensorflow-io: tensorflow-io 0.37's
   `IODataset.from_parquet` aborts the whole process ("parquet::ParquetException:
   Unexpected end of stream", tensorflow/io#1667, #1781) on a column with nulls, and
   post-click signals are null on every unclicked impression.
2. Splits clicked rows by time (by hash without `data.time_column`, as ExampleGen)
   into the pipeline's three splits, under ExampleGen's rules (`check_splits`)
   (`components/splits.py`): TRAIN, VALIDATION (the train range's last
   `data.validation_fraction`) and TEST (the last `data.eval_fraction`, the
   pipeline's eval split). Each window is written as gzip tf.Example TFRecords
   (`work/examples/`).
   Impression-space strategies (`PipelineConfig.space`: taml, ukd_teacher, ukd) get
   impression windows too (`<window>_impressions`): every impression, with its click
   as an int64 feature (`RowSchema.from_config(..., "impression")`), cut at the
   *same* times, which are computed from the clicked rows alone. So an impression
   window's clicked rows are exactly the click-space window, row for row and in log
   order, and adding impression strategies to a run changes nothing for the others.
   (Impressions before the first or after the last click fall in the first or last
   window; they are unclicked. Unclicked rows are then checked in full and may be
   quarantined, as ExampleGen does in impression space.)
3. Preprocesses like the pipeline, fitted on the TRAIN window only: the selection
   Beam job (`features/selection_beam.py`, paper §3.3) on the clicked rows, and per
   space a TFT analysis of `features/transform.py`'s `preprocessing_fn`
   (tft_beam.AnalyzeDataset) -> `work/train/selection.json` and a Transform graph
   per space. When no privileged feature is selected, the strategies that read
   them are skipped, and the output says so.
4. Per strategy, per-run tuning as the Trainer does it (`models/tuning.py`) on the
   first seed: candidates fit on TRAIN with early stopping on VALIDATION, the best
   by `tuning.metric` is kept (`--fixed`: the configured values only). So each row
   is what the pipeline would ship for that strategy before its baseline gate.
   Impression-space strategies train at their configured values, as in the Trainer.
5. Trains each strategy x seed with `models/training.py` `fit_and_evaluate` -- the
   Trainer's own code: TRAIN, early stopping and calibration on VALIDATION, scored
   on TEST -- and saves its test predictions (`predictions/*.npz`).
   `ukd` needs a trained `ukd_teacher` (added to the strategies, right before `ukd`,
   when not named): per seed the teacher trains first, and its served student
   pseudo-labels the `ukd` student's batches in memory (`teacher=`); both are
   reported (the teacher is a CVR model in its own right). `ukd`'s time excludes
   its teacher's.
6. Writes `compare.csv` / `compare.md` (mean and sample std over seeds of the
   paper's columns, plus the gap to the log's true CVR when it has one),
   `runs.csv`, `tuning.csv`, `compare.json` and `reliability.png`. The CVR columns
   count the clicked test rows for every strategy (an impression-space model is
   scored on the same rows as a click-space one). When impression windows exist,
   every run is also scored over every test impression against the log's true CVR
   (`impression_truth_*`: the impression space's own test window, predicted by a
   click-space model through its own Transform), which is what ESMM, UKD and TAML
   aim at and no label can score; impression-space runs with a CTR head add
   `ctr_auc` and `ctcvr_auc` (AUC of p_CTR * p_CVR on click-and-convert).

The default strategy list is the click-space strategies only: the impression-space
ones train on every impression (~25x the clicked rows on the simulated log, whose
CTR is ~4 %), and must be named in `--strategies`.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import itertools
import json
import math
import os
import time
from typing import Any, Callable, Iterable, Sequence

from pfdx.components import splits
from pfdx.config import (IMPRESSION_SPACE_STRATEGIES, STRATEGY_NAMES, ConfigError,
                         EvaluationConfig, PipelineConfig, from_dict)
from pfdx.models import champion

PREDICTIONS_DIR = "predictions"
WORK_DIR = "work"
TELEMETRY = ["pfdx", "Compare"]
TRAIN, VALIDATION, TEST = "train", "validation", "test"
CLICK, IMPRESSION = "click", "impression"  # PipelineConfig.space
# UKD's two stages: the teacher's served student pseudo-labels the student's batches.
UKD_TEACHER, UKD = "ukd_teacher", "ukd"

# Columns of compare.csv (each as <name>_mean, <name>_std) and runs.csv, in the
# paper's order (Tables 2-5), then the gap to the true CVR, the impression-space
# metrics (empty for click-space strategies) and the run time.
METRICS = ("student_auc", "teacher_auc", "label_avg", "student_pred_avg",
           "student_pred_avg_gap", "teacher_pred_avg", "teacher_pred_avg_gap",
           "student_ece", "student_mce", "truth_avg", "student_truth_mae",
           "student_truth_ece", "student_truth_mce", "student_truth_auc", "impression_rows",
           "impression_pred_avg", "impression_truth_avg", "impression_truth_auc",
           "impression_truth_mae", "impression_truth_ece", "impression_truth_mce",
           "ctr_auc", "ctcvr_auc", "seconds")


# CLI -------------------------------------------------------------------------

def add_cli_parser(subparsers: argparse._SubParsersAction,
                   add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Registers `compare`; `add_config_args` adds the CLI's --config/--set."""
    p = subparsers.add_parser(
        "compare", help="train every strategy on one time window, score them on a later one "
                        "(AUC, ECE, MCE, pred/label avg; mean and spread over seeds)")
    p.add_argument("--data", required=True,
                   help="the raw impression log in data.format: a folder (files matching "
                        "data.file_pattern), a file or a glob")
    p.add_argument("--out", help="output folder (default: <runner.output_root>/compare)")
    click_space = [n for n in STRATEGY_NAMES if n not in IMPRESSION_SPACE_STRATEGIES]
    p.add_argument("--strategies", help="comma-separated strategy names (sets "
                   "compare.strategies; default: every click-space strategy: "
                   f"{', '.join(click_space)}). The impression-space ones "
                   f"({', '.join(IMPRESSION_SPACE_STRATEGIES)}) train on every impression, "
                   "much slower, so only when named; ukd brings its ukd_teacher")
    p.add_argument("--seeds", type=int, help="runs per strategy (sets compare.seeds)")
    p.add_argument("--grid", action="append", default=[], metavar="[STRATEGY:]FIELD=V1,V2",
                   help="the per-run tuning grid, e.g. --grid lam=1,10 or --grid "
                        "ha_pfd_v2:gamma=0.5,1 (repeatable; sets tuning.grid.FIELD)")
    p.add_argument("--grid-metric", help="student_auc | student_ece | student_mce "
                   "(sets tuning.metric)")
    p.add_argument("--fixed", action="store_true",
                   help="no per-run tuning: every strategy at its configured values (the "
                        "paper's defaults unless --config/--set change them), to reproduce "
                        "the paper's settings (sets tuning.enabled=false)")
    add_config_args(p)
    p.set_defaults(func=compare_command)


def cli_overrides(args: argparse.Namespace) -> list[str]:
    """The command's flags as config overrides, applied after --config and --set."""
    out = []
    if args.strategies:
        out.append("compare.strategies=" + json.dumps(
            [s.strip() for s in args.strategies.split(",") if s.strip()]))
    if args.seeds is not None:
        out.append(f"compare.seeds={args.seeds}")
    for item in args.grid:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ConfigError(f"--grid {item!r}: expected [STRATEGY:]FIELD=V1,V2,...")
        out.append(f"tuning.grid.{key.strip()}=[{values}]")
    if args.grid_metric:
        out.append(f"tuning.metric={args.grid_metric}")
    if args.fixed:
        out.append("tuning.enabled=false")
    return out


def compare_command(args: argparse.Namespace) -> int:
    from pfdx.config import load_config

    config = load_config(args.config, list(args.overrides) + cli_overrides(args))
    out = args.out or config.resolve("compare")
    summary = run(config, args.data, out)
    print(f"wrote {os.path.join(out, 'compare.md')}, compare.csv, runs.csv and "
          f"reliability.png in {out} ({summary['seconds']:.0f}s)")
    return 0


# Strategies ------------------------------------------------------------

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


# Raw log -> windows ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Window:
    name: str
    pattern: str  # gzip tf.Example TFRecords
    rows: int
    conversions: int
    time_range: tuple[float, float]
    space: str = CLICK
    clicks: int | None = None  # impression windows: clicked rows among `rows`


@dataclasses.dataclass
class Rows:
    """Rows of one example space, in log order: event times, serialized tf.Examples,
    conversion labels, and click labels (impression space; None in click space)."""

    times: Any
    records: list[bytes]
    labels: Any
    clicks: Any = None
    # Without a time column: each row's split index (components/splits.py, by hash).
    splits: Any = None

    def add(self, example, clicked: int, split: int | None) -> None:
        """Appends a `log_rows.Example`; `clicked` is kept in impression space only."""
        self.times.append(example.time)
        self.records.append(example.serialized)
        self.labels.append(example.label)
        if self.clicks is not None:
            self.clicks.append(clicked)
        if self.splits is not None:
            self.splits.append(split)


def window_name(window: str, space: str) -> str:
    return window if space == CLICK else f"{window}_impressions"


def log_files(path: str, config: PipelineConfig) -> list[str]:
    """The log files at `path` (a file, or a folder read with data.file_pattern),
    without the side files Spark and Hadoop write beside their data, as ExampleGen."""
    import tensorflow as tf

    from pfdx.components import log_rows

    pattern = os.path.join(path, config.data.file_pattern) if tf.io.gfile.isdir(path) else path
    files = sorted(f for f in tf.io.gfile.glob(pattern)
                   if not tf.io.gfile.isdir(f) and not log_rows.is_side_file(f))
    if not files:
        raise FileNotFoundError(f"--data: no file matches {pattern!r}")
    return files


def read_log(files: Sequence[str], config: PipelineConfig, impressions: bool = False):
    """({space: Rows}, row counts, quarantined rows ({file, row, reason})):
    ExampleGen's `_ParseFile` and its rows rule (`check_rows`), in process. Always
    the clicked rows as click-space examples ("click"); with `impressions` also every
    impression as impression-space examples with the click feature ("impression"),
    and the counts and quarantine are impression space's (unclicked rows checked in
    full). Without a time column each row gets its hash split (`Rows.splits`)."""
    import numpy as np
    from apache_beam.io.filesystems import FileSystems

    from pfdx.components import log_rows
    from pfdx.components.click_log_example_gen import check_rows, format_dead_rows

    data = config.data
    data_dict = config.to_dict()["data"]
    click_schema = log_rows.RowSchema.from_config(data_dict, CLICK)
    schema = log_rows.RowSchema.from_config(data_dict, IMPRESSION) if impressions else click_schema
    by_hash = data.time_column is None
    counts = {"read": 0, log_rows.USED: 0, log_rows.UNCLICKED: 0, log_rows.QUARANTINED: 0}
    clicked = Rows([], [], [], splits=[] if by_hash else None)
    every = Rows([], [], [], [], splits=[] if by_hash else None)
    dead = []
    for path in files:
        with FileSystems.open(path, compression_type="uncompressed") as stream:
            _, rows = log_rows.read_file(path, stream, data.format, data.separator, schema)
            for row, record in rows:
                counts["read"] += 1
                if isinstance(record, str):
                    status, payload = log_rows.QUARANTINED, record
                else:
                    status, payload = log_rows.row_to_example(schema, record)
                counts[status] += 1
                if status == log_rows.QUARANTINED:
                    dead.append({"file": path, "row": row, "reason": payload})
                    continue
                if payload is None:  # unclicked, click space
                    continue
                click_space = payload  # the click-space example, exactly as without impressions
                if impressions and status == log_rows.USED:
                    click_space = log_rows.row_to_example(click_schema, record)[1]
                # A clicked row hashes its click-space example in both spaces, so an
                # impression window's clicked rows are the click window's.
                split = splits.split_by_hash(click_space.serialized, data.eval_fraction,
                                             data.validation_fraction) if by_hash else None
                if impressions:
                    every.add(payload, int(status == log_rows.USED), split)
                if status == log_rows.USED:
                    clicked.add(click_space, 1, split)
    check_rows(counts, data_dict, impressions, f"--data ({len(files)} file(s))",
               lambda: format_dead_rows(dead))
    out = {CLICK: clicked}
    if impressions:
        out[IMPRESSION] = every
    for rows in out.values():
        rows.times = np.asarray(rows.times, dtype=np.float64)  # None (no time column): NaN
        rows.labels = np.asarray(rows.labels)
        if rows.clicks is not None:
            rows.clicks = np.asarray(rows.clicks, dtype=np.int64)
        if rows.splits is not None:
            rows.splits = np.asarray(rows.splits, dtype=np.int64)
    return out, counts, dead


def window_masks(rows: Rows, cuts: tuple[float, float] | None) -> dict[str, Any]:
    """Boolean row masks of the pipeline's three splits (components/splits.py) at
    `cuts` (`splits.time_cuts` of the clicked rows), or by hash (`Rows.splits`) when
    `cuts` is None: TRAIN, VALIDATION and TEST (the eval split)."""
    import numpy as np

    index = rows.splits if cuts is None else np.array(
        [splits.split_by_time(t, cuts) for t in rows.times.tolist()], dtype=np.int64)
    return {TRAIN: index == 0, VALIDATION: index == 1, TEST: index == 2}


def split_windows(rows: dict[str, Rows], config: PipelineConfig, work: str,
                  log: Callable[[str], None]) -> dict[str, dict[str, Window]]:
    """{space: {window: Window}}: the pipeline's splits, by time or, without a time
    column, by hash, checked with ExampleGen's splits rule and written under `work`."""
    from pfdx.components.click_log_example_gen import SPLIT, SPLIT_POSITIVES, check_splits

    clicked, data = rows[CLICK], config.data
    time_range = None
    if data.time_column is None:
        log("no data.time_column: the windows are the pipeline's hash split of the rows")
    else:
        time_range = float(clicked.times.min()), float(clicked.times.max())
    cuts = None if time_range is None else splits.time_cuts(
        *time_range, data.eval_fraction, data.validation_fraction)
    masks = {space: window_masks(space_rows, cuts) for space, space_rows in rows.items()}
    split_counts = {}
    for w, mask in masks[CLICK].items():
        split_counts[f"{SPLIT}:{w}"] = int(mask.sum())
        split_counts[f"{SPLIT_POSITIVES}:{w}"] = int(clicked.labels[mask].sum())
    check_splits(split_counts, config.to_dict()["data"], time_range, masks[CLICK])
    return {space: {w: write_window(window_name(w, space), mask, rows[space],
                                    os.path.join(work, "examples", window_name(w, space)), space)
                    for w, mask in space_masks.items()}
            for space, space_masks in masks.items()}


def write_window(name: str, mask, rows: Rows, out_dir: str, space: str = CLICK) -> Window:
    import numpy as np
    import tensorflow as tf

    if not mask.any():
        raise ValueError(f"the {name} window holds no {'clicked ' * (space == CLICK)}rows; widen it "
                         "(data.eval_fraction, data.validation_fraction) or give more data")
    tf.io.gfile.makedirs(out_dir)
    path = os.path.join(out_dir, "examples.tfrecord.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for i in np.flatnonzero(mask):
            writer.write(rows.records[i])
    return Window(name, path, int(mask.sum()), int(rows.labels[mask].sum()),
                  (float(rows.times[mask].min()), float(rows.times[mask].max())), space,
                  None if rows.clicks is None else int(rows.clicks[mask].sum()))


# Preprocessing: selection + Transform fitted on one window ---------------------------

def raw_schema(config: PipelineConfig):
    """The raw tf.Example schema of `log_rows.row_to_example`'s output in
    `config.space`: int64 label (and in impression space the int64 click, which every
    example has), string categoricals, float numerics / privileged candidates / true
    probability. Every other feature may be absent, so each is a VarLen feature; the
    preprocessing_fn densifies dense and sparse inputs alike."""
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import schema_utils

    roles = config.data.columns
    spec = {roles.label: tf.io.FixedLenFeature([], tf.int64)}
    if config.space == IMPRESSION:
        spec[roles.click] = tf.io.FixedLenFeature([], tf.int64)
    spec.update((n, tf.io.VarLenFeature(tf.string)) for n in roles.regular_categorical)
    spec.update((n, tf.io.VarLenFeature(tf.float32))
                for n in roles.regular_numeric + roles.privileged
                + ((roles.truth,) if roles.truth else ()))
    return schema_utils.schema_from_feature_spec(spec)


def select_features(config: PipelineConfig, window: Window, out_dir: str) -> dict[str, Any]:
    """The selection Beam job on `window` (clicked rows); writes selection.json and
    its chart to `out_dir` and returns the result."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.public import tfxio

    from pfdx.features import selection_beam, selection_report

    selection = selection_beam.run_job(
        beam.Pipeline(options=PipelineOptions(config.beam_pipeline_args)),
        tfxio.TFExampleRecord(window.pattern, telemetry_descriptors=TELEMETRY),
        config.selection, config.data.columns, out_dir, window.pattern)
    selection_report.write_report(selection, os.path.join(out_dir, selection_report.SELECTION_FILE),
                                  os.path.join(out_dir, selection_report.CHART_FILE))
    return selection


def fit_transform(config: PipelineConfig, selection: dict[str, Any], window: Window,
                  out_dir: str):
    """The TFT analysis on `window` in `config.space` -> `out_dir/transform`;
    returns its TFTransformOutput."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io
    from tfx_bsl.public import tfxio

    from pfdx.features import transform

    custom_config = dict(transform.regular_config(config),
                         privileged=transform.privileged_config(selection))
    schema = raw_schema(config)
    transform_dir = os.path.join(out_dir, "transform")
    source = tfxio.TFExampleRecord(window.pattern, schema=schema, telemetry_descriptors=TELEMETRY)
    with beam.Pipeline(options=PipelineOptions(config.beam_pipeline_args)) as pipeline, \
            tft_beam.Context(temp_dir=os.path.join(out_dir, "tft_tmp"), force_tf_compat_v1=False):
        transform_fn = ((pipeline | "ReadWindow" >> source.BeamSource(),
                         source.TensorAdapterConfig())
                        | "Analyze" >> tft_beam.AnalyzeDataset(functools.partial(
                            transform.preprocessing_fn, custom_config=custom_config)))
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(transform_dir)
    # Where TFX's Transform puts the raw schema, which the Trainer parses with.
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(schema),
                               os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return tft.TFTransformOutput(transform_dir)


def preprocess(config: PipelineConfig, names: Sequence[str], windows: dict[str, dict[str, Window]],
               work: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Selection on the clicked rows of the TRAIN window, then a Transform per space
    that `names` train in, fitted on that space's TRAIN window, as the pipeline fits
    both on its train split: (selection, {space: TFTransformOutput})."""
    selection = select_features(config, windows[CLICK][TRAIN], os.path.join(work, TRAIN))
    outputs = {}
    for space in dict.fromkeys(space_of(n) for n in names):
        # A config of a strategy of that space: regular_config / raw_schema follow it.
        space_config = config.with_model(strategy=next(n for n in names if space_of(n) == space))
        outputs[space] = fit_transform(space_config, selection, windows[space][TRAIN],
                                       os.path.join(work, window_name(TRAIN, space)))
    return selection, outputs


def dataset_factory(files, options, schema):
    """What the Trainer's `data_accessor.tf_dataset_factory` does for tf.Example files."""
    from tfx_bsl.public import tfxio

    return tfxio.TFExampleRecord(files, schema=schema,
                                 telemetry_descriptors=TELEMETRY).TensorFlowDataset(options)


def fitter(config: PipelineConfig, tf_transform_output, windows: dict[str, Window],
           teacher=None):
    """The Trainer's `Fitter` on the TRAIN / VALIDATION / TEST windows (UKD's
    student: pseudo-labels from `teacher`, a trained `ukd_teacher`'s served student,
    in memory)."""
    from pfdx.components.trainer import distribution_strategy
    from pfdx.models import training

    return training.Fitter(
        tf_transform_output, dataset_factory,
        training.Splits([windows[TRAIN].pattern], [windows[VALIDATION].pattern],
                        [windows[TEST].pattern]),
        distribution_strategy(config.model.distribution), verbose=0, teacher=teacher)


# The run -------------------------------------------------------------------------

def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _progress(prefix: str, metrics: dict[str, float], seconds: float) -> str:
    line = (f"{prefix}  {seconds:6.1f}s  AUC {_fmt(metrics['student_auc'])}  teacher "
            f"{_fmt(metrics.get('teacher_auc'))}  pred {_fmt(metrics['student_pred_avg'])} "
            f"(label {_fmt(metrics['label_avg'])})  ECE {_fmt(metrics['student_ece'])}  "
            f"MCE {_fmt(metrics['student_mce'])}")
    if "student_truth_mae" in metrics:
        line += (f"  |p-true| {_fmt(metrics['student_truth_mae'])}  "
                 f"ECE(true) {_fmt(metrics['student_truth_ece'])}")
    if "impression_truth_auc" in metrics:
        line += (f"  impressions {metrics['impression_rows']}: AUC(true) "
                 f"{_fmt(metrics['impression_truth_auc'])} ECE(true) "
                 f"{_fmt(metrics['impression_truth_ece'])}")
    if "ctr_auc" in metrics:
        line += f"  CTR AUC {_fmt(metrics['ctr_auc'])}  CTCVR AUC {_fmt(metrics['ctcvr_auc'])}"
    return line


def run(config: PipelineConfig, data: str, out: str,
        log: Callable[[str], None] = functools.partial(print, flush=True)) -> dict[str, Any]:
    """The whole comparison; returns what compare.json holds."""
    import numpy as np
    import tensorflow as tf

    from pfdx.models import training, tuning
    from pfdx.models.strategies import READS_PRIVILEGED

    start = time.perf_counter()
    bins = config.evaluation.calibration_bins
    names = strategies(config)
    work = os.path.join(out, WORK_DIR)
    if tf.io.gfile.exists(work):  # an earlier, perhaps crashed, run's windows and Transform
        tf.io.gfile.rmtree(work)
    tf.io.gfile.makedirs(os.path.join(out, PREDICTIONS_DIR))
    spaces = list(dict.fromkeys(space_of(n) for n in names))

    files = log_files(data, config)
    rows, counts, dead = read_log(files, config, impressions=IMPRESSION in spaces)
    windows = split_windows(rows, config, work, log)
    del rows  # the windows are on disk now; training needs the memory
    log(f"read {counts['read']} rows from {len(files)} file(s): {counts['used']} clicked, "
        f"{counts['unclicked']} unclicked, {counts['quarantined']} quarantined; "
        + ", ".join(f"{w.name} {w.rows} rows ({w.conversions} conversions)"
                    for space in windows.values() for w in space.values())
        + f" [{time.perf_counter() - start:.0f}s]")

    selection, tft_output = preprocess(config, names, windows, work)
    log(f"selection and Transform ({', '.join(spaces)} space) fitted on the train window; "
        f"privileged features: {', '.join(selection['selected']) or 'none'} "
        f"[{time.perf_counter() - start:.0f}s]")
    skipped = [] if selection["selected"] else [n for n in names if n in READS_PRIVILEGED]
    if skipped:
        log(f"no privileged feature survived selection: nothing to distil, so "
            f"{', '.join(skipped)} are skipped")
        names = [n for n in names if n not in skipped]
        if not names:
            raise ValueError("no privileged feature survived selection and every strategy "
                             "asked for distils; add `none` to compare the student alone")

    runs, tuning_rows, chosen = [], [], {}
    order = run_order(names, [config.model.seed + k for k in range(config.compare.seeds)])
    teachers: dict[int, tuple[Any, str]] = {}  # seed -> (ukd_teacher's student, its run)
    for i, (name, seed) in enumerate(order, start=1):
        space = space_of(name)
        run_config = config.with_model(strategy=name, seed=seed)
        if space == IMPRESSION:  # trained at their configured values, as in the Trainer
            run_config = dataclasses.replace(
                run_config, tuning=dataclasses.replace(run_config.tuning, enabled=False))
        teacher, teacher_run = teachers.pop(seed) if name == UKD else (None, None)
        fit = fitter(run_config, tft_output[space], windows[space], teacher)
        tf.keras.backend.clear_session()  # drop the previous run's graphs and variables
        # s / run: the chosen point's fit and finish (not the other tuning trials).
        if name not in chosen:  # the first seed tunes, as the Trainer does
            outcome = tuning.tune(run_config, fit.fit,
                                  lambda line: log(f"  [tuning {name}] {line}"))
            chosen[name] = outcome.best.params
            tuning_rows += [{"strategy": name, **row} for row in outcome.table()]
            fitted, seconds = outcome.best_result, outcome.best.seconds
        else:
            tic = time.perf_counter()
            fitted = fit.fit(run_config.with_model(**chosen[name]))
            seconds = time.perf_counter() - tic
        tic = time.perf_counter()
        result = fit.finish(run_config.with_model(**chosen[name]), fitted)
        seconds += time.perf_counter() - tic
        del fitted
        if space == CLICK and IMPRESSION in windows:  # the same impressions as the others
            result.metrics.update(training.impression_metrics(fit.predict(
                run_config, result.model, [windows[IMPRESSION][TEST].pattern]), bins))
        path = os.path.join(out, PREDICTIONS_DIR, f"{name}-seed{seed}.npz")
        result.predictions.save(path)
        runs.append({"strategy": name, "seed": seed, "params": chosen[name], "seconds": seconds,
                     "predictions": os.path.relpath(path, out), "teacher_run": teacher_run,
                     **result.metrics})
        if name == UKD_TEACHER and UKD in names:
            teachers[seed] = (result.model.student_model(), runs[-1]["predictions"])
        del result, teacher
        log(_progress(f"[{i:>{len(str(len(order)))}}/{len(order)}] {name:<15} seed {seed}",
                      runs[-1], seconds) + f"  [{time.perf_counter() - start:.0f}s]")

    from pfdx.models import metrics as model_metrics

    test = load_predictions(out, runs[0]).clicked()
    oracle = None
    if test.truth is not None and not np.isnan(test.truth).any():
        oracle = dict(model_metrics.summary(test.labels, test.truth, bins),
                      truth_auc=model_metrics.expected_auc(test.truth, test.truth))
        every = next((load_predictions(out, r) for r in runs
                      if space_of(r["strategy"]) == IMPRESSION), None)
        if every is not None and not np.isnan(every.truth).any():
            oracle.update(impression_truth_auc=model_metrics.expected_auc(every.truth, every.truth),
                          impression_truth_avg=float(every.truth.mean()))

    table = aggregate(runs, names)
    summary = {
        "data": {"path": data, "files": files, "format": config.data.format, "rows": counts,
                 "quarantined_examples": dead[:20]},
        "windows": {w.name: dataclasses.asdict(w) for space in windows.values()
                    for w in space.values()},
        "selection": {"selected": selection["selected"], "or_groups": selection["or_groups"],
                      "file": os.path.join(WORK_DIR, TRAIN, "selection.json")},
        "config": config.to_dict(), "strategies": names, "skipped": skipped,
        "chosen_params": chosen, "tuning": tuning_rows, "runs": runs, "table": table,
        "oracle_true_cvr": oracle, "seconds": time.perf_counter() - start,
    }
    write_outputs(out, summary, config)
    return summary


def load_predictions(out: str, run_row: dict[str, Any]):
    from pfdx.models.training import Predictions

    return Predictions.load(os.path.join(out, run_row["predictions"]))


def aggregate(runs: Sequence[dict[str, Any]], names: Iterable[str]) -> list[dict[str, Any]]:
    """Per strategy: every metric's mean and sample standard deviation over seeds
    (std None with one seed; a metric a strategy lacks, e.g. its teacher, is None)."""
    import numpy as np

    table = []
    for name in names:
        rows = [r for r in runs if r["strategy"] == name]
        entry: dict[str, Any] = {"strategy": name, "seeds": len(rows),
                                 "params": rows[0]["params"]}
        for m in METRICS:
            values = np.array([r[m] for r in rows if r.get(m) is not None], dtype=np.float64)
            entry[f"{m}_mean"] = float(values.mean()) if values.size else None
            entry[f"{m}_std"] = float(values.std(ddof=1)) if values.size > 1 else None
        table.append(entry)
    return table


# Outputs -------------------------------------------------------------------------

def write_outputs(out: str, summary: dict[str, Any], config: PipelineConfig) -> None:
    import tensorflow as tf

    def write_csv(name: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        with tf.io.gfile.GFile(os.path.join(out, name), "w") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, dict)
                                 else ("" if v is None else v) for k, v in r.items()})

    write_csv("compare.csv", summary["table"],
              ["strategy", "seeds", "params"] + [f"{m}_{s}" for m in METRICS
                                                 for s in ("mean", "std")])
    write_csv("runs.csv", summary["runs"], ["strategy", "seed", "params", "rows", "truth_rows"]
              + list(METRICS) + ["predictions", "teacher_run"])
    if summary["tuning"]:
        write_csv("tuning.csv", summary["tuning"], list(dict.fromkeys(
            k for row in summary["tuning"] for k in row)))
    with tf.io.gfile.GFile(os.path.join(out, "compare.md"), "w") as f:
        f.write(markdown(summary))
    with tf.io.gfile.GFile(os.path.join(out, "compare.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True, default=str)
    with tf.io.gfile.GFile(os.path.join(out, "reliability.png"), "wb") as f:
        f.write(reliability_chart(out, summary, config.evaluation.calibration_bins))


def _cell(entry: dict[str, Any], metric: str, digits: int = 4) -> str:
    mean, std = entry.get(f"{metric}_mean"), entry.get(f"{metric}_std")
    if mean is None:
        return "-"
    return _fmt(mean, digits) + (f" ± {_fmt(std, digits)}" if std is not None else "")


def _gate_cell(entry: dict[str, Any], baseline: dict[str, Any] | None,
               evaluation: EvaluationConfig) -> str:
    """What the pipeline's baseline gate would ship, judged on the seeds' means."""
    if baseline is None or entry is baseline:
        return "-"
    decision = champion.gate(
        *({k: e[f"{k}_mean"] for k in ("student_auc", "student_ece")} for e in (entry, baseline)),
        evaluation)
    return "ships" if decision.shipped == champion.DISTILLED else "student alone ships"


def impression_truth_table(table: list[dict[str, Any]], oracle: dict[str, Any] | None) -> list[str]:
    """Markdown: each strategy's CVR against the true CVR on the clicked test rows and
    over every test impression (empty when the runs were not scored on impressions)."""
    if not any(e.get("impression_truth_auc_mean") is not None for e in table):
        return []
    lines = ["", "CVR against the true CVR (the simulator's `true_cvr`), on the clicked test "
             "rows and over every test impression, clicked or not: AUC against outcomes "
             "drawn from the true CVR (its expectation, `models/metrics.py` "
             "`expected_auc`), mean prediction against mean true CVR, mean |p − true|, and "
             "ECE / MCE with the true CVR in place of the label. Sample-selection bias "
             "shows as the gap between the two: a model of clicked rows that ranks and "
             "calibrates well there but not over all impressions.", "",
             "| strategy | AUC vs true, clicked | AUC vs true, all impressions | pred avg, "
             "all (true avg) | mean abs(p − true), all | ECE vs true, all | "
             "MCE vs true, all |", "|" + " --- |" * 7]
    for e in table:
        lines.append("| " + " | ".join([
            e["strategy"], _cell(e, "student_truth_auc"), _cell(e, "impression_truth_auc"),
            f"{_cell(e, 'impression_pred_avg')} ({_fmt(e['impression_truth_avg_mean'])})",
            _cell(e, "impression_truth_mae"), _cell(e, "impression_truth_ece"),
            _cell(e, "impression_truth_mce")]) + " |")
    if oracle is not None and "impression_truth_auc" in oracle:
        lines.append(f"| true CVR (oracle) | {_fmt(oracle['truth_auc'])} | "
                     f"{_fmt(oracle['impression_truth_auc'])} | "
                     f"{_fmt(oracle['impression_truth_avg'])} | 0 | 0 | 0 |")
    return lines


def markdown(summary: dict[str, Any]) -> str:
    table, windows, oracle = summary["table"], summary["windows"], summary["oracle_true_cvr"]
    model = summary["config"]["model"]
    truth = any(e.get("student_truth_mae_mean") is not None for e in table)
    impressions = any(space_of(e["strategy"]) == IMPRESSION for e in table)
    seeds = max(e["seeds"] for e in table)
    cols = ["strategy", "AUC", "teacher AUC", "label avg", "pred avg (gap)",
            "teacher pred avg (gap)", "ECE", "MCE"]
    if truth:
        cols += ["mean abs(p − true CVR)", "ECE vs true CVR", "MCE vs true CVR"]
    if impressions:
        cols += ["CTR AUC", "CTCVR AUC"]
    cols += ["baseline gate", "params", "s / run"]
    baseline = next((e for e in table if e["strategy"] == champion.BASELINE), None)
    evaluation = from_dict(summary["config"]).evaluation  # the typed settings the gate reads
    lines = [
        "# pfdx compare", "",
        f"Test window: {windows[TEST]['rows']} clicked rows ({windows[TEST]['conversions']} "
        f"conversions), after a train window of {windows[TRAIN]['rows']} rows "
        f"({windows[TRAIN]['conversions']} conversions); split by time. "
        f"{seeds} seed(s) per strategy: each cell is the mean"
        + (" ± the sample standard deviation over seeds" if seeds > 1 else "") + ". "
        f"Model: hidden {model['hidden_units']}, at most {model['epochs']} epoch(s) with "
        f"early stopping on the validation window (patience "
        f"{model['early_stopping_patience']}), batch {model['batch_size']}, hash buckets "
        f"{model['hash_buckets']}, calibration {summary['config']['evaluation']['calibration']}"
        f"; configured lr {model['learning_rate']}, γ {model['gamma']}, λ {model['lam']}, "
        f"alignment weight {model['align_weight']}. "
        f"Privileged features (selected on the train window): "
        f"{', '.join(summary['selection']['selected'])}.", ""]
    if impressions:
        train = windows[window_name(TRAIN, IMPRESSION)]
        test = windows[window_name(TEST, IMPRESSION)]
        names = [e["strategy"] for e in table if space_of(e["strategy"]) == IMPRESSION]
        lines += [
            f"Impression-space strategies ({', '.join(names)}) "
            f"train on every impression of the same time range: {train['rows']} "
            f"({train['clicks']} clicked), and predict the {test['rows']} test impressions "
            f"({test['clicks']} clicked). For every strategy the CVR columns (AUC to MCE, "
            f"and the true-CVR ones) count the clicked test rows only, the same rows "
            f"for all; CTR AUC scores p_CTR against the click and CTCVR AUC "
            f"p_CTR · p_CVR against click-and-convert, over every test impression "
            f"(\"-\": no CTR head). ukd_teacher's unclicked rows are "
            + (f"a {model['ukd_unclicked_rate']} sample" if model["ukd_unclicked_rate"]
               is not None else "as many as its clicked ones (1:1, from the observed CTR)")
            + "; ukd is pseudo-labelled by the "
            f"ukd_teacher of the same seed, whose time its s / run excludes.", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for e in table:
        cells = [e["strategy"], _cell(e, "student_auc"), _cell(e, "teacher_auc"),
                 _cell(e, "label_avg"),
                 f"{_cell(e, 'student_pred_avg')} ({_fmt(e['student_pred_avg_gap_mean'], 4)})",
                 "-" if e["teacher_pred_avg_mean"] is None else
                 f"{_cell(e, 'teacher_pred_avg')} ({_fmt(e['teacher_pred_avg_gap_mean'], 4)})",
                 _cell(e, "student_ece"), _cell(e, "student_mce")]
        if truth:
            cells += [_cell(e, "student_truth_mae"), _cell(e, "student_truth_ece"),
                      _cell(e, "student_truth_mce")]
        if impressions:
            cells += [_cell(e, "ctr_auc"), _cell(e, "ctcvr_auc")]
        cells += [_gate_cell(e, baseline, evaluation),
                  json.dumps(e["params"], sort_keys=True) if e["params"] else "-",
                  _fmt(e["seconds_mean"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    if oracle is not None:
        cells = ["true CVR (oracle)", _fmt(oracle["auc"]), "-", _fmt(oracle["label_avg"]),
                 f"{_fmt(oracle['pred_avg'])} ({_fmt(oracle['pred_avg_gap'])})", "-",
                 _fmt(oracle["ece"]), _fmt(oracle["mce"])]
        if truth:
            cells += ["0", "0", "0"]
        if impressions:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells + ["-", "-", "-"]) + " |")
        lines += ["", "The oracle row scores the simulator's hidden true CVR as if it were a "
                  "model: the best AUC any model can reach on this window, and the ECE / MCE "
                  "that label noise alone produces."]
    lines += impression_truth_table(table, oracle)
    if not summary["config"]["tuning"]["enabled"]:
        lines += ["", "No per-run tuning (`--fixed`): every strategy at its configured values."]
    elif summary["tuning"]:
        lines += ["", f"Per-run tuning: each strategy's values were chosen on the validation "
                  f"window by {summary['config']['tuning']['metric']} among the no-distillation "
                  f"point, the configured values and up to "
                  f"{summary['config']['tuning']['max_trials']} grid points (tuning.csv has "
                  f"every trial; the params column shows the choice)."]
    if summary.get("skipped"):
        lines += ["", f"No privileged feature survived selection: nothing to distil, so "
                  f"{', '.join(summary['skipped'])} were skipped."]
    lines += ["", "![reliability diagram](reliability.png)", ""]
    return "\n".join(lines)


# A bin with fewer pooled rows is not drawn: its mean label is mostly noise (ECE and
# MCE in the table still count every bin).
MIN_BIN_ROWS = 20


def reliability_chart(out: str, summary: dict[str, Any], num_bins: int) -> bytes:
    """PNG: per strategy (all seeds pooled) mean label -- and mean true CVR when known --
    against mean prediction in each of `num_bins` equal-width bins."""
    import io

    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from pfdx.models import metrics as model_metrics

    pooled: dict[str, dict[str, list]] = {}
    for run_row in summary["runs"]:
        p = load_predictions(out, run_row).clicked()
        parts = pooled.setdefault(run_row["strategy"], {"student": [], "labels": [], "truth": []})
        parts["student"].append(p.student)
        parts["labels"].append(p.labels)
        parts["truth"].append(p.truth)
    with_truth = all(t is not None and not np.isnan(t).any()
                     for parts in pooled.values() for t in parts["truth"])
    fig, axes = plt.subplots(1, 2 if with_truth else 1, figsize=(13 if with_truth else 7, 6),
                             squeeze=False)
    targets = [("labels", "mean label (observed conversion rate)")]
    if with_truth:
        targets.append(("truth", "mean true CVR (simulator)"))
    # tab20 has a colour for each of up to 20 strategies; solid and dashed lines
    # alternate so neighbouring colours stay apart.
    colours = plt.get_cmap("tab20").colors
    top = 0.0
    for ax, (field, ylabel) in zip(axes[0], targets):
        for i, (name, parts) in enumerate(pooled.items()):
            student, target = np.concatenate(parts["student"]), np.concatenate(parts[field])
            b = model_metrics.bin_index(student, num_bins)
            n = np.bincount(b, minlength=num_bins)
            drawn = n >= MIN_BIN_ROWS
            if not drawn.any():
                continue
            x = np.bincount(b, student, num_bins)[drawn] / n[drawn]
            y = np.bincount(b, target, num_bins)[drawn] / n[drawn]
            top = max(top, x.max(), y.max())
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=name,
                    color=colours[(2 * i) % 20 + (i // 10) % 2],
                    linestyle="-" if i % 2 == 0 else "--")
        ax.set_xlabel("mean prediction in bin")
        ax.set_ylabel(ylabel)
    for ax in axes[0]:
        lim = min(1.0, top * 1.05)
        ax.plot([0, lim], [0, lim], color="black", linestyle="--", linewidth=0.8,
                label="perfect calibration")
        ax.set_xlim(0, lim)
        ax.set_ylim(0, lim)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(f"Student reliability on the test window ({num_bins} equal-width bins, "
                 f"seeds pooled; bins under {MIN_BIN_ROWS} rows not drawn)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
