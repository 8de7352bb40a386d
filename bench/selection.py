"""Throughput of the privileged-feature selection: the Beam job vs the numpy reference.

    .venv/bin/python bench/selection.py [--rows 1000000 4000000] [--workers 2]

Data. One example per clicked impression, as ExampleGen writes them: gzipped
tf.Example TFRecords (8 shards) with the label, event time, every regular
feature and all 16 privileged candidates (absent where missing). simulate()
yields ~2.8 % clicks, so 1M clicks would need ~36M simulated impressions (~6 min);
instead a pool of clicked rows from several simulate() seeds is resampled with
replacement to the target size. Rows stay whole (the signals keep their joint
distribution with the label); distinct values are bounded by the pool's, which
still puts the noisier continuous signals past `max_distinct_values` (bucketed).
Files are cached under --cache, keyed by size and seed.

Measured. Beam: wall time of `run_standalone` (DirectRunner, multi_processing,
--workers processes), start-up and result writing included. numpy, one process:
"end to end" reads the same files (tf.data) and decodes them with the job's own
`decode_examples`, then runs `reference_stats` + `select`; "compute" is that last
step alone, on columns already in memory.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import pfdx  # noqa: F401  (Keras flag before TensorFlow)
import numpy as np
import pandas as pd
import pyarrow as pa

from pfdx.config import PipelineConfig
from pfdx.features import selection_beam, selection_policy
from pfdx.simulator import schema as S
from pfdx.simulator.simulate import simulate

POOL_IMPRESSIONS = 1_000_000
POOL_SEEDS = (101, 102, 103)
SHARDS = 8


def clicked_pool() -> pd.DataFrame:
    frames = [simulate(POOL_IMPRESSIONS, seed) for seed in POOL_SEEDS]
    pool = pd.concat(frames, ignore_index=True)
    return pool[pool[S.CLICK] == 1].reset_index(drop=True)


def _arrow_column(values: np.ndarray) -> pa.Array:
    """A one-value-per-row list column; NaN -> null (an absent feature)."""
    if values.dtype == object:
        return pa.array([[v.encode()] for v in values], pa.list_(pa.binary()))
    if np.issubdtype(values.dtype, np.integer):
        flat, valid = values.astype(np.int64), np.ones(len(values), bool)
    else:
        flat, valid = values.astype(np.float32), ~np.isnan(values)
    offsets = np.r_[0, np.cumsum(valid)].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat[valid]),
                                    mask=pa.array(~valid))


def write_examples(frame: pd.DataFrame, out_dir: str) -> None:
    """ExampleGen's layout: <out_dir>/Split-train/data_tfrecord-*.gz."""
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    columns = [c for c in frame.columns if c not in (S.IMPRESSION_ID, S.CLICK, S.TRUE_CTR)]
    split = os.path.join(out_dir, "Split-train")
    os.makedirs(split, exist_ok=True)
    encoder = example_coder.RecordBatchToExamplesEncoder()
    bounds = np.linspace(0, len(frame), SHARDS + 1).astype(int)
    for i in range(SHARDS):
        part = frame.iloc[bounds[i]:bounds[i + 1]]
        batch = pa.RecordBatch.from_arrays([_arrow_column(part[c].to_numpy()) for c in columns],
                                           columns)
        path = os.path.join(split, f"data_tfrecord-{i:05d}-of-{SHARDS:05d}.gz")
        with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as w:
            for record in encoder.encode(batch):
                w.write(record)


def bench(rows: int, pool: pd.DataFrame, cache: str, workers: int) -> None:
    config = PipelineConfig()
    data_dir = os.path.join(cache, f"clicked-{rows}")
    rng = np.random.default_rng(rows)
    frame = pool.iloc[rng.integers(0, len(pool), rows)].reset_index(drop=True)
    if not os.path.isdir(data_dir):
        t = time.perf_counter()
        write_examples(frame, data_dir)
        print(f"  wrote {rows:,} examples in {time.perf_counter() - t:.0f} s", flush=True)

    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        result = selection_beam.run_standalone(
            data_dir, os.path.join(out, "selection.json"), config,
            ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"])
        beam_s = time.perf_counter() - t
    assert result["rows"]["clicked"] == rows, result["rows"]

    t = time.perf_counter()
    labels, columns = read_columns(data_dir, config)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    stats = selection_policy.reference_stats(columns, labels, config.selection, config.data.columns)
    selection_policy.select(stats, config.selection, config.data.columns)
    compute_s = time.perf_counter() - t
    numpy_s = read_s + compute_s

    def rate(seconds: float) -> str:
        return f"{seconds:6.1f} s = {rows / seconds / 1e3:7.1f}k rows/s"

    print(f"  {rows:,} rows")
    print(f"    beam, {workers} workers:      {rate(beam_s)} ({rows / beam_s * 60 / 1e6:.2f}M rows/min)")
    print(f"    numpy, end to end:    {rate(numpy_s)}   beam/numpy time {beam_s / numpy_s:.2f}x")
    print(f"    numpy, compute only:  {rate(compute_s)}   beam/numpy time {beam_s / compute_s:.1f}x")
    modes = sorted(f"{n}:{f['mode']}" for n, f in result["features"].items() if "mode" in f)
    print(f"    continuous: {', '.join(modes)}\n    selected: {', '.join(result['selected'])}",
          flush=True)


def read_columns(data_dir: str, config: PipelineConfig) -> tuple[np.ndarray, dict]:
    """The numpy pass's reader: one process, tf.data, the job's own decoder."""
    import tensorflow as tf

    pattern = selection_beam.examples_pattern(data_dir)
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(pattern), compression_type="GZIP")
    parts = [selection_beam.decode_examples(batch, config.data.columns, pattern)
             for batch in records.batch(selection_beam.BATCH_SIZE)]
    labels = np.concatenate([y for y, _, _ in parts])
    return labels, {c: np.concatenate([cols[c] for _, cols, _ in parts])
                    for c in config.data.columns.privileged}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "pfdx-bench-selection"))
    args = p.parse_args(argv)
    t = time.perf_counter()
    pool = clicked_pool()
    print(f"pool: {len(pool):,} clicked rows from {len(POOL_SEEDS)} x {POOL_IMPRESSIONS:,} "
          f"simulated impressions ({time.perf_counter() - t:.0f} s)", flush=True)
    for rows in args.rows:
        bench(rows, pool, args.cache, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
