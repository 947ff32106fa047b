"""The closed loop without ROS: Policy -> ControlCore (scheduler + safety filter) -> simulated world.

Timeline of one episode (tick period dt, action period P, P a multiple of dt): at every tick the
core's command for the window (t - dt, t] is executed by the world; at every action boundary the
camera renders the world as it is at t, the policy is called on that frame, and its chunk is
scheduled from t (zero inference latency on sim time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vla_ros.control.core import ControlCore
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.schema import ConfigError
from vla_ros.core.types import ActionChunk, Instruction, Observation, Policy
from vla_ros.sim.render import CameraSpec, Renderer
from vla_ros.sim.tasks import Task, is_success, sample_task
from vla_ros.sim.world import TabletopWorld, WorldSpec

DEFAULT_MAX_ACTIONS = 40  # policy calls per episode before it counts as a failure (8 s at 0.2 s)
# The simulated gripper closes as fast as the WidowX 250's (config/robots/widowx_250.yaml): a whole
# close within one 0.2 s action, so the camera never shows fingers half-way closed on an object, a
# frame that looks the same whether the object is held yet or not.
SIM_GRIPPER_SPEED_PER_S = 5.0


def sim_limits() -> SafetyLimits:
    """The safety limits of the demonstrations and eval-demo (config/demo.yaml has the same)."""
    return SafetyLimits(max_gripper_speed_per_s=SIM_GRIPPER_SPEED_PER_S)


@dataclass
class EpisodeResult:
    """Outcome of one closed-loop episode."""

    seed: int
    kind: str
    instruction: str
    target: str
    success: bool
    actions: int  # policy calls made
    sim_time_s: float
    interventions: int  # ticks on which the safety filter changed the command
    policy_s: float  # wall time spent in the policy
    policy_errors: int = 0  # calls that raised (the core holds in FAULT until the next good one)
    last_error: str = ""
    commands: list[list[float]] = field(default_factory=list, repr=False)  # [ticks][7] when recorded


ActionHook = Callable[[Observation, Instruction, Task, ActionChunk], None]


class SimHarness:
    """A world, a camera and a ControlCore factory with the node's timing and safety limits."""

    def __init__(self, limits: SafetyLimits | None = None, control_rate_hz: float = 10.0,
                 action_period_s: float = 0.2, world_spec: WorldSpec | None = None,
                 camera_spec: CameraSpec | None = None) -> None:
        self.limits = limits or sim_limits()
        self.tick_period_s = 1.0 / control_rate_hz
        self.action_period_s = action_period_s
        ratio = action_period_s / self.tick_period_s
        if ratio < 1.0 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
            raise ConfigError(f"the action period ({action_period_s} s) must be a whole number of control "
                              f"ticks ({self.tick_period_s} s) for the simulator")
        self.ticks_per_action = int(round(ratio))
        self.world = TabletopWorld(world_spec)
        self.renderer = Renderer(camera_spec)

    def reset(self, seed: int, kind: str | None = None) -> Task:
        """A new scene from `seed` and a task on it (kind random unless given)."""
        self.world.reset(seed)
        return sample_task(self.world.state, np.random.default_rng([seed, 7]), kind)

    def run_episode(self, policy: Policy, task: Task, seed: int = 0,
                    max_actions: int = DEFAULT_MAX_ACTIONS, record_commands: bool = False,
                    on_action: ActionHook | None = None, settle_actions: int = 0) -> EpisodeResult:
        """Run `task` from the current scene until success or `max_actions` policy calls.

        With `settle_actions` > 0 the episode goes on for that many policy calls after the first
        success (data collection: what to do once there); `success` reports the first success.
        """
        core = ControlCore(self.limits, self.tick_period_s, self.action_period_s,
                           initial_gripper=self.world.state.gripper_opening)
        core.set_armed(True)
        dt = self.tick_period_s
        core.on_instruction(task.instruction, 0.0)
        instruction = Instruction(task.instruction, 0.0)
        result = EpisodeResult(seed, task.kind, task.instruction, self.world.state.objects[task.target].name,
                               False, 0, 0.0, 0, 0.0)
        tick = 0
        stop_after: int | None = None  # policy calls after which a successful episode ends
        while True:
            now = tick * dt
            if tick > 0:
                core.on_pose(self.world.pose(now - dt))
                command = core.tick(now)
                self.world.step(command.translation, command.rotation, command.gripper, dt)
                result.interventions += int(command.interventions != 0)
                if record_commands:
                    result.commands.append([*command.translation, *command.rotation, command.gripper])
                if not result.success and is_success(task, self.world.state, self.world.spec):
                    result.success = True
                    stop_after = result.actions + settle_actions
                if stop_after is not None and result.actions >= stop_after:
                    break
            if tick % self.ticks_per_action == 0:
                if result.actions >= max_actions:
                    break
                observation = Observation(self.renderer.render(self.world.state), now, self.world.pose(now))
                core.on_image(now)
                started = time.perf_counter()
                try:
                    chunk = policy.predict(observation, instruction)
                except Exception as exc:  # as vla_node: a failing policy is a FAULT (HOLD), not a crash
                    chunk = None
                    result.policy_errors += 1
                    result.last_error = f"{type(exc).__name__}: {exc}"
                    core.set_fault(result.last_error)
                result.policy_s += time.perf_counter() - started
                result.actions += 1
                if chunk is not None:
                    core.set_fault(None)
                    if on_action is not None:
                        on_action(observation, instruction, task, chunk)
                    core.on_chunk(chunk, now)
            tick += 1
        result.sim_time_s = tick * dt
        return result


def episode_plan(episodes: int, seed: int, kinds: Sequence[str]) -> list[tuple[int, str]]:
    """(scene seed, task kind) of each episode: seeds seed, seed+1, ...; kinds taken in turn."""
    return [(seed + i, kinds[i % len(kinds)]) for i in range(episodes)]
