"""Share of the Trainer's step time spent waiting for input (issue 16, item 5).

    python bench/input_pipeline.py [--config pipeline/configs/simulated.yaml]
        [--set key=value ...] [--work DIR] [--epochs 3]

Runs the pipeline's DAG up to the Transform (LocalDagRunner; cached on a re-run
with the same --work), then reads the train split exactly as the Trainer does: TFX's
`data_accessor.tf_dataset_factory` for the Examples artifact (tfx-bsl: interleaved
gzip TFRecord reads, whole-split shuffle, batch, `parse_example_dataset`) and
`models/datasets.py transformed_dataset` (the TFT layer mapped with AUTOTUNE,
prefetch). It reports, for the configured strategy's model (`Fitter._build`):

- input alone: batches/s of the dataset iterated without training, and the first
  batch's wait (the whole-split shuffle buffer fills at the start of every epoch),
  with the configured `model.reader_threads` and with one parallel reader per core
  (tf.data's parallel interleave, as tfx-bsl reads by default); and the raw
  records alone at a larger scale: the split's files listed `--copies` times,
  through the same interleave and a 20k-row shuffle buffer, each reader setting;
- training on it, on what the Trainer trains on (a split within `model.cache_rows`:
  its Transform-ed rows held in memory, shuffled by index each epoch) and on the
  same batches replayed from memory (`Dataset.cache` filled beforehand), all with
  Keras' `fit` as the Trainer runs it, best of `--rounds`: the input share of step
  time is 1 - replayed / streaming (or / the Trainer's). The fit is
  timed around the call, so an epoch's start (the iterator, its shuffle-buffer fill)
  counts; the validation pass the Trainer adds per epoch does not run here.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pfdx  # noqa: E402,F401
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
from ml_metadata import metadata_store  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.components.util import tfxio_utils  # noqa: E402
from tfx.types import artifact_utils, standard_artifacts  # noqa: E402

from pfdx.components import splits  # noqa: E402
from pfdx.config import load_config  # noqa: E402
from pfdx.models import datasets, training  # noqa: E402
from pfdx.pipeline import dag, local_runner  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAST = "PrivilegedTransform"


def run_to_transform(config) -> None:
    """The DAG of `dag.create_components` up to and including the Transform."""
    components = dag.create_components(config, local_runner.ensure_input(config),
                                       config.serving_dir)
    keep = components[:[c.id for c in components].index(LAST) + 1]
    for c in keep:
        for d in list(c.downstream_nodes):
            if d not in keep:
                c.remove_downstream_node(d)
    os.makedirs(config.resolve("."), exist_ok=True)
    with local_runner.run_temp_dir(config.resolve(".")):
        tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
            pipeline_name=config.runner.pipeline_name, pipeline_root=config.pipeline_root,
            components=keep, enable_cache=True,
            metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                config.metadata_path),
            beam_pipeline_args=local_runner.beam_args(config)))


def latest(config, artifact_type):
    """The newest `artifact_type` artifact `config`'s runs recorded in MLMD."""
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path))
    artifacts = store.get_artifacts_by_type(artifact_type.TYPE_NAME)
    if not artifacts:
        raise SystemExit(f"no {artifact_type.TYPE_NAME} in {config.metadata_path}: "
                         "run the pipeline first")
    mlmd = max(artifacts, key=lambda a: a.id)
    artifact = artifact_type()
    artifact.set_mlmd_artifact(mlmd)
    return artifact


def epoch_seconds(model, dataset, epochs: int) -> tuple[float, float]:
    """(wall, CPU) seconds per epoch of `model.fit`, timed around the call: an epoch's
    iterator (and its shuffle-buffer fill) starts before Keras' epoch callbacks. CPU
    time counts the input pipeline's threads too, also where they overlap the steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(dataset, epochs=epochs, verbose=0)
    return (time.perf_counter() - wall) / epochs, (time.process_time() - cpu) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(REPO, "pipeline/configs/simulated.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--work", default=None, help="output root of the DAG run "
                        "(default: a fresh temporary folder)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed fit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--copies", type=int, default=25,
                        help="the train split's files read this many times over (raw reads)")
    parser.add_argument("--reuse", action="store_true",
                        help="read the last run's artifacts in --work; do not run the DAG")
    args = parser.parse_args()
    if args.work is None:  # a fresh folder, removed at the end
        with tempfile.TemporaryDirectory(prefix="pfdx-input-bench-") as work:
            measure(args, work)
    else:
        measure(args, args.work)


def raw_reads(patterns, copies: int, readers, rounds: int) -> None:
    """Seconds to read `patterns`' records `copies` times over, per reader setting
    (0: sequential interleave; N: N parallel readers), alternating, best of `rounds`."""
    files = [f for p in patterns for f in tf.io.gfile.glob(p)] * copies
    best = {}
    for _ in range(rounds):
        for threads in sorted(readers):
            records = tf.data.Dataset.from_tensor_slices(files).interleave(
                lambda f: tf.data.TFRecordDataset(f, "GZIP"), num_parallel_calls=threads or None)
            start = time.perf_counter()
            n = sum(int(tf.size(b)) for b in records.shuffle(20_000, seed=0).batch(512))
            best[threads] = min(best.get(threads, float("inf")), time.perf_counter() - start)
    for threads, seconds in sorted(best.items()):
        print(f"raw records x{copies} ({n} records), reader_threads {threads}: {seconds:.2f}s "
              f"({n / seconds:.0f} records/s)")


def measure(args: argparse.Namespace, work: str) -> None:
    """The figures of the module docstring for the DAG run under `work`."""
    config = load_config(args.config, [f"runner.output_root={work}", *args.overrides])

    if not args.reuse:
        start = time.perf_counter()
        run_to_transform(config)
        print(f"DAG up to the Transform: {time.perf_counter() - start:.0f}s ({work})")
    examples = latest(config, standard_artifacts.Examples)
    graph = latest(config, standard_artifacts.TransformGraph)
    tft_output = tft.TFTransformOutput(graph.uri)
    factory = tfxio_utils.get_tf_dataset_factory_from_artifact([examples], [])
    train, validation = ([os.path.join(artifact_utils.get_split_uri([examples], split), "*")]
                         for split in (splits.TRAIN, splits.VALIDATION))
    rows = datasets.count_records(train)
    m = config.model
    print(f"train split: {rows} rows, batch {m.batch_size}, strategy {m.strategy}, "
          f"hashed ids in {m.hash_rows_per_id} rows per id, at most {m.hash_buckets}, "
          f"{os.cpu_count()} CPU cores")

    def stream(run=config):
        return datasets.transformed_dataset(factory, train, tft_output, run, shuffle=True)

    # Input alone, alternating the configured readers and parallel ones.
    readers = {m.reader_threads, os.cpu_count()}
    for _ in range(args.rounds):
        for threads in sorted(readers):
            dataset = stream(config.with_model({"reader_threads": threads}))
            t0 = time.perf_counter()
            it = iter(dataset)
            next(it)
            first = time.perf_counter() - t0
            n = 1 + sum(1 for _ in it)
            total = time.perf_counter() - t0
            print(f"input alone, reader_threads {threads}: {n} batches in {total:.2f}s: first "
                  f"batch {1000 * first:.0f} ms, then {1000 * (total - first) / max(n - 1, 1):.1f} "
                  f"ms/batch ({rows / total:.0f} examples/s)")

    raw_reads(train, args.copies, readers, args.rounds)

    # A model is built for the validation split's batches (Fitter._build).
    fitter = training.Fitter(tft_output, factory, training.Splits(train, validation, []))
    model = fitter._build(config)
    epoch_seconds(model, stream(), 1)  # trace every batch shape
    cached = stream().cache()
    for _ in cached:  # fill the cache
        pass
    # What the Trainer trains on: a split within `model.cache_rows` is read once, then
    # its rows are shuffled by index each epoch and gathered (Fitter._train).
    trainer = fitter._train(config, train)
    for _ in range(2):
        t0 = time.perf_counter()
        n = sum(1 for _ in trainer)
        print(f"input alone, the Trainer's rows in memory: {n} batches in "
              f"{time.perf_counter() - t0:.2f}s")
    times = {"streaming": [], "trainer": [], "memory": []}
    for _ in range(args.rounds):  # alternating, best of each: the cores are shared
        for name, dataset in (("streaming", stream), ("trainer", lambda: trainer),
                              ("memory", lambda: cached)):
            times[name].append(epoch_seconds(model, dataset(), args.epochs))
    steps = -(-rows // m.batch_size)
    best = {name: min(w for w, _ in t) for name, t in times.items()}
    for name, label in (("streaming", "streaming input (every epoch reads, parses, transforms)"),
                        ("trainer", "the Trainer's (rows in memory, shuffled by index)"),
                        ("memory", "the same batches replayed (no shuffle)")):
        print(f"fit, {label}: {1000 * best[name] / steps:.1f} ms/step "
              f"({rows / best[name]:.0f} examples/s); per epoch: wall "
              f"{[round(w, 2) for w, _ in times[name]]} s, CPU "
              f"{[round(c, 2) for _, c in times[name]]} s")
    for name in ("streaming", "trainer"):
        print(f"share of step time waiting for input, {name}: "
              f"{max(0.0, 1 - best['memory'] / best[name]):.1%} (epochs of {steps} steps)")


if __name__ == "__main__":
    main()
