"""The joint teacher/student model (HA-PFD Eq. 7) and its exportable student.

Data: batches are `(features, labels)` tuples, as `model.fit` and the Trainer's
dataset give them: `features` maps feature names to ids (see
`layers.FeatureIds` for the contract; regular and privileged features in one
dict), `labels` is the 0/1 conversion, shape [B] or [B, 1] (click space: every
row is a click). Impression space (strategies whose `space` is "impression"):
`labels` is a dict {"label": conversion, "click": click, and for the UKD student
"pseudo_label": the teacher's CVR}; the conversion task and its metrics then
count clicked rows only.

One optimizer step minimises, per example and averaged over the global batch,
    L_task(teacher) + L_task(student) + sum of the strategy's terms,
so teacher, student and the strategy's nets train together, online (HA-PFD Algorithm 1).
The regular-feature embeddings belong to the student and are shared with the
teacher (HA-PFD appendix A; `model.share_embeddings`), whose input is [regular
embeddings, privileged embeddings].

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
from pfdx.models.calibration import PlattCalibration
from pfdx.models.distributed import global_batch_size
from pfdx.models.heads import CTR, HeadOutputs
from pfdx.models.layers import FeatureEmbeddings, Tower
from pfdx.models.optimizers import LazyAdam, rows_with_gradient
from pfdx.models.strategies import make_strategy
from pfdx.models.strategy_base import CLICK, LABEL, Outputs


class StudentOutputs(NamedTuple):
    embedded: tf.Tensor  # regular-feature embeddings, [B, n_regular * dim]
    logit: tf.Tensor  # [B, 1]
    latents: tuple[tf.Tensor, ...]
    auxiliary: Mapping[str, tf.Tensor]
    heads: Mapping[str, tf.Tensor]  # a multi-output head's extra logits (models/heads.py)


class Student(tf.keras.Model):
    """What is served: regular-feature embeddings -> (optional encoder) -> tower.

    `call` takes a dict holding the regular features (other keys are ignored) and
    returns the CVR probability, shape [B], through the post-hoc `calibration`
    (the identity until it is fitted; training losses read the raw logit of
    `forward`). A strategy may replace the tower with a multi-output head (`head`,
    returning `heads.HeadOutputs`); `embeddings` and `calibration` let a serving copy
    share the trained weights (`with_parts`)."""

    def __init__(self, config: ModelConfig, regular_vocab: Mapping[str, int],
                 encoder: tf.keras.layers.Layer | None = None,
                 head: tf.keras.layers.Layer | None = None,
                 embeddings: FeatureEmbeddings | None = None,
                 calibration: PlattCalibration | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model_config = config
        self.embeddings = embeddings if embeddings is not None else FeatureEmbeddings(
            regular_vocab, config.embedding_dim, config.init_stddev, name="regular_embeddings")
        self.encoder = encoder
        self.tower = head if head is not None else Tower(
            config.hidden_units, 1, config.smelu_beta, config.init_stddev, name="student_tower")
        self.calibration = calibration if calibration is not None else PlattCalibration(
            name="calibration")

    def with_parts(self, head: tf.keras.layers.Layer | None = None,
                   embeddings: FeatureEmbeddings | None = None) -> "Student":
        """A student with this one's encoder and calibration, and its head and
        embeddings unless others are given."""
        return Student(self.model_config, self.embeddings.ids.vocab_sizes, self.encoder,
                       self.tower if head is None else head,
                       self.embeddings if embeddings is None else embeddings,
                       self.calibration, name=self.name)

    def forward(self, features: Mapping[str, tf.Tensor], training=None) -> StudentOutputs:
        embedded = self.embeddings(features)
        auxiliary = self.encoder(embedded) if self.encoder is not None else {}
        tower_input = tf.concat([embedded, *(auxiliary[k] for k in sorted(auxiliary))], axis=-1)
        head = self.tower(tower_input, training=training)
        if not isinstance(head, HeadOutputs):  # a plain Tower: (logit, latents)
            head = HeadOutputs(*head)
        return StudentOutputs(embedded, head.logit, head.latents, auxiliary, head.heads)

    def served_cvr(self, logit: tf.Tensor) -> tf.Tensor:
        """The served CVR [B] from a [B, 1] student logit: calibrated, then sigmoid."""
        return tf.sigmoid(tf.reshape(self.calibration(logit), [-1]))

    def call(self, features, training=None):
        return self.served_cvr(self.forward(features, training).logit)

    def predictions(self, features) -> dict[str, tf.Tensor]:
        """Served probabilities, [B] each: "cvr", and "ctr" when the head has a CTR logit."""
        out = self.forward(features)
        probs = {"cvr": self.served_cvr(out.logit)}
        if CTR in out.heads:
            probs[CTR] = tf.sigmoid(tf.reshape(out.heads[CTR], [-1]))
        return probs


def _ranking_task(prefix: str, calibration: bool) -> tfrs.tasks.Ranking:
    """BCE on logits (HA-PFD Eq. 1), per example; AUC, prediction average (and
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


class _CatchUpRows(tf.keras.callbacks.Callback):
    """`JointModel.catch_up_rows` at every epoch's and the training's end."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.catch_up_rows()

    def on_train_end(self, logs=None):
        self.model.catch_up_rows()


class JointModel(tfrs.Model):
    """Teacher + student + the configured strategy (`ModelConfig.strategy`)."""

    def __init__(self, config: ModelConfig, regular_vocab: Mapping[str, int],
                 privileged_vocab: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.strategy = make_strategy(config, privileged_vocab)
        self.student = Student(config, regular_vocab, self.strategy.student_encoder,
                               self.strategy.student_head, name="student")
        self.student_task = _ranking_task("student", calibration=True)
        self.distillation_loss = tf.keras.metrics.Mean(name="distillation_loss")
        self._reset_evaluation_functions()
        # `none` and `mtl` have no teacher: the teacher's task loss would otherwise
        # train the shared regular embeddings with privileged information.
        self.has_teacher = self.strategy.uses_teacher
        if self.has_teacher:
            # Its own regular tables (`model.share_embeddings` off): then neither the
            # student's distillation terms nor the teacher's task loss reach the
            # other side's embeddings.
            self.teacher_regular_embeddings = None if config.share_embeddings else (
                FeatureEmbeddings(regular_vocab, config.embedding_dim, config.init_stddev,
                                  name="teacher_regular_embeddings"))
            self.privileged_embeddings = FeatureEmbeddings(
                privileged_vocab, config.embedding_dim, config.init_stddev,
                name="privileged_embeddings")
            self.teacher_tower = Tower(config.hidden_units, 1, config.smelu_beta,
                                       config.init_stddev, name="teacher_tower")
            self.teacher_task = _ranking_task("teacher", calibration=False)

    def forward(self, features: Mapping[str, tf.Tensor], training=None) -> Outputs:
        student = self.student.forward(features, training)
        if not self.has_teacher:
            return Outputs(student.logit, student.latents, auxiliary=student.auxiliary,
                           student_heads=student.heads)
        regular = (student.embedded if self.teacher_regular_embeddings is None
                   else self.teacher_regular_embeddings(features))
        teacher_logit, teacher_latents = self.teacher_tower(
            tf.concat([regular, self.privileged_embeddings(features)], axis=-1))
        return Outputs(student.logit, student.latents, teacher_logit, teacher_latents,
                       student.auxiliary, student.heads)

    # See compute_loss. `training` is unused, but Keras passes it to a wrapped call.
    @tf.autograph.experimental.do_not_convert
    def call(self, features, training=None):
        """{"student": p_s, "teacher": p_t} CVR probabilities, [B] each ("teacher"
        only when the strategy has one; "ctr" when the student has a CTR head)."""
        out = self.forward(features)
        probs = {"student": self.student.served_cvr(out.student_logit)}
        if self.has_teacher:
            probs["teacher"] = tf.sigmoid(tf.reshape(out.teacher_logit, [-1]))
        if CTR in out.student_heads:
            probs[CTR] = tf.sigmoid(tf.reshape(out.student_heads[CTR], [-1]))
        return probs

    def catch_up_rows(self) -> None:
        """Bring embedding rows a `LazyAdam` left behind to where Adam has them
        (models/optimizers.py): before weights are read beyond a training step."""
        for optimizer in (self.optimizer, getattr(self, "teacher_optimizer", None)):
            if isinstance(optimizer, LazyAdam):
                optimizer.flush()

    def release_optimizers(self) -> None:
        """Replaces both optimizers by unbuilt ones of the same settings (and so drops
        the Keras functions that captured their variables, `compile`): a model only
        read from now on (a fitted model its refit replaces, models/training.py) then
        no longer holds Adam's two moments per weight and LazyAdam's last step per row,
        twice its tables. Tuning holds every setup trial's model until it chooses: 279
        MB of optimizer state a `make run` setup trial, ten times that at tables ten
        times larger."""
        with self.distribute_strategy.scope():
            self.compile(optimizer=_unbuilt(self.optimizer),
                         teacher_optimizer=_unbuilt(self.teacher_optimizer))

    def zero_untrained_rows(self) -> dict[str, int]:
        """Sets to zero the rows of every table that no gradient ever reached
        (`model.zero_untrained_rows`): the student's and the teacher's, so both score
        an unseen id alike. Returns the student's feature -> rows kept."""
        def zero(embeddings: FeatureEmbeddings, optimizer) -> dict[str, int]:
            return embeddings.zero_rows({name: rows_with_gradient(optimizer, layer.embeddings)
                                         for name, layer in embeddings.tables.items()})

        if self.has_teacher:
            for tables in (self.teacher_regular_embeddings, self.privileged_embeddings):
                if tables is not None:
                    zero(tables, self.teacher_optimizer)
        return zero(self.student.embeddings, self.optimizer)

    def create_variables(self, spec) -> None:
        """Creates every variable a training step uses, before the first: one eager loss
        pass on a batch of zeros (empty strings) shaped as `spec`, the training
        batches' (features, labels) element spec -- Keras builds layers on first
        use, the strategy's nets too -- then each optimizer built on its side of
        `train_step`. Keras' train function then traces once, not twice (a trace
        that creates variables is traced again without): about 3.5 s a model. Call
        inside the model's distribution scope."""
        def zeros(tensor: tf.TensorSpec) -> tf.Tensor:
            shape = [2 if d is None else d for d in tensor.shape]  # any batch
            return tf.fill(shape, tf.constant("" if tensor.dtype == tf.string else 0,
                                              tensor.dtype))

        inputs = tf.nest.map_structure(zeros, spec)
        tf.distribute.get_strategy().run(self.compute_loss, args=(inputs,))
        teacher = {v.ref() for v in self.teacher_variables()}
        self.optimizer.build([v for v in self.trainable_variables if v.ref() not in teacher])
        if teacher:
            self.teacher_optimizer.build(self.teacher_variables())
        self.reset_metrics()  # the pass above updated them

    def fit(self, *args, callbacks=None, **kwargs):
        # First of the epoch-end callbacks: those that keep or restore weights read them.
        return super().fit(*args, callbacks=[_CatchUpRows(), *(callbacks or [])], **kwargs)

    def evaluate(self, *args, **kwargs):
        self.catch_up_rows()
        return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        self.catch_up_rows()
        return super().predict(*args, **kwargs)

    def predict_both(self, features) -> dict[str, tf.Tensor]:
        """Student and teacher predictions for evaluation (same as calling the model)."""
        return self(features, training=False)

    # As Keras' own cache of its train and predict functions: not a checkpoint dependency.
    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _reset_evaluation_functions(self) -> None:
        self._evaluation_functions = {}

    def evaluation_function(self, spec):
        """`predict_both` as one traced function of feature batches of `spec` (a
        dataset's features element spec), with "student" the served student's
        (`student_model`: EKTF's best head, say, not the ensemble it trained in): what
        `models/predictions.py` scores. Traced once per model and spec and reused by
        every pass (the calibration is a variable): run op by op, a batch took about
        45 ms, most of a validation pass."""
        key = tuple(tf.nest.flatten(spec))
        if key not in self._evaluation_functions:
            served = self.student_model()

            @tf.function(input_signature=[spec], autograph=False)
            def outputs(features):
                out = self.predict_both(features)
                return out if served is self.student else dict(out, student=served(features))

            self._evaluation_functions[key] = outputs
        return self._evaluation_functions[key]

    def student_model(self) -> Student:
        """The exportable student: regular features in, CVR probability out. It
        holds the regular embeddings, the student tower (and MTL's auxiliary
        towers) and nothing of the teacher, the privileged embeddings or the
        strategy's mapping nets / discriminators. A multi-head strategy may serve
        part of its head (`Strategy.serving_head`: EKTF's best head, TAML / UKD
        without their CTR tower); that student shares the trained weights."""
        head = self.strategy.serving_head
        return self.student if head is None else self.student.with_parts(head)

    def loss_terms(self, features, labels, training: bool = False) -> dict[str, tf.Tensor]:
        """Every per-example loss term, [B] each, by name; updates the metrics."""
        labels, side = split_labels(labels)
        click = side.get(CLICK)
        if self.strategy.space == "impression" and click is None:
            raise ValueError(f"strategy {self.config.strategy!r} trains on impressions: "
                             f"labels must be a dict with {LABEL!r} and {CLICK!r}")
        out = self.forward(features, training)
        # Impression space: the conversion label, so its losses and metrics, only
        # count on clicked rows.
        student_task = self.student_task(labels, out.student_logit, sample_weight=click,
                                         training=training)
        # A strategy that owns the student's supervised loss (multi-head students)
        # returns it itself; the task then only keeps the served prediction's metrics.
        terms = {} if self.strategy.owns_student_task else {"student_task": student_task}
        if self.has_teacher:
            terms["teacher_task"] = self.teacher_task(labels, out.teacher_logit,
                                                      sample_weight=click, training=training)
        step = self.optimizer.iterations if self.optimizer is not None else tf.constant(0, tf.int64)
        if self.strategy.space == "impression":
            distillation = self.strategy(out, features, labels, step, side=side, training=training)
        else:
            distillation = self.strategy(out, features, labels, step, training=training)
        if distillation:
            self.distillation_loss.update_state(tf.add_n(list(distillation.values())))
        return {**terms, **distillation}

    def compile(self, optimizer="adam", teacher_optimizer=None, **kwargs):
        """Keras' compile, plus the teacher's own optimizer (`train_step`); by default
        one with `optimizer`'s settings. Compiled again, the model lets go of the
        functions compiled before, and with them every variable they captured."""
        # Keras sets them to None, but they stay referenced from the model's tracking
        # (as checkpoint dependencies and in Keras' attribute counts).
        for name in ("train_function", "train_tf_function", "test_function",
                     "predict_function"):
            function = getattr(self, name, None)
            if function is not None:
                self._delete_tracking(name)  # AutoTrackable's and Keras' internals
                self._obj_reference_counts.pop(function, None)  # (both pinned)
        super().compile(optimizer=optimizer, **kwargs)
        self.teacher_optimizer = teacher_optimizer or _unbuilt(self.optimizer)

    @property
    def teacher_stands_alone(self) -> bool:
        """A teacher whose prediction reads only `teacher_variables` (its own
        regular tables): its weights can be kept from another epoch than the
        student's (models/best_epochs.py)."""
        return self.has_teacher and self.teacher_regular_embeddings is not None

    def teacher_variables(self) -> list[tf.Variable]:
        """What only the teacher's task loss trains: its tower and its own tables."""
        if not self.has_teacher:
            return []
        parts = [self.teacher_tower, self.privileged_embeddings,
                 self.teacher_regular_embeddings]
        return [v for part in parts if part is not None for v in part.trainable_variables]

    @tf.autograph.experimental.do_not_convert  # as compute_loss
    def train_step(self, inputs):
        """tfrs' step, with the gradient clip (HA-PFD appendix A: 600) applied to the
        teacher's gradients and to the rest *separately*, each by its own global norm,
        after the replicas' gradients are summed. One clip over both would let a
        large distillation term (HA-PFD Eq. 5's sum over 384 dimensions) shrink the
        teacher's update: on KuaiRand, alignment weight 10 under one clip left the
        teacher constant (validation AUC 0.5) where it otherwise reaches 0.92
        (docs/strategies.md "How a run picks the student it ships"). Each side then
        steps with its own Adam (`teacher_optimizer`: `model.teacher_learning_rate`);
        Adam is per variable, so at one learning rate that is the paper's one Adam."""
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.reduce_sum([tf.reduce_sum(x) for x in self.losses])
            total_loss = loss + regularization_loss
        variables = self.trainable_variables
        pairs = self.optimizer.aggregate_gradients(
            list(zip(tape.gradient(total_loss, variables), variables)))
        teacher = {v.ref() for v in self.teacher_variables()}
        for side, optimizer in ((True, self.teacher_optimizer), (False, self.optimizer)):
            group = [(g, v) for g, v in pairs if g is not None and (v.ref() in teacher) == side]
            if group:
                grads, _ = tf.clip_by_global_norm([g for g, _ in group], self.config.clipnorm)
                optimizer.apply_gradients(zip(grads, [v for _, v in group]),
                                          skip_gradients_aggregation=True)
        metrics = {metric.name: metric.result() for metric in self.metrics}
        metrics.update(loss=loss, regularization_loss=regularization_loss, total_loss=total_loss)
        return metrics

    @tf.autograph.experimental.do_not_convert  # as compute_loss
    def test_step(self, inputs):
        return super().test_step(inputs)

    # Plain graph code (no tensor-dependent Python control flow): without autograph's
    # source transforms of every nested layer, the first train step traces in about
    # a third of the time.
    @tf.autograph.experimental.do_not_convert
    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        """This replica's share of the global-batch mean of the total loss (HA-PFD Eq. 7)."""
        features, labels = inputs
        per_example = tf.add_n(list(self.loss_terms(features, labels, training).values()))
        n = tf.cast(global_batch_size(tf.shape(per_example)[0]), per_example.dtype)
        return tf.reduce_sum(per_example) / n


def _unbuilt(optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
    """A new optimizer of `optimizer`'s class and settings, without its state."""
    return optimizer.__class__.from_config(optimizer.get_config())


def split_labels(labels) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """(conversion [B, 1], the other label columns {name: [B, 1]}), all float32;
    `labels` is the conversion tensor or a dict holding it under "label"."""
    def column(x):
        return tf.reshape(tf.cast(x, tf.float32), [-1, 1])

    if not isinstance(labels, Mapping):
        return column(labels), {}
    return column(labels[LABEL]), {k: column(v) for k, v in labels.items() if k != LABEL}


def make_optimizer(config: ModelConfig, learning_rate: float | None = None
                   ) -> tf.keras.optimizers.Optimizer:
    """HA-PFD appendix A: Adam, lr 0.0025, weight decay 0.001 (`learning_rate`: another rate,
    e.g. the teacher's); with `embedding_optimizer: lazy_adam` row-sparse on the
    embedding tables (models/optimizers.py). Its gradient clip (600) is applied by
    `JointModel.train_step`, per side."""
    adam = LazyAdam if config.embedding_optimizer == "lazy_adam" else tf.keras.optimizers.Adam
    return adam(learning_rate=learning_rate or config.learning_rate,
                weight_decay=config.weight_decay)


def build_model(config: ModelConfig, regular_vocab: Mapping[str, int],
                privileged_vocab: Mapping[str, int]) -> JointModel:
    """A compiled JointModel; call inside `strategy.scope()` to distribute it."""
    model = JointModel(config, regular_vocab, privileged_vocab, name="joint_model")
    model.compile(optimizer=make_optimizer(config),
                  teacher_optimizer=make_optimizer(config, config.teacher_learning_rate))
    return model
