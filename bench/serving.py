"""Serving cost of the exported student vs the teacher it learned from, in-process.

    python bench/serving.py [--requests 300] [--batch 512] [--hash-buckets N]

Builds one trained-shape joint model (the default ModelConfig, the simulated log's
regular features and the paper's 10 privileged features, ids as the Transform
emits them), saves two SavedModels with `tf.saved_model.save` — the student as
`serving/export.py` exports it (regular features only) and the teacher (regular +
privileged embeddings and the teacher tower) — loads each back and times its
signature: latency at batch 1 (p50/p99 over --requests calls) and throughput at
--batch. Both models skip parsing and the TFT graph (identical for both), so the
figures compare the networks themselves. Prints both and the teacher/student ratios.
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

from pfdx.config import ModelConfig  # noqa: E402
from pfdx.models.model import build_model  # noqa: E402
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


def timings(fn, names, requests: int, batch_size: int, seed: int = 0) -> dict[str, float]:
    regular, privileged = vocabularies(ModelConfig())
    feats, _ = batch(regular, privileged, max(batch_size, 1), seed)
    one = {n: feats[n][:1] for n in names}
    big = {n: feats[n][:batch_size] for n in names}
    for _ in range(20):  # warm-up: first calls build kernels and caches
        fn(**one)["cvr"].numpy()
    lat = []
    for _ in range(requests):
        t = time.perf_counter()
        fn(**one)["cvr"].numpy()
        lat.append(time.perf_counter() - t)
    fn(**big)["cvr"].numpy()
    rounds = max(3, requests // 30)
    t = time.perf_counter()
    for _ in range(rounds):
        fn(**big)["cvr"].numpy()
    per_batch = (time.perf_counter() - t) / rounds
    ms = np.array(lat) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "examples_per_s": batch_size / per_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--hash-buckets", type=int, default=ModelConfig.hash_buckets)
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
            rounds["student"].append(timings(s_fn, s_names, args.requests, args.batch, r))
            rounds["teacher"].append(timings(t_fn, t_names, args.requests, args.batch, r))
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


if __name__ == "__main__":
    main()
