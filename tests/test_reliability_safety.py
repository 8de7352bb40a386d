"""Configs and artifacts are data, never code; config paths stay where they belong (issue 7)."""
import ast
import os

import pytest

from pfdx.config import ConfigError, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ("pfdx", "pipeline", "components", "features", "models", "serving", "simulator",
               "bench")
# Modules that turn bytes into code or arbitrary objects.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve",
                  "joblib"}
UNSAFE_CALLS = {"eval", "exec", "read_pickle", "unsafe_load", "full_load"}


def _sources():
    for folder in SOURCE_DIRS:
        for dirpath, _, names in os.walk(os.path.join(REPO, folder)):
            for name in names:
                if name.endswith(".py"):
                    yield os.path.join(dirpath, name)


def _unsafe_uses(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        where = f"{os.path.relpath(path, REPO)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where} from {node.module} import")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in UNSAFE_CALLS:
                found.append(f"{where} {name}()")
            if name == "load" and isinstance(func, ast.Attribute) and getattr(
                    func.value, "id", "") == "yaml":
                found.append(f"{where} yaml.load()")  # yaml.safe_load only
            found += [f"{where} allow_pickle=True" for kw in node.keywords
                      if kw.arg == "allow_pickle" and not (
                          isinstance(kw.value, ast.Constant) and kw.value.value is False)]
    return found


def test_no_source_file_deserialises_code():
    sources = list(_sources())
    assert len(sources) > 30  # the scan sees the package
    assert [use for path in sources for use in _unsafe_uses(path)] == []


def test_the_scan_catches_what_it_bans(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport yaml, numpy as np\nyaml.load(s)\neval(s)\n"
                   "np.load(f, allow_pickle=True)\n")
    assert [u.split(" ", 1)[1] for u in _unsafe_uses(str(bad))] == [
        "import pickle", "yaml.load()", "eval()", "allow_pickle=True"]


@pytest.mark.parametrize("override", [
    "model.kd.lam=__import__('os').system('touch /tmp/pfdx-pwned')",
    "model.kd.lam=!!python/object/apply:os.system ['touch /tmp/pfdx-pwned']",
])
def test_overrides_are_parsed_as_data(override):
    with pytest.raises(ConfigError, match="model.kd.lam"):
        load_config(None, [override])
    assert not os.path.exists("/tmp/pfdx-pwned")


def test_an_override_that_is_not_yaml_is_taken_as_text():
    assert load_config(None, ["data.file_pattern=*.parquet"]).data.file_pattern == "*.parquet"
    with pytest.raises(ConfigError, match="data.columns.ignore: expected a list"):
        load_config(None, ["data.columns.ignore=[a, b"])


@pytest.mark.parametrize("relative, inside", [
    ("pipeline_root", True), ("a/../b", True), (".", True), ("~/x", True),
    ("..", False), ("../sibling", False), ("data/../../outside", False),
])
def test_output_paths_stay_under_the_output_root(tmp_path, relative, inside):
    config = load_config(None, [f"runner.output_root={tmp_path}"])
    if inside:
        assert os.path.commonpath([config.resolve(relative), str(tmp_path)]) == str(tmp_path)
    else:
        with pytest.raises(ConfigError, match="escapes the output root"):
            config.resolve(relative)
    assert config.resolve("/elsewhere/explicit") == "/elsewhere/explicit"


@pytest.mark.parametrize("pattern", ["../*.csv", "/etc/*", "logs/../../x"])
def test_the_file_pattern_stays_inside_the_data_path(pattern):
    with pytest.raises(ConfigError, match="data.file_pattern"):
        load_config(None, [f"data.file_pattern={pattern}"])


def test_allow_anomalies_is_off_unless_asked_for():
    assert load_config().runner.allow_anomalies is False
    assert load_config(None, ["runner.allow_anomalies=true"]).runner.allow_anomalies is True
