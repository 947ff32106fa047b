"""The node's cameras from its topic settings: the primary (topics.camera) first, then topics.extra_cameras
in the checkpoint's camera order, each with its own transport, QoS reliability and image age limit; and
the check of cameras and proprio source against what the policy takes (refused at configure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vla_ros.core.config import TopicsConfig
from vla_ros.core.proprio import ProprioSpec
from vla_ros.core.schema import ConfigError
from vla_ros.core.types import PolicyInputs

TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("auto", "reliable", "best_effort")


@dataclass(frozen=True)
class CameraSettings:
    """One camera: its topic (also its name in status and HOLD reasons) and how it is received."""

    topic: str
    transport: str  # raw: sensor_msgs/Image; compressed: CompressedImage
    reliability: str  # auto, reliable or best_effort
    max_age_s: float  # HOLD when its newest frame is older than this [s]


def camera_settings(topics: TopicsConfig, max_image_age_s: float) -> tuple[CameraSettings, ...]:
    """Every camera of `topics`, primary first; ConfigError for a wrong list length or value. An empty
    per-camera list means the primary's setting for every extra camera (max age: `max_image_age_s`)."""
    n = len(topics.extra_cameras)
    primary = CameraSettings(topics.camera, topics.camera_transport, topics.camera_reliability,
                             float(max_image_age_s))
    columns = zip(_strings("topics.extra_cameras", topics.extra_cameras, None, n),
                  _strings("topics.extra_camera_transports", topics.extra_camera_transports, TRANSPORTS, n),
                  _strings("topics.extra_camera_reliabilities", topics.extra_camera_reliabilities,
                           RELIABILITIES, n),
                  _per_camera("topics.extra_camera_max_age_s", topics.extra_camera_max_age_s, n))
    cameras = (primary, *(CameraSettings(topic, transport or primary.transport,
                                         reliability or primary.reliability,
                                         primary.max_age_s if age is None else float(age))
                          for topic, transport, reliability, age in columns))
    names = [c.topic for c in cameras]
    if any(not t for t in names) or len(set(names)) != len(names):
        raise ConfigError(f"camera topics {names} (topics.camera, then topics.extra_cameras) must be "
                          "non-empty and distinct")
    return cameras


def inputs_problem(inputs: PolicyInputs, cameras: Sequence[CameraSettings],
                   proprio: ProprioSpec) -> str | None:
    """Why the node's cameras or proprio source do not fit what the policy takes, or None."""
    if inputs.cameras != len(cameras):
        return (f"the policy takes {inputs.cameras} camera image(s), the node has {len(cameras)} "
                f"({', '.join(c.topic for c in cameras)}): set topics.extra_cameras to the cameras after "
                "topics.camera, in the policy's camera order")
    if inputs.proprio_dim != proprio.dim:
        return (f"the policy takes a proprio vector of {inputs.proprio_dim} value(s), policy.proprio_source "
                f"{proprio.source!r} gives {proprio.dim} (pose_gripper: 8; joint_states: one per "
                "policy.proprio_joints; none: 0)")
    return None


def _per_camera(name: str, values: Sequence[Any], n: int) -> list[Any]:
    """`values` when it has one entry per extra camera, [None] * n when empty; ConfigError otherwise."""
    values = list(values)
    if not values:
        return [None] * n
    if len(values) != n:
        raise ConfigError(f"parameter '{name}' has {len(values)} value(s) for {n} extra camera(s) "
                          "(topics.extra_cameras): give one per extra camera, in the same order, or none")
    return values


def _strings(name: str, values: Sequence[Any], choices: tuple[str, ...] | None, n: int) -> list[str | None]:
    """Per-camera strings (None where the list is empty), each one of `choices` when given."""
    checked = _per_camera(name, values, n)
    for value in checked:
        if value is None:
            continue
        if not isinstance(value, str) or (choices is not None and value not in choices):
            allowed = f"one of {list(choices)}" if choices is not None else "a topic name"
            raise ConfigError(f"parameter '{name}' = {list(values)}: every entry must be {allowed}")
    return checked
