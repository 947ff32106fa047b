"""Scripted expert: a reactive rule from the world state to one 7-DoF action per action period.

Actions are in robot units: translation deltas [m] over one action period, per axis a multiple of
a small quantum and clipped to a maximum (so the labels take few distinct values, which a small
model learns quickly), rotation deltas [rad] (always zero: the objects need no yaw alignment) and
an absolute gripper (1 open, 0 closed). The
rule depends only on what the camera shows (gripper pose and opening, object poses, what is held),
so a policy that imitates it from images can in principle reproduce it, including its recoveries
(re-open and retry after a missed grasp, put down a wrong object).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vla_ros.sim.tasks import Task, move_goal
from vla_ros.sim.world import WorldState


@dataclass
class ExpertConfig:
    """Gains and heights of the scripted expert."""

    max_axis_step_m: float = 0.028  # largest translation per axis and action period (0.14 m/s at 0.2 s)
    quantum_m: float = 0.004  # translations are multiples of this: few distinct labels, easy to learn
    grasp_height_frac: float = 0.35  # fingertips at this fraction of the object's height to grasp
    lift_height_m: float = 0.13  # where a grasped target is carried to
    funnel_radius_m: float = 0.05  # horizontal distance at which the descent from hover starts
    align_tolerance_m: float = 0.009  # horizontal error below which the fingers close
    height_tolerance_m: float = 0.008  # vertical error above grasp height below which they close
    open_before_descent: float = 0.8  # do not go below hover height with the fingers less open


def expert_action(state: WorldState, task: Task, config: ExpertConfig | None = None) -> np.ndarray:
    """The expert's action [7] for `task` in `state`."""
    cfg = config or ExpertConfig()
    g = state.gripper_position
    goal, gripper = _goal_and_gripper(state, task, cfg)
    delta = np.clip(np.round((goal - g) / cfg.quantum_m) * cfg.quantum_m, -cfg.max_axis_step_m,
                    cfg.max_axis_step_m)
    return np.array([*delta, 0.0, 0.0, 0.0, gripper], dtype=np.float64)


def _goal_and_gripper(state: WorldState, task: Task, cfg: ExpertConfig) -> tuple[np.ndarray, float]:
    """Where the fingertips should go next and the gripper command."""
    g = state.gripper_position
    hover = move_goal(state, task.target)
    if task.kind == "move":
        if state.held >= 0:  # drop whatever is held first
            return np.array([g[0], g[1], g[2]]), 1.0
        return hover, 1.0

    obj = state.objects[task.target]
    if state.held == task.target:  # carry it up
        return np.array([g[0], g[1], max(cfg.lift_height_m, g[2])]), 0.0
    if state.held >= 0:  # wrong object: open and back off upwards
        return np.array([g[0], g[1], g[2] + cfg.max_axis_step_m]), 1.0

    grasp_z = float(obj.position[2] + cfg.grasp_height_frac * obj.size)
    distance = math.hypot(*(obj.position[:2] - g[:2]))
    at_grasp_pose = distance <= cfg.align_tolerance_m and g[2] <= grasp_z + cfg.height_tolerance_m
    if at_grasp_pose:
        if state.gripper_opening > 0.3:  # closing (or about to): hold still, keep centred
            return np.array([obj.position[0], obj.position[1], grasp_z]), 0.0
        return hover, 1.0  # closed on nothing: re-open and rise, then try again

    # Funnel: the closer horizontally, the lower; only descend below hover with open fingers.
    blend = min(1.0, max(0.0, (distance - cfg.align_tolerance_m) / cfg.funnel_radius_m))
    z = grasp_z + blend * (hover[2] - grasp_z)
    if state.gripper_opening < cfg.open_before_descent:
        z = max(z, min(g[2], hover[2]))
    return np.array([obj.position[0], obj.position[1], z]), 1.0
