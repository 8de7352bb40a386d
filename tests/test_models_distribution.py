"""One training step on 2 MirroredStrategy replicas equals the same step on 1 device.

Logical devices must be configured before TensorFlow initialises its devices, which
the rest of the test session has already done; so the check runs this file as a
script in a fresh process (`python tests/test_models_distribution.py`), which
prints its findings as JSON for the test to assert on.

SGD makes the updated weights proportional to the gradient, so a gradient scaled
by the number of replicas (a per-replica mean) shows; the Adam step checks the
configured optimizer (weight decay, global-norm clip) on the same path, and the
row-sparse one (`lazy_adam`) with its end-of-epoch catch-up. The global
batch (63) is odd, so the replicas get 32 and 31 rows.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

GLOBAL_BATCH = 63
# similarity_kd: its batch-level loss must see the whole global batch.
# lazy_adam: row-sparse steps and the flush at the epoch's end on mirrored tables.
CHECKS = (("ha_pfd_v2", "sgd"), ("ha_pfd_v2", "adam"), ("ha_pfd_v2", "lazy_adam"),
          ("similarity_kd", "sgd"))


def _batch(np, tf):
    rng = np.random.default_rng(3)
    n = GLOBAL_BATCH
    features = {
        "user_id": tf.constant(np.array([f"u{i}" for i in rng.integers(0, 40, n)])),
        "bid": tf.constant(rng.integers(0, 9, [n, 1])),
        "privileged__page_jump": tf.constant(rng.integers(0, 3, n)),
        "privileged__duration": tf.constant(rng.integers(0, 3, n)),
    }
    return features, tf.constant(rng.integers(0, 2, n))


def _one_step(tf, strategy, config, batch, optimizer: str):
    from pfdx.models.model import JointModel, make_optimizer

    regular = {"user_id": 50, "bid": 9}
    privileged = {"privileged__page_jump": 3, "privileged__duration": 3}
    with strategy.scope():
        model = JointModel(config, regular, privileged)
        # One loss computation creates every variable, the strategy's included.
        strategy.run(model.compute_loss, args=(batch,))
        model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=0.5) if optimizer == "sgd"
                      else make_optimizer(dataclasses.replace(config,
                                                              embedding_optimizer=optimizer)))
    return model


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import pfdx  # noqa: F401
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from pfdx.config import AlignmentConfig, ModelConfig

    batch = _batch(np, tf)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = []
    for name, optimizer in CHECKS:
        config = ModelConfig(strategy=name, hidden_units=(32, 16),
                             alignment=AlignmentConfig(mapping_hidden_units=(8,)))
        tf.keras.utils.set_random_seed(0)
        one = _one_step(tf, tf.distribute.get_strategy(), config, batch, optimizer)
        two = _one_step(tf, mirrored, config, batch, optimizer)
        two.set_weights(one.get_weights())
        before = [v.numpy() for v in one.trainable_variables]
        data = tf.data.Dataset.from_tensors(batch)
        logs = [m.fit(data, epochs=1, verbose=0).history for m in (one, two)]
        after = [[v.numpy() for v in m.trainable_variables] for m in (one, two)]
        moved = [np.abs(a - b).max() for a, b in zip(after[0], before)]
        results.append({
            "strategy": name, "optimizer": optimizer,
            "replicas": two.distribute_strategy.num_replicas_in_sync,
            "loss": [h["loss"][0] for h in logs],
            "auc": [h["student_auc"][0] for h in logs],
            "max_weight_diff": float(max(np.abs(a - b).max() for a, b in zip(*after))),
            "min_update": float(min(moved)), "max_update": float(max(moved)),
        })
    print(json.dumps(results))


@pytest.fixture(scope="module")
def results():
    proc = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    return {(r["strategy"], r["optimizer"]): r for r in found}


@pytest.mark.parametrize("strategy,optimizer", CHECKS)
def test_two_replicas_match_one_device(results, strategy, optimizer):
    r = results[(strategy, optimizer)]
    assert r["replicas"] == 2
    one, two = r["loss"]
    assert two == pytest.approx(one, rel=1e-5)
    assert r["auc"][1] == pytest.approx(r["auc"][0], abs=1e-6)
    # Every variable moved, and both runs moved it the same way.
    assert r["min_update"] > 0
    assert r["max_weight_diff"] < 1e-5 * max(1.0, r["max_update"])


if __name__ == "__main__":
    main()
