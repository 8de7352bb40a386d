"""The interface of a strategy, how privileged features reach the student: one
small Keras layer per method, plugged into the one joint model (models/model.py).

A strategy owns the method's extra nets (mapping DNNs g^(i), discriminators,
auxiliary towers) and turns the forward pass into named per-example loss terms that
the model adds to the teacher's and the student's task losses (HA-PFD Eq. 7). It
says whether the model needs a teacher at all, and may give the student an extra
encoder (MTL), which is then exported with the student.

A strategy may also replace the student's tower with a multi-output head
(models/heads.py: EKTF's ensemble, TAML's learners, UKD's twin CVR heads), own the
student's supervised loss, and choose what of that head is served. The
impression-space strategies (`space = "impression"`: TAML, UKD,
models/impression_strategies.py) train on every impression and get the click (and
pseudo-) labels as `side`.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf

from pfdx.config import ModelConfig
from pfdx.models.layers import Tower
from pfdx.models.registry import CLICK as CLICK_SPACE

# Keys of the labels dict of an impression-space batch (models/model.py).
LABEL, CLICK, PSEUDO_LABEL = "label", "click", "pseudo_label"


class Outputs(NamedTuple):
    """One forward pass of the joint model. Logits are [B, 1]; latents [B, width]."""

    student_logit: tf.Tensor
    student_latents: tuple[tf.Tensor, ...]
    teacher_logit: tf.Tensor | None = None
    teacher_latents: tuple[tf.Tensor, ...] | None = None
    # Student encoder outputs (MTL: auxiliary logits per privileged feature).
    auxiliary: Mapping[str, tf.Tensor] = {}
    # A multi-output student head's extra logits, [B, 1] each (models/heads.py).
    student_heads: Mapping[str, tf.Tensor] = {}


class Strategy(tf.keras.layers.Layer):
    """Base: no extra loss.

    `call(outputs, features, labels, step)` gets the forward pass, the feature dict,
    the [B, 1] float labels and the optimizer's step counter, and returns
    {term name: per-example loss [B]}. An impression-space strategy also gets
    `side`: the other label columns ({"click": [B, 1], ...}).

    `owns_student_task`: the strategy returns the student's supervised loss
    itself (e.g. one BCE per head); the model's BCE on the served logit then only
    feeds the metrics."""

    uses_teacher: bool = True
    owns_student_task: bool = False
    space: str = CLICK_SPACE  # IMPRESSION_SPACE: trains on every impression

    def __init__(self, config: ModelConfig, privileged_vocab: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config

    @property
    def student_encoder(self) -> tf.keras.layers.Layer | None:
        """A layer the student applies to its embedded regular features, whose
        outputs (a dict of [B, k] tensors) it concatenates to them."""
        return None

    @property
    def student_head(self) -> tf.keras.layers.Layer | None:
        """A head (returning heads.HeadOutputs) to use in place of the student's tower."""
        return None

    @property
    def serving_head(self) -> tf.keras.layers.Layer | None:
        """The part of `student_head` that is exported, sharing its weights; None:
        the student as trained."""
        return None

    def call(self, outputs: Outputs, features: Mapping[str, tf.Tensor], labels: tf.Tensor,
             step: tf.Tensor) -> dict[str, tf.Tensor]:
        return {}

    def _tower(self, hidden_units: Sequence[int], output_dim: int, name: str) -> Tower:
        c = self.config
        return Tower(hidden_units, output_dim, c.smelu_beta, c.init_stddev, name=name)
