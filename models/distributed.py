"""Training on several replicas: which tf.distribute strategy (`distribution_strategy`,
for the Trainer and `pfdx compare`), and cross-replica views of the batch, so a step
means the same on 1 or N replicas.

Under MirroredStrategy each replica sees a slice of the global batch and the
optimizer *sums* the replicas' gradients. A loss is therefore correct when each
replica contributes sum(its per-example losses) / global batch size, and a
batch-level statistic (a similarity matrix) must see the whole global batch.
Outside a multi-replica context both helpers are the identity.
"""
from __future__ import annotations

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf


def distribution_strategy(distribution: str = "auto") -> tf.distribute.Strategy:
    """The tf.distribute strategy named by `model.distribution`.

    `auto` follows TF_CONFIG, which a multi-host job sets on every replica (Vertex AI
    worker pools, a Kubeflow TFJob): more than one chief/worker -> synchronous
    all-reduce across hosts (MultiWorkerMirroredStrategy); otherwise all local GPUs
    when there are several (MirroredStrategy), else `one_device`: TensorFlow's default
    strategy, which places ops on the one GPU or the CPU. One device gains nothing from
    mirroring and pays for it: a MirroredStrategy over the CPU alone made the HA-PFD V2
    step 2.5x slower (bench/results/README.md, "train step"). (Not OneDeviceStrategy,
    which is as fast but which Keras' BackupAndRestore refuses.)
    """
    if distribution == "auto":
        cluster = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
        hosts = sum(cluster.num_tasks(job) for job in ("chief", "worker") if job in cluster.jobs)
        if hosts > 1:
            distribution = "multi_worker"
        # Physical devices: listing logical ones would start the runtime, which
        # MultiWorkerMirroredStrategy must configure first.
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            distribution = "mirrored"
        else:
            distribution = "one_device"
    if distribution == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if distribution == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribution == "one_device":
        return tf.distribute.get_strategy()
    raise ValueError(f"model.distribution: {distribution!r} is not one of auto, one_device, "
                     "mirrored, multi_worker")


def _multi_replica_context() -> tf.distribute.ReplicaContext | None:
    ctx = tf.distribute.get_replica_context()
    return ctx if ctx is not None and ctx.num_replicas_in_sync > 1 else None


def global_batch_size(local_size: tf.Tensor) -> tf.Tensor:
    """The global batch size, summed over replicas: exact also when the last batch
    splits unevenly (or leaves a replica empty), unlike local size x replicas."""
    ctx = _multi_replica_context()
    return local_size if ctx is None else ctx.all_reduce(tf.distribute.ReduceOp.SUM, local_size)


def gather_batch(x: tf.Tensor) -> tf.Tensor:
    """`x` of every replica, concatenated along the batch axis. Its gradient flows
    back to each replica's own slice (TF all-reduces it and slices)."""
    ctx = _multi_replica_context()
    return x if ctx is None else ctx.all_gather(x, axis=0)
