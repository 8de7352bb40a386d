"""Adam with decoupled weight decay whose embedding updates touch only the batch's rows.

Keras' Adam updates every row of a table on every step, even for a sparse
(`tf.IndexedSlices`) gradient: it decays both moments and moves the weights of the
whole table, and its decoupled weight decay shrinks every row too. A step then costs
the size of the tables, not of the batch: 11 tables x 100k rows x 16 floats on the
simulated log, 25x the compute of the network itself (issue 16,
`bench/train_step.py`).

`LazyAdam` updates only the rows a sparse gradient holds (duplicates summed first), as
the "lazy" Adam of CTR systems (TF-Addons' `LazyAdam`) does, but it does not drop what
Keras' Adam does to the other rows: a row absent from a step keeps moving on its
momentum, which decays by beta_1 a step while its velocity decays by beta_2, and it
is weight-decayed. Those moves are a geometric series, so each row records the step
it was last updated and catches up on the steps it missed when it is next looked up
(`_catch_up`), and `flush()` catches every row up. That momentum tail is most of a
rare id's learning: after one touch Adam moves the row about 10x further than the
touch itself at beta_1 0.9, and plain lazy Adam, which drops it, lost 0.04 AUC on
KuaiRand (docs/paper-deviations.md item 12).

The catch-up is exact but for epsilon, which it scales with the velocity's decay (a
relative error below 1 - sqrt(beta_2)^j on the j-th missed step, whose weight falls as
beta_1^j), and for missed steps beyond 64 in a row, whose tiny sum takes one step size:
tests/test_models_optimizers.py compares it with Keras' Adam. Before a row is caught
up, the forward pass reads it without its pending moves, so a flush is due wherever
weights are read for more than a training step: `JointModel` flushes before
evaluating or predicting and at each epoch's end, and Keras calls
`finalize_variable_values` at the end of `fit`. Dense gradients (the towers, the
mapping nets) get Keras' Adam and its decoupled weight decay unchanged.

On CPU a step's cost is the number of its ops more than their size, so one step
updates the rows of all tables together (`_update_rows`): their ids offset into one
row space, one unique, one catch-up and Adam over all rows, then a scatter per table.
The catch-up depends on a row's last step alone, so it is computed once per distinct
last step.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf

from pfdx.models.layers import nonzero_rows

# Missed steps summed term by term (bias correction varies per step); the rest, whose
# weight is below (beta_1 / sqrt(beta_2)) ** 64 ~ 0.1 % of the first, in closed form.
_EXACT_STEPS = 64


class _Hyper(NamedTuple):
    """What the catch-up reads of an optimizer: its learning rate (a tensor of the
    rows' dtype) and its constants."""

    lr: tf.Tensor
    beta_1: float
    beta_2: float
    epsilon: float
    adaptive_epsilon: bool


def _step_size(h: _Hyper, beta_1_power, beta_2_power) -> tf.Tensor:
    """lr sqrt(1 - beta_2^t) / (1 - beta_1^t), from the two powers at step t."""
    return h.lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)


def _epsilon(h: _Hyper, step: tf.Tensor):
    """Keras' epsilon at `step` (scaled there with `adaptive_epsilon`)."""
    if not h.adaptive_epsilon:
        return h.epsilon
    return h.epsilon * tf.sqrt(1 - tf.pow(tf.cast(h.beta_2, step.dtype), step))


def _catch_up(h: _Hyper, decay, steps, weights, m_rows, v_rows, first):
    """Weights, momentum and velocity of rows (`weights`, `m_rows`, `v_rows`, last
    updated at step `first`) after the steps `first + 1 .. steps` without a
    gradient, as Keras' Adam would have left them, at weight decay `decay`."""
    dtype = weights.dtype
    beta_1, beta_2 = tf.cast(h.beta_1, dtype), tf.cast(h.beta_2, dtype)
    # The catch-up of a row depends on its last step alone, and rows share them.
    firsts, row_first = tf.unique(first)
    missed = tf.maximum(steps - firsts, 0.0)
    # Missed step j decays the row by (1 - c), c = lr * weight_decay, then moves it
    # by alpha(first + j) * beta_1^j m / (beta_2^(j/2) sqrt(v) + eps). With eps
    # scaled like sqrt(v), after k steps: (1 - c)^k (w - F m / (sqrt(v) + eps)),
    # F = sum_j alpha(first + j) r^j, r = beta_1 / (sqrt(beta_2) (1 - c)).
    ratio = beta_1 / (tf.sqrt(beta_2) * (1 - decay))
    beyond = tf.maximum(missed - _EXACT_STEPS, 0.0)
    # The powers as one exp (tf.pow is a scalar loop per element): beta_1^first,
    # beta_2^first, r^beyond, (1 - c)^missed, beta_1^missed, beta_2^missed.
    bases = tf.stack([beta_1, beta_2, ratio, 1 - decay, beta_1, beta_2])
    b1_first, b2_first, r_beyond, kept, b1_missed, b2_missed = tf.unstack(tf.exp(
        tf.stack([firsts, firsts, beyond, missed, missed, missed], 1) * tf.math.log(bases)),
        axis=1)
    j = tf.range(1, _EXACT_STEPS + 1, dtype=dtype)
    # alpha(first + j) with beta^(first + j) = beta^first beta^j.
    terms = tf.pow(ratio, j) * _step_size(
        h, b1_first[:, None] * tf.pow(beta_1, j), b2_first[:, None] * tf.pow(beta_2, j))
    factor = tf.reduce_sum(tf.where(j <= missed[:, None], terms, 0.0), axis=1)
    after = _EXACT_STEPS + 1  # alpha(first + after) for every step beyond
    factor += (_step_size(h, b1_first * beta_1 ** after, b2_first * beta_2 ** after)
               * ratio ** after * (1 - r_beyond) / (1 - ratio))
    shape = [-1] + [1] * (weights.shape.rank - 1)
    kept, factor, b1_missed, b2_missed = (
        tf.reshape(t, shape) for t in tf.unstack(tf.gather(
            tf.stack([kept, factor, b1_missed, b2_missed], 1), row_first), axis=1))
    weights = kept * (weights - factor * m_rows / (tf.sqrt(v_rows) + _epsilon(h, steps)))
    return weights, m_rows * b1_missed, v_rows * b2_missed


# A flush catches whole tables up in one graph per process (its shapes relaxed after
# the second table), shared by every optimizer: eagerly it cost about 50 op dispatches
# a table, 30 of the 204 s of `make run`'s Trainer under cProfile (one flush before
# each validation pass).
@functools.partial(tf.function, reduce_retracing=True, autograph=False)
def _caught_up_table(h: _Hyper, decay, steps, weights, m, v, first):
    """A whole table caught up to `steps`, as (every row's weights with the weight
    decay it missed, the moving rows, their caught-up weights, momentum and
    velocity): `_catch_up` of every row, in two parts. Only a row with a moment
    moves and has moments to decay; a row no gradient ever reached (or whose moments
    decayed to zero) has both zero and only weight decay to catch up on, a factor
    per row (`_catch_up`'s own). So the whole table takes one pass of decay, and
    Adam's catch-up runs on the rows a gradient reached: about 2 % of `make run`'s
    100k-row tables."""
    moving = tf.where(tf.reduce_any(tf.not_equal(v, 0.0) | tf.not_equal(m, 0.0), axis=1))[:, 0]
    caught_up = _catch_up(h, decay, steps, *(tf.gather(t, moving) for t in (weights, m, v, first)))
    kept = tf.exp(tf.maximum(steps - first, 0.0) * tf.math.log(1 - decay))
    return (weights * kept[:, None], moving, *caught_up)


class LazyAdam(tf.keras.optimizers.Adam):
    """Keras' Adam (with `weight_decay`), row-sparse for `tf.IndexedSlices` gradients,
    with every row caught up on the steps it missed (`flush`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("LazyAdam: amsgrad keeps a running maximum of every row; "
                             "use tf.keras.optimizers.Adam for it")
        if self.use_ema:
            raise ValueError("LazyAdam: use_ema's averages are kept by Keras' update of "
                             "each variable, which the embedding tables skip; use "
                             "tf.keras.optimizers.Adam for it")
        self._sparse_keys: set[str] = set()
        # Every variable stepped by rows so far (references: not tracked, not saved).
        self._row_variables: set = set()
        self._flushed_at = 0

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_last_steps", None) is not None:
            return
        # Per row of each table-shaped variable: the step that last updated it (0: none).
        self._last_steps = [
            self.add_variable(shape=var.shape[:1], dtype=var.dtype,
                              name=f"{self._var_key(var).replace('/', '_')}_last_step")
            if var.shape.rank and var.shape.rank >= 2 else None for var in var_list]

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        grads_and_vars = list(grads_and_vars)
        # Which variables get row gradients is known when the step is traced.
        rows = [v for g, v in grads_and_vars if isinstance(g, tf.IndexedSlices)]
        self._sparse_keys = {self._var_key(v) for v in rows}
        self._row_variables |= {v.ref() for v in rows}
        return super().apply_gradients(grads_and_vars, *args, **kwargs)

    def _deduplicate_sparse_grad(self, grads):
        # `_update_rows` sums duplicate ids of every table at once.
        return grads

    def _apply_weight_decay(self, variables):
        # Row-sparse variables are decayed in `_update_rows`, on their batch's rows.
        super()._apply_weight_decay(
            [v for v in variables if self._var_key(v) not in self._sparse_keys])

    def _distributed_apply_gradients_fn(self, distribution, grads_and_vars, **kwargs):
        # Keras calls this in cross-replica context (also without a strategy), then
        # updates each variable on each replica; the row gradients of all tables
        # instead step together, in one update per replica.
        rows = [(g, v) for g, v in grads_and_vars if self._var_key(v) in self._sparse_keys]
        if rows:
            grads, variables = zip(*rows)
            distribution.extended.update(
                variables[0], lambda _, grads: self._update_rows(grads, variables),
                args=(list(grads),), group=False)
        return super()._distributed_apply_gradients_fn(
            distribution, [(g, v) for g, v in grads_and_vars
                           if self._var_key(v) not in self._sparse_keys], **kwargs)

    def _hyper(self, dtype) -> _Hyper:
        return _Hyper(tf.cast(self.learning_rate, dtype), self.beta_1, self.beta_2,
                      self.epsilon, self.adaptive_epsilon)

    def _decay(self, variable) -> tf.Tensor:
        """The decoupled weight decay's shrink per step, lr * weight_decay (0: none)."""
        dtype = variable.dtype
        if self.weight_decay is None or not self._use_weight_decay(variable):
            return tf.constant(0.0, dtype)
        return tf.cast(self.learning_rate, dtype) * tf.cast(self.weight_decay, dtype)

    def _slots(self, variable) -> tuple:
        index = self._index_dict[self._var_key(variable)]
        return self._momentums[index], self._velocities[index], self._last_steps[index]

    def _update_rows(self, grads, variables) -> None:
        """Adam on the rows of `variables` in their `grads` (tf.IndexedSlices), each
        row caught up first: tables of one row shape, dtype and weight decay as one."""
        groups: dict[tuple, list] = {}
        for grad, variable in zip(grads, variables):
            key = (variable.dtype, tuple(variable.shape[1:]), self._use_weight_decay(variable))
            groups.setdefault(key, []).append((grad, variable))
        for group in groups.values():
            self._update_group(*zip(*group))

    def _update_group(self, grads, variables) -> None:
        dtype = variables[0].dtype
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        # One row space: table k's ids offset by the rows of the tables before it.
        offsets = np.cumsum([0] + [v.shape[0] for v in variables], dtype=np.int64)
        ids = tf.concat([tf.cast(g.indices, tf.int64) + o for g, o in zip(grads, offsets)], 0)
        rows, position = tf.unique(ids)
        grad = tf.math.unsorted_segment_sum(tf.concat([g.values for g in grads], 0),
                                            position, tf.size(rows))
        # tf.unique keeps first appearances in order, so each table's rows come
        # together, in table order.
        table = tf.searchsorted(offsets[1:], rows, side="right")
        counts = tf.math.bincount(tf.cast(table, tf.int32), minlength=len(variables),
                                  maxlength=len(variables))
        local = tf.split(rows - tf.gather(offsets, table), counts, num=len(variables))
        slots = [self._slots(v) for v in variables]
        weights, m_rows, v_rows, first = (
            tf.concat([tf.gather(t, r) for t, r in zip(tables, local)], 0)
            for tables in (variables, *zip(*slots)))
        decay, h = self._decay(variables[0]), self._hyper(dtype)
        weights, m_rows, v_rows = _catch_up(h, decay, step - 1, weights, m_rows, v_rows, first)
        m_rows = m_rows * beta_1 + grad * (1 - beta_1)
        v_rows = v_rows * beta_2 + tf.square(grad) * (1 - beta_2)
        # Keras' order: the decoupled weight decay, then the Adam move.
        alpha = _step_size(h, tf.pow(beta_1, step), tf.pow(beta_2, step))
        weights = weights * (1 - decay) - (alpha * m_rows / (tf.sqrt(v_rows) + _epsilon(h, step)))
        parts = [tf.split(t, counts, num=len(variables))
                 for t in (weights, m_rows, v_rows, tf.fill(tf.shape(rows), step))]
        for variable, r, *values in zip(variables, local, *parts):
            self._store(variable, r, values)

    def _store(self, variable, rows, values) -> None:
        """Scatters `values`, the rows' (weights, momentum, velocity, last step)."""
        for target, part in zip((variable, *self._slots(variable)), values):
            target.scatter_update(tf.IndexedSlices(part, rows))

    def flush(self) -> None:
        """Catch every row of every table up to the current step: weights, moments and
        weight decay as Keras' Adam has them. Rows already current are unchanged."""
        step = int(self.iterations.numpy())
        if getattr(self, "_last_steps", None) is None or step == self._flushed_at:
            return  # not built, or nothing stepped since the last flush
        self._flushed_at = step
        for ref in self._row_variables:
            variable = ref.deref()
            steps = tf.cast(self.iterations, variable.dtype)
            momentum, velocity, last = self._slots(variable)
            decayed, moving, *rows = _caught_up_table(
                self._hyper(variable.dtype), self._decay(variable), steps,
                *(t.value() for t in (variable, momentum, velocity, last)))
            variable.assign(decayed)
            for target, values in zip((variable, momentum, velocity), rows):
                target.scatter_update(tf.IndexedSlices(values, moving))
            last.assign(tf.fill(tf.shape(last), steps))

    def mark_caught_up(self) -> None:
        """Every row current at this step: for state restored from a flushed optimizer
        (a warm start), whose rows' last steps are not saved. Unbuilt (the teacher's
        optimizer of a strategy without a teacher): nothing to mark."""
        for last in getattr(self, "_last_steps", None) or ():
            if last is not None:
                last.assign(tf.fill(tf.shape(last), tf.cast(self.iterations, last.dtype)))
        self._flushed_at = int(self.iterations.numpy())

    def finalize_variable_values(self, var_list):
        # Keras calls this at the end of `fit`: the weights it leaves are read.
        self.flush()
        super().finalize_variable_values(var_list)


def rows_with_gradient(optimizer: tf.keras.optimizers.Adam, table: tf.Variable) -> np.ndarray:
    """Per row of `table` (a variable `optimizer` steps): whether a nonzero gradient ever
    reached it, in this run or a warm start's lineage. Adam's second moment of such a
    row is positive: it decays by beta_2 a step and reads zero again only when it falls
    below float32's smallest normal, about 60k steps without the row at beta_2 0.999."""
    velocity = optimizer._velocities[optimizer._index_dict[optimizer._var_key(table)]]
    return nonzero_rows(velocity.numpy())
