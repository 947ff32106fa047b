"""Validated configuration dataclasses: one schema for ROS parameters, YAML files and the CLI.

A field's metadata may carry `help` (text, with units), `range` (lo, hi) and `choices`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of its allowed range."""


def param(default: Any, help: str, range: tuple[float, float] | None = None,
          choices: tuple[Any, ...] | None = None) -> Any:
    """A dataclass field with documentation and limits."""
    meta = {"help": help, "range": range, "choices": choices}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=default: list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def iter_fields(obj: Any, prefix: str = ""):
    """Yield (dotted name, value, field) for every leaf field of a nested config dataclass."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from iter_fields(value, name + ".")
        else:
            yield name, value, f


def check_value(name: str, value: Any, f: dataclasses.Field) -> None:
    """Raise ConfigError naming the parameter and its allowed values when `value` is invalid."""
    meta = f.metadata
    lo_hi, choices = meta.get("range"), meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"parameter '{name}' = {value!r}: must be one of {list(choices)}")
    values = value if isinstance(value, list) else [value]
    if lo_hi is not None:
        lo, hi = lo_hi
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not lo <= v <= hi:
                raise ConfigError(f"parameter '{name}' = {value!r}: must be a number in "
                                  f"[{lo}, {hi}]")


def validate(cfg: Any) -> Any:
    """Check every leaf of `cfg` against its metadata; return cfg for chaining."""
    for name, value, f in iter_fields(cfg):
        check_value(name, value, f)
    post = getattr(cfg, "check", None)
    if callable(post):
        post()
    return cfg


def _coerce(name: str, current: Any, value: Any) -> Any:
    """Convert `value` to the type of the field's current value (int -> float allowed)."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"parameter '{name}' = {value!r}: must be true or false")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"parameter '{name}' = {value!r}: must be a number")
        try:
            return float(value)
        except OverflowError:  # an integer too large for a float
            raise ConfigError(f"parameter '{name}' = {value!r}: number too large") from None
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"parameter '{name}' = {value!r}: must be an integer")
        return value
    if isinstance(current, str):
        if not isinstance(value, str):
            raise ConfigError(f"parameter '{name}' = {value!r}: must be a string")
        return value
    if isinstance(current, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"parameter '{name}' = {value!r}: must be a list")
        return [_coerce(name, current[0], v) if current else v for v in value]
    return value


def apply_overrides(cfg: Any, values: dict[str, Any]) -> Any:
    """Return a copy of `cfg` with dotted-name overrides applied and validated."""
    known = {name: (value, f) for name, value, f in iter_fields(cfg)}
    updates: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known:
            close = [k for k in known if k.split(".")[-1] == name.split(".")[-1]]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown parameter '{name}'{hint}")
        updates[name] = _coerce(name, known[name][0], value)
    return validate(_replace_dotted(cfg, updates))


def _replace_dotted(cfg: Any, updates: dict[str, Any]) -> Any:
    direct = {k: v for k, v in updates.items() if "." not in k}
    nested: dict[str, dict[str, Any]] = {}
    for k, v in updates.items():
        if "." in k:
            head, rest = k.split(".", 1)
            nested.setdefault(head, {})[rest] = v
    for head, sub in nested.items():
        direct[head] = _replace_dotted(getattr(cfg, head), sub)
    return dataclasses.replace(cfg, **direct)


def flatten_yaml(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested YAML mappings into dotted names (as ROS 2 parameter files do)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_yaml(value, name + "."))
        else:
            flat[name] = value
    return flat


def parse_assignment(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` with a YAML-typed value (`50` -> 50, `true` -> True, `[0, 1]` -> list)."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"--param {text!r}: expected NAME=VALUE, e.g. safety.max_translation_step_m=0.01")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return name.strip(), value


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """Repeated `--param NAME=VALUE` items as a dict of overrides (the last one wins)."""
    return dict(parse_assignment(item) for item in items)


def argument_flag(name: str) -> str:
    """The command-line flag of a config field: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def argument_help(default: Any, f: dataclasses.Field) -> str:
    """A field's help text with its default and allowed range, escaped for argparse."""
    meta = f.metadata
    text = meta.get("help", "")
    if not isinstance(default, bool):
        text += f" (default {default}"
        if meta.get("range") is not None:
            lo, hi = meta["range"]
            text += f", range [{lo}, {hi}]"
        text += ")"
    return text.replace("%", "%%")


def add_arguments(parser: Any, cls: type, exclude: tuple[str, ...] = ()) -> None:
    """One flag per field of the flat config dataclass `cls` on `parser` (an ArgumentParser or one of
    its argument groups), typed, with its default, choices and help.

    A bool field that defaults to false becomes a switch (`--resume`); one that defaults to true gets
    `--name` / `--no-name`. Fields in `exclude` get no flag.
    """
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = getattr(defaults, f.name)
        flag, text = argument_flag(f.name), argument_help(default, f)
        if isinstance(default, bool):
            action = argparse.BooleanOptionalAction if default else "store_true"
            parser.add_argument(flag, action=action, default=default, help=text)
        elif isinstance(default, (int, float, str)):
            parser.add_argument(flag, type=type(default), default=default, choices=f.metadata.get("choices"),
                                help=text)
        else:
            raise TypeError(f"field {cls.__name__}.{f.name}: no command-line flag for "
                            f"{type(default).__name__}")


def from_arguments(cls: type, namespace: argparse.Namespace) -> Any:
    """The validated `cls` of parsed arguments (fields without a flag keep their defaults).

    Raises ConfigError naming the flag of an invalid value.
    """
    fields = [f for f in dataclasses.fields(cls) if hasattr(namespace, f.name)]
    for f in fields:
        check_value(argument_flag(f.name), getattr(namespace, f.name), f)
    return validate(cls(**{f.name: getattr(namespace, f.name) for f in fields}))
