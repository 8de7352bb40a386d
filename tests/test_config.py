import json
import re

import pytest

from pfdx.config import ConfigError, PipelineConfig, load_config


def test_defaults_are_the_papers():
    c = load_config()
    assert (c.model.gamma, c.model.lam, c.model.learning_rate) == (1.0, 10.0, 0.0025)
    assert (c.selection.drop_top_k, c.selection.keep_top_n) == (2, 12)
    assert c.selection.or_groups == {"interact": ("tag", "like", "share")}


def test_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  gamma: 2\ndata:\n  columns:\n    label: y\n    click: null\n")
    c = load_config(str(f), ["model.lam=3.5", "runner.beam_args=[--a=1]"])
    assert c.model.gamma == 2.0 and isinstance(c.model.gamma, float)
    assert c.model.lam == 3.5
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
    for key in ("lam", "gamma", "align_weight", "learning_rate"):
        assert getattr(config.model, key) == getattr(defaults.model, key), key
    assert config.tuning == defaults.tuning


def _dag(tmp_path, strategy):
    from pfdx.pipeline import dag
    config = load_config(None, [f"runner.output_root={tmp_path}", f"model.strategy={strategy}"])
    return {c.id: c for c in dag.create_components(config, str(tmp_path), str(tmp_path / "s"))}


def _example_space(component) -> str:
    from pfdx.components.click_log_example_gen import read_custom_config
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
    with pytest.raises(ConfigError, match="model.ukd_unclicked_rate"):
        load_config(None, ["model.ukd_unclicked_rate=0"])
