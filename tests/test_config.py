import dataclasses
import json
import re

import pytest

from pfdx.config import ConfigError, PipelineConfig, load_config


def test_defaults_are_the_papers():
    c = load_config()
    assert (c.model.kd.gamma, c.model.kd.lam, c.model.learning_rate) == (1.0, 10.0, 0.0025)
    assert (c.selection.drop_top_k, c.selection.keep_top_n) == (2, 12)
    assert c.selection.or_groups == {"interact": ("tag", "like", "share")}


def test_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  kd:\n    gamma: 2\ndata:\n  columns:\n    label: y\n    click: null\n")
    c = load_config(str(f), ["model.kd.lam=3.5", "runner.beam_args=[--a=1]"])
    assert c.model.kd.gamma == 2.0 and isinstance(c.model.kd.gamma, float)
    assert c.model.kd.lam == 3.5
    assert c.data.columns.label == "y" and c.data.columns.click is None
    assert c.runner.beam_args == ("--a=1",)


@pytest.mark.parametrize("override, message", [
    (["model.gamm=1"], "model: unknown key(s) ['gamm']"),
    (["model.epochs=1.5"], "model.epochs: expected int"),
    (["data.format=xml"], "data.format"),
    (["data.columns.regular_numeric=bid"], "data.columns.regular_numeric: expected a list"),
    (["data.columns.ignore=[user_id]"], "'user_id' is in both"),
    (["runner.enable_cache=yes please"], "runner.enable_cache: expected true/false"),
    # Issue 17.10: caught at load time, not inside TF / Beam or at the Trainer.
    (["model.strategy=ha_pfd_v3"], "model.strategy: 'ha_pfd_v3' is not one of adversarial_kd,"),
    (["model.batch_size=0"], "model.batch_size: 0 is below 1"),
    (["model.epochs=0"], "model.epochs: 0 is below 1"),
    (["model.hash_buckets=0"], "model.hash_buckets: 0 is below 1"),
    (["model.hash_rows_per_id=-1"], "model.hash_rows_per_id: -1 is below 0"),
    (["model.reader_threads=-1"], "model.reader_threads: -1 is below 0"),
    (["model.learning_rate=0"], "model.learning_rate: 0.0 is not positive"),
    (['data.separator=""'], "data.separator: '' is not one character"),
    (["data.separator=;;"], "data.separator: ';;' is not one character"),
    (["data.file_pattern=**.csv"], "data.file_pattern: '**.csv': '**' is not supported"),
    (["data.min_split_rows=0"], "data.min_split_rows: 0 is below 1"),
])
def test_bad_config_names_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, override)


def test_yaml_is_data_not_code(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("model: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(f))


def test_paths_cannot_escape_the_output_root(tmp_path):
    c = load_config(None, [f"runner.output_root={tmp_path}"])
    assert c.resolve("serving").startswith(str(tmp_path))
    with pytest.raises(ConfigError, match="escapes the output root"):
        c.resolve("../../etc")
    assert c.resolve("/abs/elsewhere") == "/abs/elsewhere"  # explicit absolute paths are allowed


def test_config_round_trips_through_json():
    c = PipelineConfig()
    import json
    import yaml
    assert load_config(None, []) == c
    tree = json.loads(c.to_json())
    assert tree["model"]["strategy"] == "ha_pfd_v2"
    assert yaml.safe_load(c.to_json()) == tree


@pytest.mark.parametrize("name", ["simulated.yaml", "kuairand.yaml"])
def test_shipped_configs_load(name):
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "pipeline", "configs", name)
    config = load_config(path, [])
    # No hand-tuned weights: every shipped config runs the library's model defaults
    # (the paper's), and per-run tuning adapts them to the log.
    defaults = load_config(None, [])
    for key in ("kd.lam", "kd.gamma", "alignment.weight", "learning_rate"):
        assert config.model.get(key) == defaults.model.get(key), key
    assert config.tuning == defaults.tuning


def test_make_runs_beam_runs_in_memory_on_one_worker():
    """`make run` repeats itself: in memory, a second Beam worker only splits bundles
    across threads, and ExampleGen's shards then split the rows differently every
    run, and with them the trained numbers (bench/results "One Beam worker")."""
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "pipeline", "configs", "simulated.yaml")
    args = load_config(path, []).beam_pipeline_args
    assert "--direct_running_mode=in_memory" in args and "--direct_num_workers=1" in args


def _dag(tmp_path, strategy):
    from pfdx.pipeline import dag
    config = load_config(None, [f"runner.output_root={tmp_path}", f"model.strategy={strategy}"])
    return {c.id: c for c in dag.create_components(config, str(tmp_path), str(tmp_path / "s"))}


def _example_space(component) -> str:
    from pfdx.components.click_log_spec import read_custom_config
    return read_custom_config(component.exec_properties)["space"]


@pytest.mark.parametrize("strategy,space", [("ha_pfd_v2", "click"), ("taml", "impression"),
                                            ("ukd_teacher", "impression")])
def test_dag_example_space_follows_the_strategy(tmp_path, strategy, space):
    components = _dag(tmp_path, strategy)
    assert _example_space(components["ClickLogExampleGen"]) == space
    assert "BulkInferrer" not in components and "UkdTeacherTrainer" not in components


def test_ukd_dag_pseudo_labels_the_students_examples_with_its_teacher(tmp_path):
    from pfdx.components.trainer import PIPELINE_CONFIG_KEY, PSEUDO_LABEL_COLUMN_KEY
    from pfdx.pipeline.dag import PSEUDO_LABEL_COLUMN
    c = _dag(tmp_path, "ukd")
    assert _example_space(c["ClickLogExampleGen"]) == "impression"
    teacher, inferrer, student = c["UkdTeacherTrainer"], c["BulkInferrer"], c["Trainer"]
    config = {k: json.loads(t.exec_properties["custom_config"]) for k, t in
              (("teacher", teacher), ("student", student))}
    assert config["teacher"][PIPELINE_CONFIG_KEY]["model"]["strategy"] == "ukd_teacher"
    assert config["student"][PIPELINE_CONFIG_KEY]["model"]["strategy"] == "ukd"
    assert config["teacher"][PSEUDO_LABEL_COLUMN_KEY] is None
    assert config["student"][PSEUDO_LABEL_COLUMN_KEY] == PSEUDO_LABEL_COLUMN
    assert inferrer.inputs["model"].producer_component_id == "UkdTeacherTrainer"
    assert student.inputs["examples"].producer_component_id == "BulkInferrer"
    # The Evaluator judges the served student on the logged examples, not the labelled copy.
    assert c["Evaluator"].inputs["examples"].producer_component_id == "ClickLogExampleGen"


def test_ukd_unclicked_rate_is_checked():
    with pytest.raises(ConfigError, match="model.ukd.unclicked_rate"):
        load_config(None, ["model.ukd.unclicked_rate=0"])


# Every flat model setting the strategy sections replaced (issue 18) -> its new key.
MOVED = {
    "lam": "kd.lam", "gamma": "kd.gamma", "align_weight": "alignment.weight",
    "mapping_hidden_units": "alignment.mapping_hidden_units",
    "review_weight": "review_kd.weight", "similarity_weight": "similarity_kd.weight",
    "adversarial_weight": "adversarial_kd.weight",
    "adversarial_disc_weight": "adversarial_kd.discriminator_weight",
    "adversarial_warmup_steps": "adversarial_kd.warmup_steps",
    "adversarial_hidden_units": "adversarial_kd.discriminator_hidden_units and "
                                "model.ukd.discriminator_hidden_units",
    "mtl_weight": "mtl.weight", "ektf_heads": "ektf.heads", "ektf_serve": "ektf.serve",
    "taml_learners": "taml.learners", "taml_experts": "taml.experts",
    "taml_expert_units": "taml.expert_units", "taml_hidden_units": "taml.hidden_units",
    "taml_activation": "taml.activation", "taml_alpha": "taml.alpha", "taml_beta": "taml.beta",
    "ukd_ctr_weight": "ukd.ctr_weight", "ukd_pseudo_weight": "ukd.pseudo_weight",
    "ukd_uncertainty_scale": "ukd.uncertainty_scale", "ukd_dropout": "ukd.dropout",
    "ukd_reversal_scale": "ukd.reversal_scale", "ukd_hidden_units": "ukd.hidden_units",
    "ukd_unclicked_rate": "ukd.unclicked_rate",
}


@pytest.mark.parametrize("old, new", MOVED.items())
def test_a_moved_setting_is_refused_naming_its_new_key(tmp_path, old, new):
    f = tmp_path / "c.yaml"
    f.write_text(f"model:\n  {old}: 1\n")
    message = f"model.{old}: moved to model.{new}"
    for path, overrides in ((str(f), []), (None, [f"model.{old}=1"])):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(path, overrides)


@pytest.mark.parametrize("key, message", [
    ("lam", "tuning.grid.lam: moved to tuning.grid.kd.lam"),
    ("ha_pfd_v2:gamma", "tuning.grid.ha_pfd_v2:gamma: moved to tuning.grid.ha_pfd_v2:kd.gamma"),
    ("taml_alpha", "tuning.grid.taml_alpha: moved to tuning.grid.taml.alpha"),
])
def test_a_moved_setting_is_refused_as_a_tuning_grid_key(key, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [f'tuning.grid={{"{key}": [1]}}'])


def test_strategy_settings_load_from_their_sections(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  ukd:\n    dropout: 0.3\ntuning:\n  grid:\n"
                 "    kd.lam: [1, 3]\n    'ha_pfd_v2:kd.gamma': [2]\n")
    c = load_config(str(f), ["model.alignment.weight=10",
                             "tuning.grid.ha_pfd_v1:alignment.weight=[0.5]"])
    assert (c.model.ukd.dropout, c.model.alignment.weight, c.model.get("ukd.dropout")) == (
        0.3, 10.0, 0.3)
    assert c.tuning.grid == {"kd.lam": (1, 3), "ha_pfd_v2:kd.gamma": (2,),
                             "ha_pfd_v1:alignment.weight": (0.5,)}
    assert c.with_model({"kd.lam": 0.0}).model.kd == dataclasses.replace(c.model.kd, lam=0.0)
    with pytest.raises(ConfigError, match=re.escape("tuning.grid.kd.lamda: 'kd.lamda' is not")):
        load_config(None, ["tuning.grid.kd.lamda=[1]"])
