"""Serving cost of the exported student vs the teacher it learned from, in-process.

    python bench/serving.py [--requests 300] [--batch 512] [--hash-buckets N]
                            [--pushed DIR] [--config pipeline/configs/simulated.yaml]

Builds one trained-shape joint model (the default ModelConfig, the simulated log's
regular features and the paper's 10 privileged features, ids as the Transform
emits them), saves two SavedModels with `tf.saved_model.save` — the student as
`serving/export.py` exports it (regular features only) and the teacher (regular +
privileged embeddings and the teacher tower) — loads each back and times its
signature: latency at batch 1 (p50/p99 over --requests calls) and throughput at
--batch. Both models skip parsing and the TFT graph (identical for both), so the
figures compare the networks themselves. Prints both and the teacher/student ratios.

Then the student a pipeline run pushed (`make run` first; --pushed, default the
newest version under --config's serving folder), end to end as TF Serving calls it:
its size on disk and `serving_default` on serialized tf.Examples -- parsing, the
TFT graph and the network -- with the run's own warm-up requests as the examples.
And the time to build the two serving signatures (`serving/export.py`) on that
run's Transform output for a fresh student: what each export pays in tracing.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import pfdx  # noqa: E402,F401
import tensorflow as tf  # noqa: E402

from tfx.types import standard_artifacts  # noqa: E402

from pfdx.config import ModelConfig, PipelineConfig, load_config  # noqa: E402
from pfdx.serving.export import EXAMPLES_INPUT, WARMUP_FILE, StudentServingModule  # noqa: E402
from pfdx.models.datasets import vocabularies as transform_vocabularies  # noqa: E402
from pfdx.models.model import build_model  # noqa: E402
from input_pipeline import latest  # noqa: E402
from train_step import batch, vocabularies  # noqa: E402


def save(fn, holder: tf.Module, specs: dict, path: str):
    holder.serve = tf.function(fn, input_signature=[specs])
    tf.saved_model.save(holder, path, signatures={"serving_default": holder.serve})
    return tf.saved_model.load(path).signatures["serving_default"]


def exported(config: ModelConfig, workdir: str):
    """(student, teacher) loaded SavedModel signatures, and the feature names each takes."""
    regular, privileged = vocabularies(config)
    model = build_model(config, regular, privileged)
    model.loss_terms(*batch(regular, privileged, 8))  # creates every variable
    spec = lambda names: {n: tf.TensorSpec([None], tf.int64, name=n) for n in names}  # noqa: E731

    student = tf.Module()
    student.model = model.student_model()
    student_fn = save(lambda f: {"cvr": student.model(f)}, student, spec(regular),
                      os.path.join(workdir, "student"))
    teacher = tf.Module()
    teacher.model = model
    teacher_fn = save(lambda f: {"cvr": tf.sigmoid(tf.reshape(teacher.model.forward(f).teacher_logit, [-1]))},
                      teacher, spec({**regular, **privileged}), os.path.join(workdir, "teacher"))
    return (student_fn, list(regular)), (teacher_fn, list({**regular, **privileged}))


def id_timings(fn, names, config: ModelConfig, requests: int, batch_size: int,
               seed: int = 0) -> dict[str, float]:
    """`timings` of a signature on transformed ids of `config`'s tables."""
    feats, _ = batch(*vocabularies(config), max(batch_size, 1), seed)
    one = {n: feats[n][:1] for n in names}
    big = {n: feats[n][:batch_size] for n in names}
    return timings(lambda: fn(**one)["cvr"].numpy(), lambda: fn(**big)["cvr"].numpy(),
                   requests, batch_size)


def timings(call_one, call_batch, requests: int, batch_size: int) -> dict[str, float]:
    """Latency of `call_one` (one example: p50 / p99 over `requests` calls) and the
    throughput of `call_batch` (`batch_size` examples)."""
    for _ in range(20):  # warm-up: first calls build kernels and caches
        call_one()
    lat = []
    for _ in range(requests):
        t = time.perf_counter()
        call_one()
        lat.append(time.perf_counter() - t)
    call_batch()
    rounds = max(3, requests // 30)
    t = time.perf_counter()
    for _ in range(rounds):
        call_batch()
    per_batch = (time.perf_counter() - t) / rounds
    ms = np.array(lat) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "examples_per_s": batch_size / per_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--hash-buckets", type=int, default=ModelConfig.hash_buckets)
    parser.add_argument("--pushed", help="a pushed student's version folder (default: the "
                        "newest under --config's serving folder)")
    parser.add_argument("--config", default="pipeline/configs/simulated.yaml")
    args = parser.parse_args()
    config = dataclasses.replace(ModelConfig(), hash_buckets=args.hash_buckets)
    with tempfile.TemporaryDirectory() as workdir:
        (s_fn, s_names), (t_fn, t_names) = exported(config, workdir)
        sizes = {k: sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
                        os.walk(os.path.join(workdir, k)) for f in fs) / 2**20
                 for k in ("student", "teacher")}
        # Interleaved rounds, so a burst of load elsewhere hits both alike.
        rounds = {"student": [], "teacher": []}
        for r in range(3):
            for name, fn, names in (("student", s_fn, s_names), ("teacher", t_fn, t_names)):
                rounds[name].append(id_timings(fn, names, config, args.requests, args.batch, r))
    print(f"strategy {config.strategy}, hash_buckets {config.hash_buckets}, "
          f"{len(s_names)} regular / {len(t_names) - len(s_names)} privileged features")
    med = {k: {m: float(np.median([r[m] for r in v])) for m in v[0]} for k, v in rounds.items()}
    print(f"{'model':8} {'size MB':>8} {'p50 ms (b=1)':>13} {'p99 ms (b=1)':>13} "
          f"{'examples/s (b=' + str(args.batch) + ')':>20}")
    for k in ("student", "teacher"):
        m = med[k]
        print(f"{k:8} {sizes[k]:8.1f} {m['p50_ms']:13.3f} {m['p99_ms']:13.3f} "
              f"{m['examples_per_s']:20.0f}")
    s, t = med["student"], med["teacher"]
    print(f"teacher/student: p50 x{t['p50_ms'] / s['p50_ms']:.2f}, p99 x{t['p99_ms'] / s['p99_ms']:.2f}, "
          f"throughput x{t['examples_per_s'] / s['examples_per_s']:.2f} "
          f"(median of 3 interleaved rounds)")
    run = load_config(args.config)
    pushed = args.pushed or newest_version(run.serving_dir)
    if pushed is None:
        print(f"no pushed student under {run.serving_dir}: `make run` first, or pass --pushed")
    else:
        end_to_end(pushed, args.requests, args.batch)
    if os.path.exists(run.metadata_path):  # the newest Transform of the run's MLMD
        signature_build(run, latest(run, standard_artifacts.TransformGraph).uri)


def signature_build(config: PipelineConfig, transform_dir: str) -> None:
    """Seconds to trace the serving signatures of a fresh student on `transform_dir`,
    twice (the first one in a process also builds what traces share)."""
    import tensorflow_transform as tft
    output = tft.TFTransformOutput(transform_dir)
    regular, privileged = transform_vocabularies(config, output)
    model = build_model(config.model, regular, privileged)
    model.loss_terms(*batch(regular, privileged, 8))  # creates every variable
    times = []
    for _ in range(2):
        start = time.perf_counter()
        StudentServingModule(model.student_model(), output, regular).signatures()
        times.append(time.perf_counter() - start)
    print(f"\nserving signatures of a fresh student on {transform_dir}: built in "
          f"{times[0]:.2f} s, then {times[1]:.2f} s")


def newest_version(serving_dir: str) -> str | None:
    """The newest TF Serving version folder (the Pusher names them by time) under
    `serving_dir`, or None."""
    if not os.path.isdir(serving_dir):
        return None
    versions = sorted((d for d in os.listdir(serving_dir) if d.isdigit()), key=int)
    return os.path.join(serving_dir, versions[-1]) if versions else None


def warmup_examples(export_dir: str) -> list[bytes]:
    """The serialized tf.Examples of the export's largest warm-up request."""
    from tensorflow_serving.apis import prediction_log_pb2

    requests = [prediction_log_pb2.PredictionLog.FromString(r.numpy()).predict_log.request
                for r in tf.data.TFRecordDataset(os.path.join(export_dir, WARMUP_FILE))]
    return max((list(r.inputs[EXAMPLES_INPUT].string_val) for r in requests), key=len)


def end_to_end(export_dir: str, requests: int, batch_size: int) -> None:
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(export_dir)
               for f in fs) / 2**20
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    examples = warmup_examples(export_dir)
    one = tf.constant(examples[:1])
    big = tf.constant((examples * (batch_size // len(examples) + 1))[:batch_size])
    rounds = [timings(lambda: serve(examples=one)["cvr"].numpy(),
                      lambda: serve(examples=big)["cvr"].numpy(), requests, batch_size)
              for _ in range(3)]
    m = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}
    print(f"\npushed student {export_dir} through serving_default (tf.Example parsing + "
          f"TFT graph + network; median of 3 rounds):")
    print(f"size {size:.1f} MB, p50 {m['p50_ms']:.3f} ms, p99 {m['p99_ms']:.3f} ms (batch 1), "
          f"{m['examples_per_s']:.0f} examples/s (batch {batch_size})")


if __name__ == "__main__":
    main()
