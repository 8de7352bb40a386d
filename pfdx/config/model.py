"""The `model` section: the strategy and the joint model's shape and training."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    strategy: str = "ha_pfd_v2"
    embedding_dim: int = 16
    # How a categorical id becomes an embedding row (features/transform.py): "hash"
    # (appendix A), `hash_buckets` rows whatever the data, an unseen id lands on an
    # arbitrary (mostly never trained) row; or "vocabulary", a table sized to the
    # train split: a row per id seen at least `min_id_count` times (at most the
    # `max_vocabulary` most frequent) and `oov_buckets` shared rows for the rest and
    # for ids first seen at serving. Not the default: on KuaiRand's time split (73%
    # of test rows hold a video id the train window lacks) it won validation by 0.02
    # AUC and lost test by 0.027 with ECE 0.21 (bench/results/kuairand-encoding): its
    # OOV row is untrained (min_id_count 1) or learns rare ids (2: there, nearly all
    # negative), neither what a new id is worth.
    categorical_encoding: str = "hash"
    max_vocabulary: int = 100_000
    min_id_count: int = 1
    oov_buckets: int = 1
    hash_buckets: int = 100_000
    # Numeric features are bucketized by quantiles.
    numeric_buckets: int = 32
    hidden_units: tuple[int, ...] = (256, 128)
    smelu_beta: float = 1.0
    gamma: float = 1.0
    lam: float = 10.0
    # HA-PFD gives two: appendix A's 0.0025 (the default) and §4.1's 0.025. Per-run
    # tuning tries both (tuning.grid); docs/paper-deviations.md item 9.
    learning_rate: float = 0.0025
    # The teacher's own learning rate (None: `learning_rate`, as in the paper, which
    # trains both with one Adam). Per-run tuning sets it to the rate whose *teacher*
    # scores best, as `learning_rate` is the one whose student does: on KuaiRand the
    # two disagree (docs/paper-deviations.md, "one learning rate").
    teacher_learning_rate: float | None = None
    weight_decay: float = 0.001
    # How the embedding tables step: "adam", Keras' Adam on every row every step (the
    # paper's); "lazy_adam", only the rows a batch looks up (models/optimizers.py):
    # a step then costs the batch, not the tables (5.7x faster at 100k rows per
    # table), but on KuaiRand the student alone lost 0.04 AUC on average over 3 seeds
    # (docs/paper-deviations.md item 12), so it is not the default.
    embedding_optimizer: str = "adam"
    clipnorm: float = 600.0
    init_stddev: float = 0.1
    # Distillation settings (models/strategies.py). The logit-distillation term (KD or
    # focal) always carries `lam`; the latent-alignment term carries `align_weight`
    # (Eq. 6: 1). Appendix A gives the baselines' weights below; it also says
    # ReviewKD's 10 is "the same as our layer aligning strategy", a second reading of
    # this weight. Per-run tuning tries 0.1, 1 and 10 (tuning.grid); see
    # docs/paper-deviations.md item 10.
    align_weight: float = 1.0
    # Hidden layers of each mapping DNN g^(i) (Eq. 5); its output has the teacher
    # latent's width. The paper says only "a DNN".
    mapping_hidden_units: tuple[int, ...] = (128,)
    review_weight: float = 10.0
    similarity_weight: float = 100.0
    adversarial_hidden_units: tuple[int, ...] = (128, 64)
    adversarial_disc_weight: float = 1.0
    adversarial_weight: float = 10.0
    # Steps the discriminators train alone before the student is pushed to fool
    # them (paper: 5M batches of a 1.39B-row log).
    adversarial_warmup_steps: int = 1_000
    # Weight of the auxiliary privileged-feature tasks of the `mtl` baseline.
    mtl_weight: float = 1.0
    # Multi-head students (models/heads.py). EKTF: `ektf_heads` student towers on
    # the shared embeddings, taught by their mean probability (EKTF Eq. 2); serve
    # that mean (`ensemble`) or the head with the best running exam score (`best`).
    ektf_heads: int = 3
    ektf_serve: str = "ensemble"
    # TAML (impression space): learners per task; experts per group (general, per
    # task; each learner also has its own, so a gate weighs 2e + 1 experts) of
    # `taml_expert_units`; self-distillation weights alpha (CTR), beta (CVR).
    taml_learners: int = 2
    taml_experts: int = 1
    taml_expert_units: int = 64
    # Learner towers' hidden layers (None: hidden_units) and the experts' and
    # learners' activation, smelu | relu. The paper's: (64, 32), relu (with lr 1e-3,
    # batch 2000); the defaults keep HA-PFD's towers so strategies compare on one
    # architecture (models/strategies.py TaskAdaptiveMultiLearner).
    taml_hidden_units: tuple[int, ...] | None = None
    taml_activation: str = "smelu"
    taml_alpha: float = 0.1
    taml_beta: float = 0.1
    # UKD (impression space): CTR loss weight gamma, pseudo-label weight alpha,
    # uncertainty scale lambda, dropout before the two CVR heads; the teacher's
    # gradient-reversal scale (its click discriminator: adversarial_hidden_units).
    ukd_ctr_weight: float = 0.2
    ukd_pseudo_weight: float = 0.5
    ukd_uncertainty_scale: float = 100.0
    ukd_dropout: float = 0.2
    ukd_reversal_scale: float = 1.0
    # UKD's towers, teacher and student (None: hidden_units). The paper's:
    # (1024, 512, 256), with lr 0.005 and batch 128; the default keeps HA-PFD's
    # towers so strategies compare on one architecture.
    ukd_hidden_units: tuple[int, ...] | None = None
    # Share of the unclicked impressions UKD's teacher trains on (all clicked rows
    # do). None: derived from the train split's observed CTR as CTR / (1 - CTR), so
    # clicked : unclicked is 1 : 1 (UKD appendix A.1); a number fixes it.
    ukd_unclicked_rate: float | None = None
    # TAML / UKD students also serve their CTR.
    serve_ctr: bool = False
    batch_size: int = 512
    # At most this many passes over the train split: early stopping on the
    # validation split's student AUC ends training after `early_stopping_patience`
    # epochs without a gain and restores the best epoch's weights.
    epochs: int = 10
    early_stopping_patience: int = 2
    # Then train a fresh model on train + validation for the best epoch count: the
    # validation split is the freshest data before eval (models/training.py Fitter).
    refit: bool = True
    # Rows shuffled together: the whole train split up to this many. Logs come
    # sorted (by time, user, outcome); a small buffer would feed one-class batches.
    shuffle_buffer_rows: int = 1_000_000
    # What the teacher receives of a continuous privileged feature: `binary`, the
    # Eq. 8 threshold's bit (paper), or `quantiles`: `privileged_buckets` quantile
    # buckets of its value (selection still ranks by the Eq. 8 bit). Per-run tuning
    # picks one on the validation split when both are in tuning.grid.
    privileged_encoding: str = "binary"
    privileged_buckets: int = 16
    # Teacher and student share the regular-feature embeddings (paper §3.1). Off:
    # the teacher has its own tables, so it trains as if alone (models/model.py).
    share_embeddings: bool = True
    seed: int = 42
    # tf.distribute strategy: auto (MultiWorkerMirrored when TF_CONFIG names more
    # than one host, else Mirrored over the local GPUs) | mirrored | multi_worker.
    distribution: str = "auto"
