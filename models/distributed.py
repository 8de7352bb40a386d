"""Cross-replica views of the batch, so a step means the same on 1 or N replicas.

Under MirroredStrategy each replica sees a slice of the global batch and the
optimizer *sums* the replicas' gradients. A loss is therefore correct when each
replica contributes sum(its per-example losses) / global batch size, and a
batch-level statistic (a similarity matrix) must see the whole global batch.
Outside a multi-replica context both helpers are the identity.
"""
from __future__ import annotations

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf


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
