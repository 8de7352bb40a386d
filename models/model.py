"""The joint teacher/student model (paper Eq. 7) and its exportable student.

Data: batches are `(features, labels)` tuples, as `model.fit` and the Trainer's
dataset give them: `features` maps feature names to ids (see
`layers.FeatureIds` for the contract; regular and privileged features in one
dict), `labels` is the 0/1 conversion, shape [B] or [B, 1].

One optimizer step minimises, per example and averaged over the global batch,
    L_task(teacher) + L_task(student) + sum of the strategy's terms,
so teacher, student and the strategy's nets train together, online (Algorithm 1).
The regular-feature embeddings belong to the student and are shared with the
teacher, whose input is [regular embeddings, privileged embeddings].

Built on tensorflow-recommenders: `tfrs.Model.train_step` differentiates
`compute_loss`, and two `tfrs.tasks.Ranking` tasks hold the task losses and the
training metrics. The tasks' losses are unreduced (reduction NONE) and
`compute_loss` divides the summed per-example loss by the *global* batch size:
tfrs' default mean would be over the replica's slice, and MirroredStrategy sums the
replicas' gradients, giving N x the gradient on N replicas.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from pfdx.config import ModelConfig
from pfdx.models import metrics
from pfdx.models.distributed import global_batch_size
from pfdx.models.layers import FeatureEmbeddings, Tower
from pfdx.models.strategies import Outputs, make_strategy


class StudentOutputs(NamedTuple):
    embedded: tf.Tensor  # regular-feature embeddings, [B, n_regular * dim]
    logit: tf.Tensor  # [B, 1]
    latents: tuple[tf.Tensor, ...]
    auxiliary: Mapping[str, tf.Tensor]


class Student(tf.keras.Model):
    """What is served: regular-feature embeddings -> (optional encoder) -> tower.

    `call` takes a dict holding the regular features (other keys are ignored) and
    returns the CVR probability, shape [B]."""

    def __init__(self, config: ModelConfig, regular_vocab: Mapping[str, int],
                 encoder: tf.keras.layers.Layer | None = None, **kwargs):
        super().__init__(**kwargs)
        self.embeddings = FeatureEmbeddings(regular_vocab, config.embedding_dim,
                                            config.init_stddev, name="regular_embeddings")
        self.encoder = encoder
        self.tower = Tower(config.hidden_units, 1, config.smelu_beta, config.init_stddev,
                           name="student_tower")

    def forward(self, features: Mapping[str, tf.Tensor]) -> StudentOutputs:
        embedded = self.embeddings(features)
        auxiliary = self.encoder(embedded) if self.encoder is not None else {}
        tower_input = tf.concat([embedded, *(auxiliary[k] for k in sorted(auxiliary))], axis=-1)
        logit, latents = self.tower(tower_input)
        return StudentOutputs(embedded, logit, latents, auxiliary)

    def call(self, features):
        return tf.sigmoid(tf.reshape(self.forward(features).logit, [-1]))


def _ranking_task(prefix: str, calibration: bool) -> tfrs.tasks.Ranking:
    """BCE on logits (Eq. 1), per example; AUC, prediction average (and
    calibration and label average for the student) as streaming metrics."""
    ranking = [metrics.auc_metric(f"{prefix}_auc", from_logits=True)]
    labels = []
    if calibration:
        ranking += [metrics.ExpectedCalibrationError(from_logits=True, name=f"{prefix}_ece"),
                    metrics.MaxCalibrationError(from_logits=True, name=f"{prefix}_mce")]
        labels = [tf.keras.metrics.Mean(name="label_avg")]
    return tfrs.tasks.Ranking(
        loss=tf.keras.losses.BinaryCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
        metrics=ranking,
        prediction_metrics=[metrics.PredictionMean(f"{prefix}_pred_avg", from_logits=True)],
        label_metrics=labels,
        loss_metrics=[tf.keras.metrics.Mean(name=f"{prefix}_task_loss")],
        name=f"{prefix}_task")


class JointModel(tfrs.Model):
    """Teacher + student + the configured strategy (`ModelConfig.strategy`)."""

    def __init__(self, config: ModelConfig, regular_vocab: Mapping[str, int],
                 privileged_vocab: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.strategy = make_strategy(config, privileged_vocab)
        self.student = Student(config, regular_vocab, self.strategy.student_encoder, name="student")
        self.student_task = _ranking_task("student", calibration=True)
        self.distillation_loss = tf.keras.metrics.Mean(name="distillation_loss")
        # `none` and `mtl` have no teacher: the teacher's task loss would otherwise
        # train the shared regular embeddings with privileged information.
        self.has_teacher = self.strategy.uses_teacher
        if self.has_teacher:
            self.privileged_embeddings = FeatureEmbeddings(
                privileged_vocab, config.embedding_dim, config.init_stddev,
                name="privileged_embeddings")
            self.teacher_tower = Tower(config.hidden_units, 1, config.smelu_beta,
                                       config.init_stddev, name="teacher_tower")
            self.teacher_task = _ranking_task("teacher", calibration=False)

    def forward(self, features: Mapping[str, tf.Tensor]) -> Outputs:
        student = self.student.forward(features)
        if not self.has_teacher:
            return Outputs(student.logit, student.latents, auxiliary=student.auxiliary)
        teacher_logit, teacher_latents = self.teacher_tower(
            tf.concat([student.embedded, self.privileged_embeddings(features)], axis=-1))
        return Outputs(student.logit, student.latents, teacher_logit, teacher_latents,
                       student.auxiliary)

    # See compute_loss. `training` is unused, but Keras passes it to a wrapped call.
    @tf.autograph.experimental.do_not_convert
    def call(self, features, training=None):
        """{"student": p_s, "teacher": p_t} CVR probabilities, [B] each ("teacher"
        only when the strategy has one)."""
        out = self.forward(features)
        probs = {"student": tf.sigmoid(tf.reshape(out.student_logit, [-1]))}
        if self.has_teacher:
            probs["teacher"] = tf.sigmoid(tf.reshape(out.teacher_logit, [-1]))
        return probs

    def predict_both(self, features) -> dict[str, tf.Tensor]:
        """Student and teacher predictions for evaluation (same as calling the model)."""
        return self(features, training=False)

    def student_model(self) -> Student:
        """The exportable student: regular features in, CVR probability out. It
        holds the regular embeddings, the student tower (and MTL's auxiliary
        towers) and nothing of the teacher, the privileged embeddings or the
        strategy's mapping nets / discriminators."""
        return self.student

    def loss_terms(self, features, labels, training: bool = False) -> dict[str, tf.Tensor]:
        """Every per-example loss term, [B] each, by name; updates the metrics."""
        labels = tf.reshape(tf.cast(labels, tf.float32), [-1, 1])
        out = self.forward(features)
        terms = {"student_task": self.student_task(labels, out.student_logit, training=training)}
        if self.has_teacher:
            terms["teacher_task"] = self.teacher_task(labels, out.teacher_logit, training=training)
        step = self.optimizer.iterations if self.optimizer is not None else tf.constant(0, tf.int64)
        distillation = self.strategy(out, features, labels, step)
        if distillation:
            self.distillation_loss.update_state(tf.add_n(list(distillation.values())))
        return {**terms, **distillation}

    # Plain graph code (no tensor-dependent Python control flow): without autograph's
    # source transforms of every nested layer, the first train step traces in about
    # a third of the time.
    @tf.autograph.experimental.do_not_convert
    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        """This replica's share of the global-batch mean of the total loss (Eq. 7)."""
        features, labels = inputs
        per_example = tf.add_n(list(self.loss_terms(features, labels, training).values()))
        n = tf.cast(global_batch_size(tf.shape(per_example)[0]), per_example.dtype)
        return tf.reduce_sum(per_example) / n


def make_optimizer(config: ModelConfig) -> tf.keras.optimizers.Optimizer:
    """Appendix A: Adam, lr 0.0025, weight decay 0.001, gradient clip 600. The clip
    is on the global norm of all gradients (TF1's clip_by_global_norm), after the
    replicas' gradients are summed, so it acts the same on any number of replicas."""
    return tf.keras.optimizers.Adam(learning_rate=config.learning_rate,
                                    weight_decay=config.weight_decay,
                                    global_clipnorm=config.clipnorm)


def build_model(config: ModelConfig, regular_vocab: Mapping[str, int],
                privileged_vocab: Mapping[str, int]) -> JointModel:
    """A compiled JointModel; call inside `strategy.scope()` to distribute it."""
    model = JointModel(config, regular_vocab, privileged_vocab, name="joint_model")
    model.compile(optimizer=make_optimizer(config))
    return model
