"""The Trainer gets only what training reads of the config (components/trainer.py
TRAINING_FIELDS), so editing anything else leaves it cached (issue 16)."""
import dataclasses
import glob
import json
import os
import sys

import pytest
from ml_metadata.proto.metadata_store_pb2 import Execution
from tfx import v1 as tfx
from tfx.components.trainer import executor as trainer_executor

from pfdx import config as config_module
from pfdx.components import trainer
from pfdx.config import load_config
from pfdx.pipeline import dag, local_runner
from tests.pipeline_helpers import make_config, store

# Not read by training: the Evaluator's thresholds and slices, Kubeflow, compare, the gate.
UNREAD = ["evaluation.min_auc=0.01", "evaluation.max_auc_drop=0.5", "evaluation.max_ece=0.9",
          "evaluation.slice_by=[]", "kubeflow.image=elsewhere/pfdx:2", "kubeflow.trainer_gpus=1",
          "compare.seeds=1", "runner.allow_anomalies=true"]
READ = ["evaluation.calibration=none", "evaluation.calibration_bins=20",
        "evaluation.baseline_auc_tolerance=0.01", "evaluation.baseline_ece_tolerance=0.1",
        "model.kd.lam=1.0", "tuning.max_trials=1", "data.columns.truth=null",
        "runner.backup_seconds=0"]


def _trainer_exec_properties(tmp_path, *overrides):
    config = load_config(None, [f"runner.output_root={tmp_path}", *overrides])
    (t,) = [c for c in dag.create_components(config, str(tmp_path), str(tmp_path / "s"))
            if c.id == "Trainer"]
    return t.exec_properties


def test_trainer_exec_properties_hold_only_what_training_reads(tmp_path):
    base = _trainer_exec_properties(tmp_path)
    assert _trainer_exec_properties(tmp_path, *UNREAD) == base
    for setting in READ:
        assert _trainer_exec_properties(tmp_path, setting) != base, setting
    custom = json.loads(base["custom_config"])[trainer.PIPELINE_CONFIG_KEY]
    assert sorted(custom) == ["data", "evaluation", "model", "runner", "tuning"]
    assert sorted(custom["data"]) == ["columns"]
    assert sorted(custom["runner"]) == ["backup_seconds"]


def test_run_fn_config_keeps_every_training_setting(tmp_path):
    config = load_config(None, [f"runner.output_root={tmp_path}", *READ, *UNREAD])
    got = trainer._config(tfx.components.FnArgs(
        custom_config=trainer.trainer_custom_config(config)))
    assert trainer.training_config(got) == trainer.training_config(config)
    assert got.space == config.space


# What the Trainer must not read (section -> its dataclass); fields of TRAINING_FIELDS
# aside. Reads by the config package itself (validation, to_dict) do not count.
SECTIONS = {"data": config_module.DataConfig, "selection": config_module.SelectionConfig,
            "evaluation": config_module.EvaluationConfig, "runner": config_module.RunnerConfig,
            "kubeflow": config_module.KubeflowConfig, "compare": config_module.CompareConfig}
# Small and quick: caching is under test, not the model.
TINY = ["data.simulated_rows=20000", "model.hash_buckets=1000", "model.hidden_units=[32,16]",
        "model.alignment.mapping_hidden_units=[16]", "model.epochs=2",
        "model.early_stopping_patience=1", "model.refit=false"]


@pytest.fixture
def training_reads(monkeypatch):
    """Section fields read while the Trainer runs (in this process)."""
    reads, active = set(), []
    ignored = (*glob.glob(os.path.join(os.path.dirname(config_module.__file__), "*.py")),
               dataclasses.__file__, "<string>")
    for section, cls in SECTIONS.items():
        names = {f.name for f in dataclasses.fields(cls)}

        def get(self, name, section=section, names=names):
            if active and name in names and sys._getframe(1).f_code.co_filename not in ignored:
                reads.add(f"{section}.{name}")
            return object.__getattribute__(self, name)
        monkeypatch.setattr(cls, "__getattribute__", get, raising=False)
    # The executor, not run_fn: TFX reloads the run_fn's module before each execution.
    do = trainer_executor.GenericExecutor.Do

    def recorded(*args, **kwargs):
        active.append(True)
        try:
            return do(*args, **kwargs)
        finally:
            active.pop()
    monkeypatch.setattr(trainer_executor.GenericExecutor, "Do", recorded)
    return reads


def _states(config, since: int) -> dict[str, int]:
    s = store(config)
    node = s.get_context_type("node").id
    return {next(c.name.rsplit(".", 1)[1] for c in s.get_contexts_by_execution(e.id)
                 if c.type_id == node): e.last_known_state for e in s.get_executions()[since:]}


@pytest.mark.e2e
def test_editing_evaluation_or_kubeflow_settings_reruns_the_evaluator_not_the_trainer(
        tmp_path, training_reads):
    config = make_config(tmp_path, *TINY)
    local_runner.run(config)
    allowed = {f"{s}.{f}" for s, fields in trainer.TRAINING_FIELDS.items() if s in SECTIONS
               for f in fields}
    # Exactly what it is given: the columns, calibration, the baseline gate's tolerances
    # and the backup interval.
    assert training_reads == allowed, (training_reads - allowed, allowed - training_reads)

    before = len(store(config).get_executions())
    local_runner.run(make_config(tmp_path, *TINY, *UNREAD))
    states = _states(config, before)
    assert states["Trainer"] == Execution.CACHED, states
    assert states["Evaluator"] == Execution.COMPLETE, states
    # ... with the edited thresholds.
    (evaluator,) = [e for e in store(config).get_executions()[before:]
                    if e.last_known_state == Execution.COMPLETE and
                    "eval_config" in e.custom_properties]
    assert 0.01 in _numbers(json.loads(evaluator.custom_properties["eval_config"].string_value))


def _numbers(tree) -> set:
    if isinstance(tree, dict):
        return {n for v in tree.values() for n in _numbers(v)}
    if isinstance(tree, list):
        return {n for v in tree for n in _numbers(v)}
    return {tree} if isinstance(tree, (int, float)) else set()
