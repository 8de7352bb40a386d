"""The Trainer's strategy choice, and a real 2-worker MultiWorkerMirroredStrategy on loopback.

Each worker is a subprocess with its own TF_CONFIG, as on a multi-host Kubeflow /
Vertex AI job. The workers start from different seeds and read different data: they
can only end with identical weights if the strategy broadcast the initial weights
and all-reduced every gradient step.
"""
import json
import os
import subprocess
import sys

import numpy as np
import portpicker
import pytest

STEPS = 5


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def test_one_host_without_gpus_gets_the_default_strategy(monkeypatch):
    from pfdx.models.distributed import distribution_strategy
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribution_strategy() is tf.distribute.get_strategy()  # nothing mirrored
    assert distribution_strategy("one_device").num_replicas_in_sync == 1
    # An explicit choice wins over TF_CONFIG (here: no cluster is contacted).
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 0))
    assert type(distribution_strategy("mirrored")) is tf.distribute.MirroredStrategy
    with pytest.raises(ValueError, match="model.distribution: 'ring'"):
        distribution_strategy("ring")


def test_two_workers_on_loopback_end_with_identical_weights(tmp_path):
    ports = [portpicker.pick_unused_port() for _ in range(2)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS="1",
               GRPC_ENABLE_FORK_SUPPORT="false")
    workers = [subprocess.Popen(
        [sys.executable, __file__, str(i), json.dumps(ports), str(tmp_path / f"w{i}.npz")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outputs = []
    try:
        for w in workers:
            outputs.append(w.communicate(timeout=150)[0])
    finally:
        for w in workers:  # a worker whose peer died waits for it forever
            if w.poll() is None:
                w.kill()
                w.wait()
    for i, (w, out) in enumerate(zip(workers, outputs)):
        assert w.returncode == 0, f"worker {i} failed:\n{out[-3000:]}"
        assert "multi_worker=True replicas=2" in out, out[-3000:]
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    assert w0.files == w1.files and w0.files
    for name in w0.files:
        np.testing.assert_array_equal(w0[name], w1[name], err_msg=name)
    trained = np.load(tmp_path / "w0.npz")
    initial = np.load(tmp_path / "w0.npz.initial.npz")
    assert any(not np.array_equal(trained[n], initial[n]) for n in trained.files), "no step ran"


def _worker(index: int, ports: list[int], out: str) -> None:
    """One worker: the Trainer's strategy choice from TF_CONFIG, then a few synchronous steps."""
    os.environ["TF_CONFIG"] = _tf_config(ports, index)
    from pfdx.models.distributed import distribution_strategy
    import tensorflow as tf

    strategy = distribution_strategy()  # first: it must start before any other TF op
    print(f"multi_worker={isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)} "
          f"replicas={strategy.num_replicas_in_sync}", flush=True)
    tf.keras.utils.set_random_seed(100 + index)
    rng = np.random.default_rng(index)
    x = rng.normal(size=(16 * STEPS, 4)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 0).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).repeat()
    options = tf.data.Options()
    # Each worker keeps its own data, as it would read its own files.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input(shape=(4,)),
                                     tf.keras.layers.Dense(8, activation="relu"),
                                     tf.keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    np.savez(out + ".initial.npz", **{w.name: w.numpy() for w in model.weights})
    model.fit(data.with_options(options), epochs=1, steps_per_epoch=STEPS, verbose=0)
    np.savez(out, **{w.name: w.numpy() for w in model.weights})


if __name__ == "__main__":
    _worker(int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3])
