"""Building blocks shared by the teacher, the student and the strategies' small nets.

- `SmeLU`: the smooth ReLU the paper's towers use.
- `FeatureIds` / `FeatureEmbeddings`: feature dict -> ids -> one 16-dim table per
  feature (HA-PFD appendix A: "all features ... 16-dimensional dense embeddings through hash
  mapping"); the regular tables are shared by teacher and student. `KeptRowsEmbedding`:
  a table that stores only its nonzero rows, as the student is exported.
- `Tower`: the 3-layer DNN (256 -> 128 -> 1) that returns its output and its hidden
  latents, reused with other widths for the mapping nets g^(i), the MTL auxiliary
  towers and the adversarial discriminators.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf
# The tape recording `tf.custom_gradient` uses (`with_gradient`).
from tensorflow.python.eager import record


def truncated_normal(stddev: float) -> tf.keras.initializers.Initializer:
    """HA-PFD appendix A: every parameter starts from a truncated normal, mean 0."""
    return tf.keras.initializers.TruncatedNormal(mean=0.0, stddev=stddev)


def with_gradient(y: tf.Tensor, x: tf.Tensor, slope: tf.Tensor) -> tf.Tensor:
    """`y`, whose gradient on a tape is `dy * slope` to `x`: a hand-written elementwise
    derivative, recorded on the tape as `tf.custom_gradient` records one. Not
    `tf.custom_gradient` itself: in a traced function it also registers a gradient
    function per trace, in a registry never emptied, and with it the traced graph and
    every variable the graph captured, so a model's tables and optimizer slots
    outlived the model (240 MB a tuning trial at 100k rows per table). Differentiated
    without a tape (`tf.gradients`, a loaded SavedModel's function), `y` is
    differentiated through its own ops: `slope` must be its derivative."""
    x = tf.convert_to_tensor(x)  # a variable: its value, which the tape links to it
    out = tf.identity(y)
    record.record_operation("with_gradient", [out], [x], lambda dy: [dy * slope])
    return out


def smelu(x: tf.Tensor, beta: float) -> tf.Tensor:
    """SmeLU with a hand-written gradient, min((x + beta)+ / (2 beta), 1): fewer ops
    than autodiff through the piecewise form (bench/train_step.py). First-order only,
    which is all training needs."""
    beta = tf.cast(beta, x.dtype)
    shifted = tf.nn.relu(x + beta)
    # The quadratic is evaluated everywhere but only kept below beta; tf.where
    # selects, so its overflow for huge x never reaches the output.
    y = tf.where(x >= beta, x, tf.square(shifted) * (0.25 / beta))
    return with_gradient(y, x, tf.minimum(shifted * (0.5 / beta), 1.0))


class SmeLU(tf.keras.layers.Layer):
    """Smooth ReLU: 0 for x <= -beta, (x + beta)^2 / (4 beta) for |x| < beta, x for x >= beta."""

    def __init__(self, beta: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if beta <= 0:
            raise ValueError(f"SmeLU beta must be positive, got {beta}")
        self.beta = float(beta)

    def call(self, inputs):
        return smelu(inputs, self.beta)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


class FeatureIds(tf.keras.layers.Layer):
    """Feature dict -> {name: int64 ids of shape [B]} for the features in `vocab_sizes`.

    Input: the Transform's outputs, named as the data contract says
    (`features/contract.py`: a regular feature by its column, a privileged one by
    `privileged_flag` / `privileged_quantiles`), each an int64 tensor of shape [B]
    or [B, 1] with ids in [0, vocab_sizes[name]). A tf.string
    feature is hashed into vocab_sizes[name] bins instead (HA-PFD appendix A's hash
    mapping). Keys not in `vocab_sizes` are ignored, so the teacher's and the
    student's sides can read the same dict.
    """

    def __init__(self, vocab_sizes: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.vocab_sizes = {name: int(vocab_sizes[name]) for name in sorted(vocab_sizes)}
        self._hashing = {name: tf.keras.layers.Hashing(num_bins=size)
                         for name, size in self.vocab_sizes.items()}

    def call(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        missing = [name for name in self.vocab_sizes if name not in features]
        if missing:
            raise KeyError(f"{self.name}: missing feature(s) {missing}")
        ids = {}
        for name in self.vocab_sizes:
            x = tf.reshape(features[name], [-1])
            if x.dtype == tf.string:
                x = self._hashing[name](x)
            elif not x.dtype.is_integer:
                raise TypeError(f"{self.name}: feature {name!r} must be integer ids or "
                                f"strings, got {x.dtype.name}")
            ids[name] = tf.cast(x, tf.int64)
        return ids

    def get_config(self):
        return {**super().get_config(), "vocab_sizes": dict(self.vocab_sizes)}


def nonzero_rows(table: np.ndarray) -> np.ndarray:
    """Per row of a 2-D array: whether any of its values is nonzero."""
    return np.any(table != 0, axis=1)


class KeptRowsEmbedding(tf.keras.layers.Layer):
    """A table of `input_dim` rows that stores only the rows `kept` (sorted row ids)
    with their `values`; every other row reads as zeros. `of(table)` keeps a table's
    nonzero rows: the same lookups, without storing its zero rows."""

    def __init__(self, input_dim: int, kept, values, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        values = np.asarray(values, np.float32)
        # A sentinel row id past the table, paired with the zero row, ends the search:
        # an id never found reads that row.
        self.kept = tf.Variable(np.append(np.asarray(kept, np.int64), self.input_dim),
                                trainable=False, name="kept_rows")
        self.values = tf.Variable(np.concatenate([values, np.zeros((1,) + values.shape[1:],
                                                                   np.float32)]),
                                  trainable=False, name="values")

    @classmethod
    def of(cls, table: np.ndarray, **kwargs) -> "KeptRowsEmbedding":
        kept = np.flatnonzero(nonzero_rows(table))
        return cls(len(table), kept, table[kept], **kwargs)

    def call(self, ids):
        ids = tf.cast(ids, tf.int64)
        position = tf.searchsorted(self.kept, ids, out_type=tf.int64)
        found = tf.equal(tf.gather(self.kept, position), ids)
        return tf.gather(self.values, tf.where(found, position, tf.size(self.kept, tf.int64) - 1))


class FeatureEmbeddings(tf.keras.layers.Layer):
    """One `dim`-wide embedding table per feature; returns [B, len(vocab_sizes) * dim].

    Features are concatenated in sorted name order. See `FeatureIds` for the input
    contract; features not in `vocab_sizes` are ignored. `tables`: the layers to look
    the ids up in, by feature (default: a trainable `Embedding` each).
    """

    def __init__(self, vocab_sizes: Mapping[str, int], dim: int = 16,
                 init_stddev: float = 0.1,
                 tables: Mapping[str, tf.keras.layers.Layer] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.init_stddev = float(init_stddev)
        self.ids = FeatureIds(vocab_sizes, name="ids")
        self.tables = dict(tables) if tables is not None else {
            name: tf.keras.layers.Embedding(size, self.dim, name=f"{name}_embedding",
                                            embeddings_initializer=truncated_normal(init_stddev))
            for name, size in self.ids.vocab_sizes.items()}

    @property
    def output_dim(self) -> int:
        return len(self.tables) * self.dim

    def zero_rows(self, keep: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Sets to zero the rows of each table whose `keep` mask (by feature) is False;
        returns feature -> rows kept."""
        kept = {}
        for name, mask in keep.items():
            table = self.tables[name].embeddings
            table.assign(tf.where(tf.reshape(mask, [-1, 1]), table, tf.zeros_like(table)))
            kept[name] = int(np.sum(mask))
        return kept

    def without_zero_rows(self) -> "FeatureEmbeddings":
        """These embeddings with each table storing only its nonzero rows
        (`KeptRowsEmbedding`): the same output for every id."""
        tables = {name: KeptRowsEmbedding.of(layer.embeddings.numpy(), name=layer.name)
                  for name, layer in self.tables.items()}
        return FeatureEmbeddings(self.ids.vocab_sizes, self.dim, self.init_stddev, tables,
                                 name=self.name)

    def call(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        ids = self.ids(features)
        if not self.tables:  # e.g. no privileged feature selected
            batch = tf.shape(next(iter(features.values())))[0]
            return tf.zeros([batch, 0])
        return tf.concat([self.tables[name](ids[name]) for name in self.tables], axis=-1)

    def get_config(self):
        return {**super().get_config(), "vocab_sizes": dict(self.ids.vocab_sizes),
                "dim": self.dim, "init_stddev": self.init_stddev}


class Tower(tf.keras.layers.Layer):
    """DNN: `hidden_units` Dense+SmeLU layers, then a linear Dense(`output_dim`).

    `call` returns `(output, latents)`: the pre-activation output (the logit, for
    `output_dim=1`) and the tuple of hidden activations f^(1), f^(2), ... that the
    latent-level strategies align.
    """

    def __init__(self, hidden_units: Sequence[int] = (256, 128), output_dim: int = 1,
                 beta: float = 1.0, init_stddev: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.output_dim = int(output_dim)
        self.beta = float(beta)
        self.init_stddev = float(init_stddev)
        self.hidden = [self._dense(u, f"hidden_{i}") for i, u in enumerate(self.hidden_units)]
        self.activation = SmeLU(beta)
        self.out = self._dense(self.output_dim, "output")

    def _dense(self, units: int, name: str) -> tf.keras.layers.Dense:
        # A fresh initializer per weight: an unseeded Keras initializer instance
        # returns the same values on every call.
        return tf.keras.layers.Dense(units, kernel_initializer=truncated_normal(self.init_stddev),
                                     bias_initializer=truncated_normal(self.init_stddev), name=name)

    def call(self, inputs, frozen: bool = False):
        """`frozen=True` uses the current weights as constants: a loss through this
        call then trains what feeds the tower but not the tower (an adversarial
        student loss must move the student, not the discriminator scoring it)."""
        x, latents = inputs, []
        for dense in self.hidden:
            x = self.activation(_apply_dense(dense, x, frozen))
            latents.append(x)
        return _apply_dense(self.out, x, frozen), tuple(latents)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "output_dim": self.output_dim, "beta": self.beta,
                "init_stddev": self.init_stddev}


def _apply_dense(layer: tf.keras.layers.Dense, x: tf.Tensor, frozen: bool) -> tf.Tensor:
    if not frozen:
        return layer(x)
    if not layer.built:
        layer.build(x.shape)
    return tf.matmul(x, tf.stop_gradient(layer.kernel)) + tf.stop_gradient(layer.bias)
