"""The setup stage's student is the student alone (models/tuning.py `student_alone`):
at the no-distillation point of a strategy whose `StrategySpec.setup_student_alone`,
the student trains exactly as `none` does -- same seed, same batches, same steps --
beside a teacher on its own tables, so its weights and predictions are the same to
the bit, and tuning the student alone can read them off that stage."""
import numpy as np
import pytest

import pfdx  # noqa: F401
import tensorflow as tf

from pfdx.models import registry
from pfdx.models.model import build_model
from tests.test_models_best_epochs import _data
from tests.test_models_gradients import PRIVILEGED, REGULAR, small_config


def _student(strategy: str, settings: dict) -> list[np.ndarray]:
    """The student's weights after two epochs, built and seeded as `Fitter._build` does."""
    tf.keras.utils.set_random_seed(3)
    model = build_model(small_config(strategy, {"learning_rate": 0.05, **settings}), REGULAR,
                        PRIVILEGED)
    data = _data(0)
    model.create_variables(data.element_spec)
    model.fit(data, epochs=2, verbose=0)
    return [w.numpy() for w in model.student.weights]


@pytest.mark.parametrize("name", [n for n, s in registry.STRATEGIES.items()
                                  if s.setup_student_alone])
def test_the_no_distillation_student_is_the_student_alone(name):
    alone = _student("none", {})
    beside = _student(name, registry.STRATEGIES[name].no_distillation())
    assert len(alone) == len(beside) > 4
    for a, b in zip(alone, beside):
        np.testing.assert_array_equal(a, b)


def test_a_distilled_student_is_not_the_student_alone():
    # The test above can fail: at its configured weights a student learns from its teacher.
    alone, distilled = _student("none", {}), _student("ha_pfd_v2", {"kd.lam": 1.0})
    assert any(not np.array_equal(a, b) for a, b in zip(alone, distilled))
