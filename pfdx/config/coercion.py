"""Plain data (YAML, JSON, `--set` values) to the typed config: every key is checked
against the dataclass fields and every value against its type (a `Literal` field's
against its choices), so a typo or a wrong value fails with the key's dotted name."""
from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from typing import Any, Mapping


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; names the key."""


def build(cls: type, raw: Any, where: str, base: Any = None) -> Any:
    """Build dataclass `cls` from plain data, checking every key and type. The keys
    `raw` leaves out keep their value in `base` (a section's default where its
    parent declares it), else the class default."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; known: {sorted(names)}")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    kwargs = {k: coerce(hints[k], v, f"{where}.{k}".lstrip("."), defaults[k])
              for k, v in raw.items()}
    return cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)


def coerce(hint: Any, value: Any, where: str, default: Any = None) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where, default if dataclasses.is_dataclass(default) else None)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(inner, value, where)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                hint is int and not float(value).is_integer()):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value
