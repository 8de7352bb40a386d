"""The settings behind docs/paper-deviations.md: the paper's choices are one setting
away and load from a config, bad values fail at load time, and per-run tuning
covers both readings of HA-PFD's learning rate and alignment weight."""
import pytest

from pfdx.config import ConfigError, ModelConfig, TuningConfig, from_dict


def test_defaults_and_the_papers_settings_load():
    m = ModelConfig()
    assert m.ukd.unclicked_rate is None  # derived: 1 : 1 (UKD appendix A.1)
    assert (m.ukd.hidden_units, m.taml.hidden_units, m.taml.activation) == (None, None, "smelu")
    paper = from_dict({"model": {"ukd": {"hidden_units": [1024, 512, 256], "unclicked_rate": 0.05},
                                 "taml": {"hidden_units": [64, 32], "activation": "relu"}}}).model
    assert paper.ukd.hidden_units == (1024, 512, 256) and paper.taml.hidden_units == (64, 32)
    assert paper.ukd.unclicked_rate == 0.05 and paper.taml.activation == "relu"
    assert from_dict({"model": {"ukd": {"unclicked_rate": None}}}).model.ukd.unclicked_rate is None


@pytest.mark.parametrize("model,match", [
    ({"ukd": {"unclicked_rate": 0.0}}, "model.ukd.unclicked_rate"),
    ({"ukd": {"unclicked_rate": 1.5}}, "model.ukd.unclicked_rate"),
    ({"taml": {"activation": "tanh"}}, "model.taml.activation"),
])
def test_bad_values_fail_at_load_time(model, match):
    with pytest.raises(ConfigError, match=match):
        from_dict({"model": model})


def test_tuning_tries_both_readings_of_ha_pfd():
    grid = TuningConfig().grid
    assert {0.0025, 0.025} <= set(grid["learning_rate"])  # HA-PFD appendix A, §4.1
    assert {1.0, 10.0} <= set(grid["alignment.weight"])  # HA-PFD Eq. 6, appendix A
