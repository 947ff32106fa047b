"""Robot safety profiles: config/robots/<name>.yaml, flat `safety.<field>: value` lines.

A profile is plain, flat YAML (`name: value  # comment`, numbers, true/false, [x, y, z] lists).
control/ must not depend on PyYAML, so this module reads that subset itself and refuses anything
else with the file and line. Values are validated through the configuration schema, so a name
that is not a SafetyLimits field or a value outside its range is refused with a message naming
the parameter and its allowed range.

    overrides = load_profile("franka_fr3")         # {"safety.max_linear_velocity_mps": 0.25, ...}
    cfg = load_config("config/vla.yaml", overrides=overrides)   # or:
    limits = profile_limits("franka_fr3")          # SafetyLimits with the profile applied
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from vla_ros.core.config import PolicyConfig
from vla_ros.core.files import share_candidates
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.schema import ConfigError, apply_overrides

PREFIX = "safety."
PROFILE_DIR_ENV = "VLA_ROS_PROFILE_DIR"  # extra directory searched first for profile names


# Besides safety.*, a profile may map the model's units to the robot's: scale and gripper convention.
POLICY_KEYS = ("policy.action_scale", "policy.gripper_invert", "policy.gripper_binarize")


@dataclasses.dataclass
class _ProfileRoot:
    """The sections a profile may set, so its names validate exactly as in NodeConfig."""

    safety: SafetyLimits = dataclasses.field(default_factory=SafetyLimits)
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)

    def check(self) -> None:
        self.safety.check()
        self.policy.check()


def profile_dirs() -> list[Path]:
    """Where profile names are looked up, in order: $VLA_ROS_PROFILE_DIR, then the shipped config/robots."""
    extra = os.environ.get(PROFILE_DIR_ENV)
    return ([Path(extra)] if extra else []) + share_candidates("config", "robots")


def available_profiles() -> list[str]:
    """Names of the profiles found in `profile_dirs()`."""
    names = set()
    for directory in profile_dirs():
        if directory.is_dir():
            names.update(p.stem for p in directory.glob("*.yaml"))
    return sorted(names)


def resolve_profile(name_or_path: str | os.PathLike[str]) -> Path:
    """The file of a profile given by name (e.g. 'franka_fr3') or by path."""
    text = os.fspath(name_or_path)
    path = Path(text)
    looks_like_path = os.sep in text or "/" in text or text.endswith((".yaml", ".yml"))
    if looks_like_path:
        if path.is_file():
            return path
        raise ConfigError(f"robot profile file {text!r} not found")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", text):
        raise ConfigError(f"robot profile name {text!r} must be letters, digits, '_' or '-'")
    for directory in profile_dirs():
        candidate = directory / f"{text}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(available_profiles()) or "none found"
    raise ConfigError(f"unknown robot profile {text!r} (available: {known})")


def load_profile(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The profile's validated overrides, keyed `safety.<field>` (ready for load_config's overrides)."""
    path = resolve_profile(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read robot profile {path}: {exc}") from exc
    values = parse_flat_yaml(text, str(path))
    overrides: dict[str, Any] = {}
    for key, value in values.items():
        if "." in key and not key.startswith(PREFIX) and key not in POLICY_KEYS:
            raise ConfigError(f"robot profile {path}: only safety.* parameters and {', '.join(POLICY_KEYS)}, "
                              f"got '{key}'")
        name = key if "." in key else PREFIX + key
        if name in overrides:
            raise ConfigError(f"{path}: parameter '{name}' given twice")
        overrides[name] = value
    try:
        apply_overrides(_ProfileRoot(), overrides)  # names, types, ranges, cross-field checks
    except ConfigError as exc:
        raise ConfigError(f"robot profile {path}: {exc}") from exc
    return overrides


def profile_limits(name_or_path: str | os.PathLike[str], base: SafetyLimits | None = None) -> SafetyLimits:
    """`base` (default: the defaults) with the profile applied."""
    root = _ProfileRoot(base if base is not None else SafetyLimits())
    return apply_overrides(root, load_profile(name_or_path)).safety


# ----- the flat YAML subset --------------------------------------------------------------------
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_INT = re.compile(r"[-+]?\d+")


def parse_flat_yaml(text: str, source: str = "<profile>") -> dict[str, Any]:
    """Parse `key: value` lines (comments, blank lines, numbers, booleans, strings, [a, b] lists)."""
    values: dict[str, Any] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() == "---":
            continue
        where = f"{source}:{number}"
        if line[0] in " \t":
            raise ConfigError(f"{where}: profiles are flat 'name: value' lines, no indentation")
        key, sep, rest = line.partition(":")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ConfigError(f"{where}: expected 'name: value', got {raw.strip()!r}")
        if key in values:
            raise ConfigError(f"{where}: parameter '{key}' given twice")
        values[key] = _scalar_or_list(rest.strip(), where)
    return values


def _strip_comment(line: str) -> str:
    """Drop a '#' comment that starts the line or follows whitespace, outside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _scalar_or_list(text: str, where: str) -> Any:
    if text.startswith("["):
        if not text.endswith("]"):
            raise ConfigError(f"{where}: unterminated list {text!r}")
        inner = text[1:-1].strip()
        return [_scalar(item.strip(), where) for item in inner.split(",")] if inner else []
    if not text:
        raise ConfigError(f"{where}: missing value (profiles are flat 'name: value' lines, no nesting)")
    return _scalar(text, where)


def _scalar(text: str, where: str) -> Any:
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if any(ch in text for ch in "[]{}:,&*!|>%@`"):
        raise ConfigError(f"{where}: value {text!r} is outside the flat YAML profiles use")
    return text
