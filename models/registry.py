"""Every strategy pfdx knows and what the code around its model must know of it,
TensorFlow-free: the config validates names against it, the DAG and the Trainer pick
the example space and the teacher stage from it, per-run tuning its grid keys,
`pfdx compare` its order and what to skip, the gradient tests its loss terms.

The TensorFlow side of each strategy (its nets and loss terms) is the factory of the
same name in models/strategies.py `STRATEGIES`; tests/test_models_registry.py keeps
the two in step.
"""
from __future__ import annotations

import dataclasses
from typing import Any

# The example spaces (PipelineConfig.space; features/contract.py): clicked rows only,
# or every impression with its click label.
CLICK, IMPRESSION = "click", "impression"

_LEARNING_RATE = "learning_rate"
_PRIVILEGED_ENCODING = "privileged_encoding"
_TEACHER_TUNING = ("share_embeddings", "teacher_learning_rate")
# 0 for a weight a strategy does not use is "off"; gamma is an exponent, not a weight.
_NOT_A_WEIGHT = {"kd.gamma"}


@dataclasses.dataclass(frozen=True)
class StrategySpec:
    name: str
    # Named per-example loss terms its layer adds to the task losses (HA-PFD Eq. 7).
    loss_terms: frozenset[str] = frozenset()
    # Model settings weighting its terms, as dotted paths below `model` (`kd.lam`,
    # pfdx/config/strategy_sections.py): per-run tuning varies these, and all of them
    # at 0 is "no distillation".
    term_weights: tuple[str, ...] = ()
    # Other model settings it reads (shapes, schedules, serving), never tuned.
    settings: tuple[str, ...] = ()
    space: str = CLICK
    # A teacher tower on the privileged inputs trains beside the student
    # (models/strategy_base.py `Strategy.uses_teacher`).
    privileged_teacher: bool = False
    # Its nets read the privileged inputs (a teacher, MTL's targets): it is not
    # trained when selection keeps none, and tuning varies their encoding.
    reads_privileged: bool = False
    # Tuning varies the teacher's tables and learning rate (_TEACHER_TUNING).
    tunes_teacher: bool = False
    # The strategy trained first whose served student pseudo-labels this one's
    # examples (UKD: its click-adaptive teacher; the DAG's BulkInferrer).
    teacher_stage: str | None = None
    # Trains on every clicked row and a sample of the unclicked ones (UKD §3.1,
    # models/impressions.py), not on every impression.
    samples_unclicked: bool = False
    # Gives the student other layers or owns its loss (MTL's auxiliary towers, the
    # heads of EKTF, TAML and UKD; models/strategy_base.py): its student is not the
    # student alone's.
    reshapes_student: bool = False

    @property
    def tuning_keys(self) -> tuple[str, ...]:
        """The model settings (`tuning.grid` keys) per-run tuning may vary."""
        return (self.term_weights + (_PRIVILEGED_ENCODING,) * self.reads_privileged
                + _TEACHER_TUNING * self.tunes_teacher + (_LEARNING_RATE,))

    @property
    def setup_student_alone(self) -> bool:
        """Whether its no-distillation point (`no_distillation`) trains the very student
        `none` trains: a teacher on its own tables and a student of the plain shape.
        Tuning reads the student alone off its setup stage (models/tuning.py
        `student_alone`; tests/test_models_setup_student.py checks it to the bit)."""
        return self.tunes_teacher and not self.reshapes_student

    def no_distillation(self) -> dict[str, Any]:
        """The point where nothing privileged reaches the student: every weight of
        its terms 0 and, with a teacher, no shared embeddings (the student then
        trains exactly as it would alone, beside an independent teacher)."""
        point: dict[str, Any] = {f: 0.0 for f in self.term_weights if f not in _NOT_A_WEIGHT}
        if self.tunes_teacher:
            point["share_embeddings"] = False
        return point


def _distiller(name: str, terms: set[str], weights: tuple[str, ...],
               settings: tuple[str, ...] = ()) -> StrategySpec:
    """A click-space strategy distilling a privileged teacher into the student."""
    return StrategySpec(name, frozenset(terms), weights, settings, privileged_teacher=True,
                        reads_privileged=True, tunes_teacher=True)


def _combined(name: str, *parts: StrategySpec) -> StrategySpec:
    """A sum of strategies (models/strategies.py `Combined`)."""
    def union(field: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for p in parts for f in getattr(p, field)))

    return StrategySpec(
        name, frozenset().union(*(p.loss_terms for p in parts)), union("term_weights"),
        union("settings"), privileged_teacher=any(p.privileged_teacher for p in parts),
        reads_privileged=any(p.reads_privileged for p in parts),
        tunes_teacher=any(p.tunes_teacher for p in parts),
        reshapes_student=any(p.reshapes_student for p in parts))


_MAPPING = ("alignment.mapping_hidden_units",)
_KD = _distiller("kd", {"kd"}, ("kd.lam",))
_FOCAL_V1 = _distiller("focal_v1", {"focal_v1"}, ("kd.lam", "kd.gamma"))
_FOCAL_V2 = _distiller("focal_v2", {"focal_v2"}, ("kd.lam", "kd.gamma"))
_LAYER_ALIGN = _distiller("layer_align", {"layer_align"}, ("alignment.weight",), _MAPPING)
# The student's heads teach each other: no privileged teacher, so nothing of one to
# tune, and it still runs when selection keeps no privileged feature.
_EKTF = StrategySpec("ektf", frozenset({"heads_task", "ektf_kd", "ektf_dml"}),
                     settings=("ektf.heads", "ektf.serve"), reshapes_student=True)
_UKD_TEACHER = StrategySpec(
    "ukd_teacher", frozenset({"click_discriminator"}), ("ukd.reversal_scale",),
    ("ukd.discriminator_hidden_units", "ukd.hidden_units", "ukd.unclicked_rate"), IMPRESSION,
    samples_unclicked=True, reshapes_student=True)

_SPECS = (
    StrategySpec("none"),
    StrategySpec("mtl", frozenset({"auxiliary"}), ("mtl.weight",), reads_privileged=True,
                 reshapes_student=True),
    _KD, _FOCAL_V1, _FOCAL_V2, _LAYER_ALIGN,
    _combined("kd_layer_align", _LAYER_ALIGN, _KD),
    _combined("ha_pfd_v1", _LAYER_ALIGN, _FOCAL_V1),
    _combined("ha_pfd_v2", _LAYER_ALIGN, _FOCAL_V2),
    _distiller("review_kd", {"review"}, ("review_kd.weight",), _MAPPING),
    _distiller("similarity_kd", {"similarity"}, ("similarity_kd.weight",)),
    _distiller("adversarial_kd", {"discriminator", "adversarial"}, ("adversarial_kd.weight",),
               ("adversarial_kd.discriminator_hidden_units",
                "adversarial_kd.discriminator_weight", "adversarial_kd.warmup_steps")),
    _EKTF,
    _combined("ha_pfd_v2_ektf", _LAYER_ALIGN, _FOCAL_V2, _EKTF),
    StrategySpec("taml", frozenset({"ctr_task", "ctcvr_task", "ctr_self_kd", "cvr_self_kd"}),
                 ("taml.alpha", "taml.beta"),
                 ("taml.learners", "taml.experts", "taml.expert_units", "taml.hidden_units",
                  "taml.activation", "serve_ctr"), IMPRESSION, reshapes_student=True),
    _UKD_TEACHER,
    StrategySpec("ukd", frozenset({"cvr_click", "cvr_unclick", "uncertainty", "ctr_task"}),
                 ("ukd.pseudo_weight", "ukd.uncertainty_scale"),
                 ("ukd.ctr_weight", "ukd.dropout", "ukd.hidden_units", "serve_ctr"), IMPRESSION,
                 teacher_stage=_UKD_TEACHER.name, reshapes_student=True),
)
# Name -> spec, in the order `pfdx compare` lists them.
STRATEGIES: dict[str, StrategySpec] = {s.name: s for s in _SPECS}


def names(space: str | None = None) -> list[str]:
    """Every strategy name, or those of one example space, in registry order."""
    return [n for n, s in STRATEGIES.items() if space in (None, s.space)]
