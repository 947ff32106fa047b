"""The robot's proprio vector in a checkpoint's layout, from joint states or pose + gripper (no ROS).

Sources (parameter policy.proprio_source):
- `joint_states`: the positions of policy.proprio_joints, picked by name, in that order (ALOHA: 14).
- `pose_gripper`: LIBERO's 8 values: end-effector position (3), axis-angle of its orientation (3),
  the two finger positions of policy.proprio_gripper_joints (2).
Quaternions are (x, y, z, w), as in ROS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vla_ros.core.schema import ConfigError
from vla_ros.core.types import Pose

SOURCES = ("none", "joint_states", "pose_gripper")
POSE_GRIPPER_DIM = 8  # LIBERO: position 3 + axis-angle 3 + two finger positions
SMALL_ROTATION = 1e-12  # |sin(angle / 2)| below this: the rotation vector is 2 * (x, y, z), to first order


class ProprioError(ValueError):
    """A joint state or pose cannot give the proprio vector; the message says why."""


def axis_angle_from_quat(q: np.ndarray) -> np.ndarray:
    """Axis * angle [rad] of a unit quaternion, angle in [0, pi]: q and -q give the same vector (w < 0 is
    flipped), the identity gives zeros, and rotations near it stay exact (atan2, no acos of ~1)."""
    q = np.asarray(q, dtype=np.float64)
    if q[3] < 0:
        q = -q
    s = float(np.linalg.norm(q[:3]))
    if s < SMALL_ROTATION:
        return 2.0 * q[:3]
    return q[:3] / s * (2.0 * math.atan2(s, q[3]))


def robosuite_axis_angle(q: np.ndarray) -> np.ndarray:
    """Axis * angle as LIBERO's data was made (robosuite's quat2axisangle): angle = 2 acos(w) in [0, 2 pi],
    the quaternion's sign NOT normalized (w < 0 gives angles above pi), zeros for the exact identity."""
    q = np.asarray(q, dtype=np.float64)
    s = float(np.linalg.norm(q[:3]))
    if s == 0.0:
        return np.zeros(3)
    return q[:3] / s * (2.0 * math.atan2(s, q[3]))  # = 2 acos(w) for a unit q, exact near the identity


def pose_gripper_proprio(position: Sequence[float], orientation: Sequence[float],
                         fingers: Sequence[float]) -> np.ndarray:
    """LIBERO's 8-D proprio: position (3), robosuite axis-angle of the (normalized) quaternion (3), fingers
    (2). The quaternion's sign is kept as the pose source gives it, as in LIBERO's training data."""
    p = _finite(position, 3, "end-effector position")
    q = _finite(orientation, 4, "end-effector orientation")
    f = _finite(fingers, 2, "gripper finger positions")
    norm = float(np.linalg.norm(q))
    if norm < 1e-6:
        raise ProprioError("end-effector orientation is a zero quaternion")
    return np.concatenate([p, robosuite_axis_angle(q / norm), f])


def pick_joint_positions(names: Sequence[str], positions: Sequence[float],
                         wanted: Sequence[str]) -> np.ndarray:
    """The positions of the `wanted` joints, in that order, from a JointState's name and position lists."""
    names = list(names)
    if len(positions) != len(names):
        raise ProprioError(f"joint state has {len(names)} names but {len(positions)} positions")
    index = {name: i for i, name in reversed(list(enumerate(names)))}  # the first of a repeated name
    missing = [name for name in wanted if name not in index]
    if missing:
        raise ProprioError(f"joint state lacks joint(s) {', '.join(map(repr, missing))} "
                           f"(it has {', '.join(map(repr, names[:20])) or 'none'})")
    return _finite([positions[index[name]] for name in wanted], len(wanted), "joint positions")


@dataclass(frozen=True)
class ProprioSpec:
    """Where the proprio vector comes from: `source` (SOURCES) and the joints read from JointState, in
    order (joint_states: every proprio joint; pose_gripper: the two fingers; none: no joint)."""

    source: str = "none"
    joints: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        """The length of the proprio vector (0 = none)."""
        if self.source == "pose_gripper":
            return POSE_GRIPPER_DIM
        return len(self.joints) if self.source == "joint_states" else 0


def proprio_spec(source: str, joints: Sequence[str], gripper_joints: Sequence[str],
                 pose_topic: str) -> ProprioSpec:
    """The ProprioSpec of policy.proprio_source and its joint lists; ConfigError for an unusable setting."""
    if source not in SOURCES:
        raise ConfigError(f"parameter 'policy.proprio_source' = {source!r}: must be one of {list(SOURCES)}")
    if source == "joint_states":
        return ProprioSpec(source, _joint_names("policy.proprio_joints", joints, None))
    if source == "pose_gripper":
        if not pose_topic:
            raise ConfigError("parameter 'policy.proprio_source' = 'pose_gripper' needs 'topics.pose' set "
                              "(the end-effector pose)")
        return ProprioSpec(source, _joint_names("policy.proprio_gripper_joints", gripper_joints, 2))
    return ProprioSpec()


def _joint_names(name: str, joints: Sequence[str], count: int | None) -> tuple[str, ...]:
    joints = tuple(joints)
    if not joints or (count is not None and len(joints) != count):
        want = f"{count} joint names" if count is not None else "at least one joint name"
        raise ConfigError(f"parameter '{name}' = {list(joints)}: must hold {want}")
    if any(not j for j in joints) or len(set(joints)) != len(joints):
        raise ConfigError(f"parameter '{name}' = {list(joints)}: names must be non-empty and distinct")
    return joints


def _finite(values: Sequence[float], n: int, what: str) -> np.ndarray:
    try:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ProprioError(f"{what} is not numeric: {exc}") from None
    if v.shape != (n,):
        raise ProprioError(f"{what} needs {n} values, got {v.size}")
    if not np.all(np.isfinite(v)):
        raise ProprioError(f"{what} contains NaN or Inf")
    return v


def current_proprio(spec: ProprioSpec, joints: tuple[np.ndarray, float] | None, pose: Pose | None, now: float,
                    max_age_s: float) -> np.ndarray | None:
    """The proprio vector at `now` from the latest (joint positions of spec.joints, receipt time) and pose;
    None for source none; ProprioError when an input is missing or older than `max_age_s`."""
    if spec.source == "none":
        return None
    if joints is None or now - joints[1] > max_age_s:
        raise ProprioError(f"no joint state with {', '.join(spec.joints)} on topics.joint_states in the last "
                           f"{max_age_s:g} s (safety.max_pose_age_s)")
    if spec.source == "joint_states":
        return joints[0]
    if pose is None or now - pose.stamp > max_age_s:
        raise ProprioError(f"no end-effector pose on topics.pose in the last {max_age_s:g} s "
                           "(safety.max_pose_age_s)")
    return pose_gripper_proprio(pose.position, pose.orientation, joints[0])
