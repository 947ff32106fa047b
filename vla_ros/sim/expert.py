"""Scripted expert: a reactive rule from the world state to one 7-DoF action per action period.

Actions are in robot units: translation deltas [m] over one action period, per axis a multiple of
a small quantum and clipped to a maximum (so the labels take few distinct values, which a small
model learns quickly), rotation deltas [rad] (always zero: the objects need no yaw alignment) and
an absolute gripper (1 open, 0 closed). The rule depends only on what the camera shows (gripper
pose and opening, object poses, what is held), so a policy that imitates it from images can in
principle reproduce it, including its recoveries (re-open and retry after a missed grasp, put down
a wrong object).

It is built to be imitated by a policy that sees positions only to about a centimetre: each action
corrects a share (`gain`) of the remaining error, so per-frame errors average out instead of
making the gripper jump; the fingertips aim just above the table, which stops any overshoot; and the
fingers close inside a radius that a centimetre of error still keeps within the grasp tolerance.
`vla_ros.sim.expert_policy.NoisyExpertPolicy` measures that robustness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vla_ros.sim.tasks import Task, move_goal
from vla_ros.sim.world import WorldState


@dataclass
class ExpertGains:
    """Gains and heights of the scripted expert."""

    max_axis_step_m: float = 0.028  # largest translation per axis and action period (0.14 m/s at 0.2 s)
    quantum_m: float = 0.004  # translations are multiples of this: few distinct labels, easy to learn
    gain: float = 0.5  # share of the remaining error corrected per action (averages perception noise)
    grasp_height_m: float = 0.008  # fingertips aim this high above the object's bottom to grasp
    close_height_m: float = 0.024  # the fingers close only with the fingertips below this ...
    close_radius_m: float = 0.015  # ... and this near the object's centre horizontally
    retry_clearance_m: float = 0.02  # after a missed grasp: rise this far above the object, re-open
    lift_height_m: float = 0.13  # where a grasped target is carried to
    funnel_radius_m: float = 0.05  # horizontal distance over which the descent from hover happens
    open_before_descent: float = 0.8  # fingers less open than this: do not descend (re-open first)
    closed_empty: float = 0.3  # fingers closed past this (narrower than any object): the grasp missed


def expert_action(state: WorldState, task: Task, gains: ExpertGains | None = None) -> np.ndarray:
    """The expert's action [7] for `task` in `state`."""
    cfg = gains or ExpertGains()
    g = state.gripper_position
    goal, gripper = _goal_and_gripper(state, task, cfg)
    error = goal - g
    step = np.where(np.abs(error) > cfg.max_axis_step_m / cfg.gain, error, cfg.gain * error)
    delta = np.clip(np.round(step / cfg.quantum_m) * cfg.quantum_m, -cfg.max_axis_step_m, cfg.max_axis_step_m)
    return np.array([*delta, 0.0, 0.0, 0.0, gripper], dtype=np.float64)


def _goal_and_gripper(state: WorldState, task: Task, cfg: ExpertGains) -> tuple[np.ndarray, float]:
    """Where the fingertips should go next and the gripper command."""
    g = state.gripper_position
    hover = move_goal(state, task.target)
    if task.kind == "move":
        if state.held >= 0:  # drop whatever is held first
            return g.copy(), 1.0
        return hover, 1.0

    obj = state.objects[task.target]
    if state.held == task.target:  # carry it up
        return np.array([g[0], g[1], max(cfg.lift_height_m, g[2])]), 0.0
    if state.held >= 0:  # wrong object: open and back off upwards
        return np.array([g[0], g[1], g[2] + cfg.max_axis_step_m]), 1.0

    distance = math.hypot(*(obj.position[:2] - g[:2]))
    low = g[2] <= obj.position[2] + cfg.close_height_m
    if state.gripper_opening < cfg.open_before_descent:
        if low and state.gripper_opening > cfg.closed_empty:  # closing: finish it, holding still
            return g.copy(), 0.0
        # closed on nothing (or closing up high): re-open, rise a little, re-centre
        retry_z = float(obj.position[2] + obj.size + cfg.retry_clearance_m)
        return np.array([obj.position[0], obj.position[1], max(g[2], retry_z)]), 1.0
    grasp_z = float(obj.position[2] + cfg.grasp_height_m)
    if distance <= cfg.close_radius_m and low:
        return g.copy(), 0.0  # close, holding still
    # Funnel: the closer horizontally, the lower.
    blend = min(1.0, max(0.0, (distance - cfg.close_radius_m) / cfg.funnel_radius_m))
    z = grasp_z + blend * (hover[2] - grasp_z)
    return np.array([obj.position[0], obj.position[1], z]), 1.0
