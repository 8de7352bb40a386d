"""Examples/s of one joint training step: student-only (`none`) vs HA-PFD V2.

    python bench/train_step.py [--batch 512] [--steps 20] [--rounds 5]
        [--hash-buckets 1000 100000 1000000] [--round-seconds 2] [--batches 100]
        [--embedding-optimizer adam|lazy_adam] [--run CONFIG [--set KEY=VALUE ...]]

Runs Keras' own train function (forward, loss, metrics, Adam with weight decay and
clipping) on in-memory batches shaped like the Transform's output: the simulated
log's regular features as int64 ids (categoricals in `hash_buckets` bins, numerics
in `numeric_buckets + 1`) and the paper's 10 privileged features (ids 0, 1, missing).
`--batches` distinct batches, cycled: with one, every step looks up the same rows,
and `lazy_adam` never has a missed step to catch up on.
One row per table size (`--hash-buckets`, rows per categorical table; issue 16: 1k,
100k, 1M), each timed on its own models; a round is at most `--steps` steps and
about `--round-seconds` long (a 1M-row step can take a second).
Target: the HA-PFD V2 step costs at most 2.5x the student-only step.
With `lazy_adam`, each round ends with a flush (`JointModel.catch_up_rows`: every
row of every table caught up on its missed steps), timed apart: a fit flushes
before each validation pass and at each epoch's end.

`--run CONFIG`: also the end-to-end examples/s of the last Trainer that ran (not
from cache) under that pipeline config's output root (`make run` first): the examples
its trainings stepped through (each training's epochs, from its TensorBoard folder,
times the rows of its splits: train for a fit, train + validation for a refit)
over the Trainer's wall time in MLMD -- tuning's set-up per model, validation passes,
the export and all. `--hash-buckets` without values skips the step table.

TensorFlow's thread pools come from the environment (`TF_NUM_INTRAOP_THREADS`,
`TF_NUM_INTEROP_THREADS`, printed with the figures); docs/pipeline.md "Threads".
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pfdx  # noqa: E402,F401
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ml_metadata import metadata_store  # noqa: E402
from ml_metadata.proto import metadata_store_pb2  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402

from pfdx.components import splits  # noqa: E402
from pfdx.components.click_log_outputs import read_row_counts  # noqa: E402
from pfdx.components.data_rules import SPLIT  # noqa: E402
from pfdx.components.trainer import TENSORBOARD_DIR  # noqa: E402
from pfdx.config import ModelConfig, load_config  # noqa: E402
from pfdx.models.model import build_model  # noqa: E402
from pfdx.models.training import REFIT_SUFFIX  # noqa: E402
from pfdx.simulator import schema  # noqa: E402

PRIVILEGED = tuple(f"privileged__{n}" for n in schema.PAPER_DISCRETE[:6] + ("interact",)
                   + schema.PAPER_CONTINUOUS)
TARGET_RATIO = 2.5


def vocabularies(config: ModelConfig) -> tuple[dict[str, int], dict[str, int]]:
    regular = {n: config.hash_buckets for n in schema.REGULAR_CATEGORICAL}
    regular.update({n: config.numeric_buckets + 1 for n in schema.REGULAR_NUMERIC})
    return regular, {n: 3 for n in PRIVILEGED}


def batch(regular, privileged, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    features = {n: tf.constant(rng.integers(0, v, size), tf.int64)
                for n, v in {**regular, **privileged}.items()}
    return features, tf.constant(rng.random(size) < 0.12, tf.int64)


def train_step(config: ModelConfig, batch_size: int, batches: int):
    """(model, step): Keras' compiled train function for `config` over `batches`
    distinct batches, traced and warmed up."""
    regular, privileged = vocabularies(config)
    model = build_model(config, regular, privileged)
    # Batched up front: slicing a [batches, batch_size] tensor per step costs nothing,
    # where tf.data's batching of single rows would compete with the step for the cores.
    examples = tf.nest.map_structure(lambda x: tf.reshape(x, [batches, batch_size]),
                                     batch(regular, privileged, batch_size * batches))
    data = iter(tf.data.Dataset.from_tensor_slices(examples).repeat())
    step = model.make_train_function()
    for _ in range(3):  # trace, build the optimizer slots, warm caches
        step(data)
    model.catch_up_rows()  # traces the flush
    return model, lambda: step(data)


def seconds(step, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step. CPU time is the steadier cost measure when
    other processes share the cores."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        logs = step()
    float(logs["loss"])  # wait for the last step
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def flush_seconds(model) -> float:
    """Wall seconds of one flush of `model`'s LazyAdams (rows left behind by the
    steps since the last one)."""
    wall = time.perf_counter()
    model.catch_up_rows()
    return time.perf_counter() - wall


def measure(base: ModelConfig, batch_size: int, batches: int, max_steps: int, rounds: int,
            round_seconds: float) -> tuple[dict[str, tuple[float, float, float]], int]:
    """(strategy -> best (wall, CPU) seconds per step and best flush seconds at
    `base`'s table size, steps per round)."""
    strategies = ("none", "ha_pfd_v2")
    trained = {}
    for strategy in strategies:
        tf.keras.utils.set_random_seed(0)
        trained[strategy] = train_step(dataclasses.replace(base, strategy=strategy),
                                       batch_size, batches)
    # Steps per round: about `round_seconds` of the slower strategy, 3 to `max_steps`.
    slowest = max(seconds(step, 3)[0] for _, step in trained.values())
    n = max(3, min(max_steps, int(round_seconds / slowest)))
    # Alternating rounds, best of each: the CPU is shared, and load that lands on
    # one strategy's round must not pass for its cost.
    times, flushes = {s: [] for s in strategies}, {s: [] for s in strategies}
    for _ in range(rounds):
        for strategy, (model, step) in trained.items():
            times[strategy].append(seconds(step, n))
            flushes[strategy].append(flush_seconds(model))
    del trained
    tf.keras.backend.clear_session()
    return {s: (min(w for w, _ in t), min(c for _, c in t), min(flushes[s]))
            for s, t in times.items()}, n


def epochs_logged(training_dir: str) -> int:
    """Epochs a training ran: the epoch summaries Keras' TensorBoard callback wrote
    (distinct steps, so a resumed training's repeated epochs count once)."""
    steps = set()
    for path in glob.glob(os.path.join(training_dir, "train", "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if any(v.tag == "epoch_loss" for v in event.summary.value):
                steps.add(event.step)
    return len(steps)


def trainer_throughput(config_path: str, overrides: list[str]) -> dict:
    """The last Trainer that ran (not from cache) under the config's output root:
    its wall seconds, trainings, epochs and the examples they trained on."""
    config = load_config(config_path, overrides)
    if not os.path.exists(config.metadata_path):
        raise SystemExit(f"--run: no {config.metadata_path}: run the pipeline first "
                         f"(pfdx run --config {config_path})")
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path))
    model_runs = store.get_artifacts_by_type(standard_artifacts.ModelRun.TYPE_NAME)
    for run in sorted(model_runs, key=lambda a: a.id, reverse=True):
        events = store.get_events_by_artifact_ids([run.id])
        executions = store.get_executions_by_id(
            [e.execution_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT])
        ran = [x for x in executions if x.last_known_state == metadata_store_pb2.Execution.COMPLETE]
        if ran:
            break
    else:
        raise SystemExit(f"--run: no Trainer ran in {config.metadata_path}")
    trainer = ran[0]
    inputs = store.get_artifacts_by_id(
        [e.artifact_id for e in store.get_events_by_execution_ids([trainer.id])
         if e.type == metadata_store_pb2.Event.INPUT])
    (examples,) = [a for a in inputs if store.get_artifact_types_by_id([a.type_id])[0].name
                   == standard_artifacts.Examples.TYPE_NAME]
    rows = read_row_counts(examples.uri)
    fit_rows = rows[f"{SPLIT}:{splits.TRAIN}"]
    trainings = {}
    for training_dir in sorted(glob.glob(os.path.join(run.uri, TENSORBOARD_DIR, "*"))):
        name = os.path.basename(training_dir)
        refit = name.endswith(REFIT_SUFFIX)
        per_epoch = fit_rows + (rows[f"{SPLIT}:{splits.VALIDATION}"] if refit else 0)
        trainings[name] = (epochs_logged(training_dir), per_epoch)
    return {"seconds": (trainer.last_update_time_since_epoch
                        - trainer.create_time_since_epoch) / 1000,
            "trainings": trainings, "strategy": config.model.strategy,
            "hash_buckets": config.model.hash_buckets, "metadata": config.metadata_path}


def print_trainer(run: dict, rates: dict[int, dict[str, float]]) -> None:
    """`trainer_throughput`'s figures, and the share of the Trainer the steps alone
    would take at the measured rate (`rates`: rows per table -> strategy -> examples/s)
    of the run's strategy and table size."""
    epochs = sum(e for e, _ in run["trainings"].values())
    examples = sum(e * n for e, n in run["trainings"].values())
    print(f"\nTrainer of the last run in {run['metadata']}: {len(run['trainings'])} trainings, "
          f"{epochs} epochs, {examples:,} examples in {run['seconds']:.1f} s: "
          f"{examples / run['seconds']:,.0f} examples/s end to end")
    rate = rates.get(run["hash_buckets"], {}).get(run["strategy"])
    if rate is not None:
        busy = examples / rate
        print(f"  its steps alone at the {run['strategy']} step above ({rate:,.0f} "
              f"examples/s): {busy:.1f} s, {100 * busy / run['seconds']:.0f} % of the Trainer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="at most this many steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-seconds", type=float, default=2.0)
    parser.add_argument("--batches", type=int, default=100,
                        help="distinct batches, cycled (1: the same ids every step)")
    parser.add_argument("--hash-buckets", type=int, nargs="*", default=[1_000, 100_000, 1_000_000],
                        help="rows per categorical table, one measurement each (none: no table)")
    parser.add_argument("--embedding-optimizer", choices=["adam", "lazy_adam"],
                        default=ModelConfig().embedding_optimizer,
                        help="model.embedding_optimizer (default: the library's)")
    parser.add_argument("--run", metavar="CONFIG",
                        help="also the Trainer's end-to-end examples/s in this pipeline "
                             "config's last run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for --run, as `pfdx run --set`")
    args = parser.parse_args()
    run = trainer_throughput(args.run, args.set) if args.run else None
    print(f"batch {args.batch} ({args.batches} distinct), {args.rounds} rounds of up to "
          f"{args.steps} steps, "
          f"{len(schema.REGULAR_CATEGORICAL)} hashed features, {len(PRIVILEGED)} privileged "
          f"features, {os.cpu_count()} CPU cores, TF_NUM_INTRAOP_THREADS "
          f"{os.environ.get('TF_NUM_INTRAOP_THREADS', 'unset')}, TF_NUM_INTEROP_THREADS "
          f"{os.environ.get('TF_NUM_INTEROP_THREADS', 'unset')}")
    table = []
    for buckets in args.hash_buckets:
        base = dataclasses.replace(ModelConfig(), hash_buckets=buckets,
                                   embedding_optimizer=args.embedding_optimizer)
        result, n = measure(base, args.batch, args.batches, args.steps, args.rounds,
                            args.round_seconds)
        print(f"{buckets} rows per table ({n} steps per round):")
        for strategy, (wall, cpu, flush) in result.items():
            print(f"  {strategy:>10}: {args.batch / wall:9.0f} examples/s "
                  f"({1000 * wall:.1f} ms/step wall, {1000 * cpu:.1f} ms CPU), "
                  f"flush {1000 * flush:.1f} ms")
        ratio = {label: result["ha_pfd_v2"][i] / result["none"][i]
                 for i, label in enumerate(("wall", "CPU"))}
        for label, r in ratio.items():
            print(f"  ha_pfd_v2 step / student-only step ({label}): {r:.2f}x "
                  f"(target <= {TARGET_RATIO}x: {'met' if r <= TARGET_RATIO else 'NOT met'})")
        table.append((buckets, result))
    if table:
        print("\n| rows per table | none | ha_pfd_v2 |\n|---|---|---|")
    for buckets, result in table:
        cells = [f"{args.batch / w / 1000:.1f}k ex/s ({1000 * w:.1f} ms)"
                 for w, _, _ in (result["none"], result["ha_pfd_v2"])]
        print(f"| {buckets:,} | {cells[0]} | {cells[1]} |")
    if run is not None:
        print_trainer(run, {buckets: {s: args.batch / r[0] for s, r in result.items()}
                            for buckets, result in table})


if __name__ == "__main__":
    main()
