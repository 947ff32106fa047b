"""The closed loop without ROS: Policy -> ControlCore (scheduler + safety filter) -> simulated world.

Timeline of one episode (tick period dt, action period P, P a multiple of dt): at every tick the
core's command for the window (t - dt, t] is executed by the world; at every action boundary the
camera renders the world as it is at t, the policy is called on that frame, and its chunk is
scheduled from t (zero inference latency on sim time).

With a `SplitLink` the policy and control halves of a split deployment are apart: each chunk is
numbered (ChunkSender) and sent at t through a FaultyLink (latency, jitter, loss, duplication,
reordering); the control half (ControlHalf) receives it at its delivery time on sim time, as the
control node's subscription does between two timer ticks, so the latency is not rounded to ticks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vla_ros.control.core import ControlCore
from vla_ros.control.netem import FaultyLink, LinkFaults
from vla_ros.control.split import ChunkEnvelope, ChunkSender, ControlHalf
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
    chunks_accepted: int = 0  # chunks the control core took on
    chunks_rejected: int = 0  # chunks it rejected (reasons in `split`, or the core's counters)
    split: SplitStats | None = None  # the link's figures when the episode ran split


@dataclass(frozen=True)
class SplitLink:
    """The link between the policy and control halves for `SimHarness.run_episode`: its faults, a seed
    (combined with each episode's scene seed, so every episode's faults are fixed) and where the control
    half's image watchdog is fed from (True: the rendered frames, as today; False: the chunk stamps)."""

    faults: LinkFaults = LinkFaults()
    seed: int = 0
    watch_cameras: bool = True

    def for_episode(self, episode_seed: int) -> FaultyLink[ChunkEnvelope]:
        """The link of the episode with scene seed `episode_seed` (the same seeds, the same faults)."""
        state = np.random.SeedSequence([int(self.seed) & 0xFFFFFFFF, int(episode_seed) & 0xFFFFFFFF])
        return FaultyLink(self.faults, seed=int(state.generate_state(1)[0]))


@dataclass
class SplitStats:
    """What happened to one episode's chunks between the two halves."""

    sent: int = 0  # chunks the policy half sent
    lost_on_link: int = 0  # dropped by the link
    duplicated_on_link: int = 0  # sent twice by the link
    reordered_on_link: int = 0  # held back by the link
    delivered: int = 0  # arrivals at the control half (duplicates included)
    duplicates: int = 0  # arrivals dropped by the control half as duplicates
    in_flight: int = 0  # still on the link when the episode ended
    rejected_by_reason: dict[str, int] = field(default_factory=dict)  # old, stale, late, future, ...
    mean_delay_s: float | None = None  # mean (arrival - observation stamp) of the accepted chunks
    max_delay_s: float | None = None
    link_lost: int = 0  # sequence numbers the control half never saw (its own count)
    clock_problem: str = ""  # the control half's clock verdict at the end ('' = consistent)


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
                    on_action: ActionHook | None = None, settle_actions: int = 0,
                    link: SplitLink | None = None) -> EpisodeResult:
        """Run `task` from the current scene until success or `max_actions` policy calls.

        With `settle_actions` > 0 the episode goes on for that many policy calls after the first
        success (data collection: what to do once there); `success` reports the first success.
        With `link` the chunks reach the core over a split deployment's link (module docstring); a
        policy error then leaves the control half as it is (it only sees no chunk), as on two computers.
        """
        core = ControlCore(self.limits, self.tick_period_s, self.action_period_s,
                           initial_gripper=self.world.state.gripper_opening)
        core.set_armed(True)
        dt = self.tick_period_s
        core.on_instruction(task.instruction, 0.0)
        instruction = Instruction(task.instruction, 0.0)
        result = EpisodeResult(seed, task.kind, task.instruction, self.world.state.objects[task.target].name,
                               False, 0, 0.0, 0, 0.0)
        split = _SplitRun(core, self.action_period_s, link, seed) if link is not None else None
        tick = 0
        stop_after: int | None = None  # policy calls after which a successful episode ends
        while True:
            now = tick * dt
            if tick > 0:
                if split is not None:
                    split.deliver(now)
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
                if split is None or split.half.watch_cameras:
                    core.on_image(now)
                started = time.perf_counter()
                try:
                    chunk = policy.predict(observation, instruction)
                except Exception as exc:  # as vla_node: a failing policy is a FAULT (HOLD), not a crash
                    chunk = None
                    result.policy_errors += 1
                    result.last_error = f"{type(exc).__name__}: {exc}"
                    if split is None:
                        core.set_fault(result.last_error)
                result.policy_s += time.perf_counter() - started
                result.actions += 1
                if chunk is not None:
                    if split is None:
                        core.set_fault(None)
                    if on_action is not None:
                        on_action(observation, instruction, task, chunk)
                    if split is None:
                        result.chunks_accepted += int(core.on_chunk(chunk, now))
                    else:
                        split.send(chunk, now)
            tick += 1
        result.sim_time_s = tick * dt
        counters = core.counters
        if split is None:
            result.chunks_rejected = counters["rejected_chunks"]
        else:
            split.finish(result, counters)
        return result


class _SplitRun:
    """One episode's policy half -> link -> control half, on sim time."""

    def __init__(self, core: ControlCore, action_period_s: float, link: SplitLink, seed: int) -> None:
        self.link = link.for_episode(seed)
        self.sender = ChunkSender(action_period_s)
        self.half = ControlHalf(core, action_period_s, link.watch_cameras)
        self.accepted = 0
        self.delays: list[float] = []

    def send(self, chunk: ActionChunk, now: float) -> None:
        """The policy half publishes `chunk` at `now`; what the link delivers at once arrives at once."""
        self.link.send(self.sender.envelope(chunk), now)
        self.deliver(now)

    def deliver(self, now: float) -> None:
        """Hand the control half every envelope due by `now`, each at its own delivery time."""
        link, half = self.link, self.half
        while (when := link.next_delivery) is not None and when <= now:
            for envelope in link.due(when):
                if half.on_chunk(envelope, when) == "accepted":
                    self.accepted += 1
                    self.delays.append(when - float(envelope.chunk.stamp))

    def finish(self, result: EpisodeResult, counters: dict[str, int]) -> None:
        """Fill `result`'s chunk figures and its SplitStats."""
        link, report = self.link, self.half.report()
        stats = SplitStats(delivered=report.received, duplicates=report.duplicates)
        stats.sent, stats.lost_on_link = link.sent, link.lost
        stats.duplicated_on_link, stats.reordered_on_link = link.duplicated, link.reordered
        stats.in_flight = len(link.due(float("inf")))
        prefix = "rejected_chunks_"
        stats.rejected_by_reason = {key[len(prefix):]: count for key, count in counters.items()
                                    if key.startswith(prefix) and count}
        if self.delays:
            stats.mean_delay_s, stats.max_delay_s = float(np.mean(self.delays)), float(max(self.delays))
        stats.link_lost, stats.clock_problem = report.lost, report.clock_problem
        result.chunks_accepted, result.chunks_rejected = self.accepted, counters["rejected_chunks"]
        result.split = stats


def episode_plan(episodes: int, seed: int, kinds: Sequence[str]) -> list[tuple[int, str]]:
    """(scene seed, task kind) of each episode: seeds seed, seed+1, ...; kinds taken in turn."""
    return [(seed + i, kinds[i % len(kinds)]) for i in range(episodes)]
