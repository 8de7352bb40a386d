"""Loading a config: defaults, then a YAML/JSON file read as plain data
(`yaml.safe_load`: nothing is evaluated), then `key.sub=value` overrides."""
from __future__ import annotations

import collections.abc
import dataclasses
import json
import typing
from typing import Any, Mapping

import yaml

from pfdx.config.coercion import ConfigError, build
from pfdx.config.model import moved
from pfdx.config.pipeline import PipelineConfig


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """`value` at `dotted` in `tree`, a section per dot; below a mapping setting the
    rest is one key (`tuning.grid.kd.lam`: the grid's keys are dotted paths)."""
    keys = dotted.split(".")
    node, section = tree, PipelineConfig
    for i, k in enumerate(keys[:-1]):
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
        hint = typing.get_type_hints(section).get(k) if section is not None else None
        if typing.get_origin(hint) in (collections.abc.Mapping, dict):
            node[".".join(keys[i + 1:])] = value
            return
        section = hint if dataclasses.is_dataclass(hint) else None
    node[keys[-1]] = value


def _refuse_moved(tree: Mapping[str, Any]) -> None:
    """A moved model setting fails naming its new key (`model.lam` is `model.kd.lam`)."""
    model = tree.get("model")
    for key in model if isinstance(model, Mapping) else ():
        if (where := moved(key, "model.")) is not None:
            raise ConfigError(f"model.{key}: moved to {where}")


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Defaults, then the YAML/JSON file at `path`, then `key.sub=value` overrides."""
    tree: dict[str, Any] = {}
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path} is not valid YAML/JSON: {e}") from None
        tree = loaded or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"config {path}: top level must be a mapping")
    return from_dict(tree, overrides)


def from_dict(tree: Mapping[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """A config from plain data (e.g. `to_dict()` output) plus `key.sub=value` overrides."""
    tree = json.loads(json.dumps(tree))  # a private, mutable copy
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw  # not YAML, e.g. the glob *.csv: the text itself (types are checked below)
        _set_dotted(tree, key.strip(), value)
    _refuse_moved(tree)
    return build(PipelineConfig, tree, "").validate()
