"""Adam with decoupled weight decay whose embedding updates touch only the batch's rows.

Keras' Adam updates every row of a table on every step, even for a sparse
(`tf.IndexedSlices`) gradient: it decays both moments and moves the weights of the
whole table, and its decoupled weight decay shrinks every row too. A step then costs
the size of the tables, not of the batch: 11 tables x 100k rows x 16 floats on the
simulated log, 25x the compute of the network itself (issue 16,
`bench/train_step.py`).

`LazyAdam` is the "lazy" Adam of CTR systems (TF-Addons' `LazyAdam`, TF Recommenders'
embedding optimizers): a sparse gradient updates the moments and weights of the rows
it holds (duplicates summed first), with the global step's bias correction, and the
weight decay applies to those rows only. A row no example touched keeps its weights
and its moments. Dense gradients (the towers, the mapping nets) get Keras' Adam and
its decoupled weight decay unchanged. Against the paper's "Adam, weight decay 0.001"
(HA-PFD appendix A) this differs only for embedding rows absent from a batch:
docs/paper-deviations.md item 12.
"""
from __future__ import annotations

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf


class LazyAdam(tf.keras.optimizers.Adam):
    """Keras' Adam (with `weight_decay`), row-sparse for `tf.IndexedSlices` gradients."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("LazyAdam: amsgrad keeps a running maximum of every row; "
                             "use tf.keras.optimizers.Adam for it")
        self._sparse_keys: set[str] = set()

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        grads_and_vars = list(grads_and_vars)
        # Which variables get row gradients is known when the step is traced.
        self._sparse_keys = {self._var_key(v) for g, v in grads_and_vars
                             if isinstance(g, tf.IndexedSlices)}
        return super().apply_gradients(grads_and_vars, *args, **kwargs)

    def _apply_weight_decay(self, variables):
        # Row-sparse variables are decayed in `update_step`, on their batch's rows.
        super()._apply_weight_decay(
            [v for v in variables if self._var_key(v) not in self._sparse_keys])

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        local_step = tf.cast(self.iterations + 1, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, local_step)) / (1 - tf.pow(beta_1, local_step))
        epsilon = self.epsilon * tf.sqrt(1 - tf.pow(beta_2, local_step)) \
            if self.adaptive_epsilon else self.epsilon

        rows, position = tf.unique(gradient.indices)
        grad = tf.math.unsorted_segment_sum(gradient.values, position, tf.size(rows))
        var_key = self._var_key(variable)
        m = self._momentums[self._index_dict[var_key]]
        v = self._velocities[self._index_dict[var_key]]
        m_rows = tf.gather(m, rows) * beta_1 + grad * (1 - beta_1)
        v_rows = tf.gather(v, rows) * beta_2 + tf.square(grad) * (1 - beta_2)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        delta = alpha * m_rows / (tf.sqrt(v_rows) + epsilon)
        if self.weight_decay is not None and self._use_weight_decay(variable):
            delta += lr * tf.cast(self.weight_decay, dtype) * tf.gather(variable, rows)
        variable.scatter_sub(tf.IndexedSlices(delta, rows))
