"""Safety limits: the numbers the safety filter enforces, with units in the names."""

from __future__ import annotations

from dataclasses import dataclass

from vla_ros.core.schema import ConfigError, param


@dataclass
class SafetyLimits:
    """Limits on every published command. Defaults are conservative (ISO 10218 reduced speed)."""

    max_translation_step_m: float = param(
        0.025, "largest translation of one control tick [m]; the vector is scaled, direction kept",
        range=(0.0, 0.5))
    max_rotation_step_rad: float = param(
        0.1, "largest rotation of one control tick [rad]; the vector is scaled", range=(0.0, 1.0))
    max_linear_velocity_mps: float = param(
        0.25, "largest end-effector speed [m/s] (ISO 10218 reduced speed: 0.25)", range=(0.0, 3.0))
    max_angular_velocity_radps: float = param(
        0.8, "largest end-effector angular speed [rad/s]", range=(0.0, 2.5))
    max_linear_acceleration_mps2: float = param(
        1.0, "largest change of linear velocity per second [m/s^2]", range=(0.0, 9.0))
    max_angular_acceleration_radps2: float = param(
        4.0, "largest change of angular velocity per second [rad/s^2]", range=(0.0, 17.0))
    workspace_min_m: list = param(
        [-0.8, -0.8, 0.0], "workspace box lower corner x, y, z [m] in the command frame",
        range=(-10.0, 10.0))
    workspace_max_m: list = param(
        [0.8, 0.8, 1.0], "workspace box upper corner x, y, z [m] in the command frame",
        range=(-10.0, 10.0))
    require_pose: bool = param(
        False, "HOLD unless a fresh end-effector pose is known (needed to enforce the workspace)")
    max_pose_age_s: float = param(0.5, "pose older than this counts as unknown [s]",
                                  range=(0.001, 60.0))
    gripper_min: float = param(0.0, "smallest gripper command (0 = closed)", range=(0.0, 1.0))
    gripper_max: float = param(1.0, "largest gripper command (1 = open)", range=(0.0, 1.0))
    max_gripper_speed_per_s: float = param(
        2.0, "largest gripper change per second [1/s] (2.0: full stroke in 0.5 s)",
        range=(0.0, 1000.0))
    max_image_age_s: float = param(0.5, "HOLD when the newest image is older than this [s]",
                                   range=(0.001, 60.0))
    max_action_age_s: float = param(
        1.0, "HOLD when the action's source image is older than this [s]", range=(0.001, 60.0))

    def check(self) -> None:
        """Cross-field checks that ranges alone cannot express."""
        if len(self.workspace_min_m) != 3 or len(self.workspace_max_m) != 3:
            raise ConfigError("parameters 'safety.workspace_min_m' and 'safety.workspace_max_m' "
                              "must have 3 values (x, y, z)")
        if any(lo >= hi for lo, hi in zip(self.workspace_min_m, self.workspace_max_m)):
            raise ConfigError("parameter 'safety.workspace_min_m' must be below "
                              "'safety.workspace_max_m' on every axis")
        if self.gripper_min > self.gripper_max:
            raise ConfigError("parameter 'safety.gripper_min' must not exceed 'safety.gripper_max'")
