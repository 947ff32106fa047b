"""Closed-loop evaluation without ROS: Policy -> ControlCore (scheduler + safety filter) -> simulator.

`vla-ros eval-demo --episodes N [--checkpoint DIR] [--seed S] [--policy model|expert]` runs the
same ControlCore as vla_node on sim time and prints the success rate per task kind.

Timeline of one episode (tick period dt, action period P, P a multiple of dt): at every tick the
core's command for the window (t - dt, t] is executed by the world; at every action boundary the
camera renders the world as it is at t, the policy is called on that frame, and its chunk is
scheduled from t (zero inference latency on sim time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vla_ros.control.core import ControlCore
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.schema import ConfigError
from vla_ros.core.types import ActionChunk, Instruction, Observation, Policy
from vla_ros.sim.expert import ExpertGains, expert_action
from vla_ros.sim.render import CameraSpec, Renderer
from vla_ros.sim.tasks import TASK_KINDS, Task, is_success, parse_instruction, sample_task
from vla_ros.sim.world import TabletopWorld, WorldSpec, WorldState

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


class ExpertPolicy:
    """The scripted expert as a Policy: it reads the instruction and the simulator's true state."""

    def __init__(self, world: TabletopWorld, config: ExpertGains | None = None) -> None:
        self.world = world
        self.config = config or ExpertGains()

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        task = parse_instruction(instruction.text, self.world.state)
        if task is None:  # nothing it understands: stay put, keep the gripper
            action = np.array([0, 0, 0, 0, 0, 0, self.world.state.gripper_opening], np.float64)
        else:
            action = expert_action(self.seen_state(observation), task, self.config)
        return ActionChunk(action[None, :], observation.stamp, instruction.text)

    def seen_state(self, observation: Observation) -> WorldState:
        """The state the rule acts on: here the simulator's true one."""
        return self.world.state

    def describe(self) -> str:
        return "scripted expert (simulator state)"


class NoisyExpertPolicy(ExpertPolicy):
    """The expert acting on positions seen with errors, as a policy that imitates it from images would.

    Each call, the gripper's and every object's position get fresh Gaussian noise (`noise_m` per axis)
    plus a bias drawn once per episode (`bias_m`, each object its own); the true state is never changed.
    A new episode is detected from the sim's clock going back to zero.
    """

    def __init__(self, world: TabletopWorld, noise_m: float = 0.01, bias_m: float = 0.0, seed: int = 0,
                 config: ExpertGains | None = None) -> None:
        super().__init__(world, config)
        self.noise_m, self.bias_m = noise_m, bias_m
        self.rng = np.random.default_rng(seed)
        self.bias = np.zeros((0, 3))
        self.last_stamp = float("inf")

    def seen_state(self, observation: Observation) -> WorldState:
        """A copy of the true state with the positions off by this call's noise and the episode's bias."""
        truth = self.world.state
        if observation.stamp <= self.last_stamp or len(self.bias) != len(truth.objects) + 1:
            self.bias = self.rng.normal(0.0, self.bias_m, (len(truth.objects) + 1, 3))
        self.last_stamp = observation.stamp
        seen = truth.copy()
        seen.gripper_position = truth.gripper_position + self.bias[-1] + self.rng.normal(0.0, self.noise_m, 3)
        for i, (obj, bias) in enumerate(zip(seen.objects, self.bias)):
            if i != seen.held:  # a held object moves with the gripper
                obj.position = obj.position + np.append(bias[:2] + self.rng.normal(0.0, self.noise_m, 2), 0.0)
        return seen

    def describe(self) -> str:
        return (f"scripted expert seeing positions with {100 * self.noise_m:g} cm noise and "
                f"{100 * self.bias_m:g} cm bias")


ActionHook = Callable[[Observation, Instruction, Task, ActionChunk], None]


class SimHarness:
    """A world, a camera and a ControlCore factory with the node's timing and safety limits."""

    def __init__(self, limits: SafetyLimits | None = None, control_rate_hz: float = 10.0,
                 action_period_s: float = 0.2, world_config: WorldSpec | None = None,
                 camera_config: CameraSpec | None = None) -> None:
        self.limits = limits or sim_limits()
        self.tick_period_s = 1.0 / control_rate_hz
        self.action_period_s = action_period_s
        ratio = action_period_s / self.tick_period_s
        if ratio < 1.0 - 1e-9 or abs(ratio - round(ratio)) > 1e-6:
            raise ConfigError(f"the action period ({action_period_s} s) must be a whole number of control "
                              f"ticks ({self.tick_period_s} s) for the simulator")
        self.ticks_per_action = int(round(ratio))
        self.world = TabletopWorld(world_config)
        self.renderer = Renderer(camera_config)

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
                if not result.success and is_success(task, self.world.state, self.world.config):
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


def evaluate(policy_factory: Callable[[TabletopWorld], Policy], episodes: int, seed: int = 0,
             kinds: Sequence[str] = TASK_KINDS, harness: SimHarness | None = None,
             max_actions: int = DEFAULT_MAX_ACTIONS,
             progress: Callable[[int, EpisodeResult], None] | None = None) -> list[EpisodeResult]:
    """Run the episodes of `episode_plan` and return their results."""
    harness = harness or SimHarness()
    policy = policy_factory(harness.world)
    results = []
    for i, (scene_seed, kind) in enumerate(episode_plan(episodes, seed, kinds)):
        task = harness.reset(scene_seed, kind)
        result = harness.run_episode(policy, task, scene_seed, max_actions)
        results.append(result)
        if progress is not None:
            progress(i, result)
    return results


def _nearest_object(state, xy: np.ndarray) -> int:
    distances = [float(np.hypot(*(o.position[:2] - xy))) for o in state.objects]
    return int(np.argmin(distances))


def instruction_following(policy_factory: Callable[[TabletopWorld], Policy], seeds: Sequence[int],
                          harness: SimHarness | None = None, max_actions: int = DEFAULT_MAX_ACTIONS
                          ) -> list[dict]:
    """Same scene, two different named targets: which object does the policy pick each time?

    Per seed: {"seed", "targets": [a, b], "picked": [held object (or the one under the gripper)
    after each episode], "followed": picked == targets}.
    """
    from vla_ros.sim.tasks import make_instruction

    harness = harness or SimHarness()
    policy = policy_factory(harness.world)
    out = []
    for seed in seeds:
        state = harness.world.reset(seed, n_objects=3)
        targets = [0, 1 + seed % 2]
        picked = []
        for target in targets:
            harness.world.reset(seed, n_objects=3)
            name = state.objects[target].name
            task = Task("pick", target, make_instruction("pick", name, phrasing=seed))
            harness.run_episode(policy, task, seed, max_actions)
            final = harness.world.state
            under = _nearest_object(final, final.gripper_position[:2])
            picked.append(final.held if final.held >= 0 else under)
        out.append({"seed": seed, "targets": targets, "picked": picked, "followed": picked == targets})
    return out


def image_following(policy_factory: Callable[[TabletopWorld], Policy], seeds: Sequence[int],
                    harness: SimHarness | None = None, max_actions: int = 15) -> list[dict]:
    """Same instruction, the target object moved: does the gripper go to the new place?

    Per seed, a "move to" episode on the scene, then on the same scene with the target moved to a
    free spot far from where it was; {"seed", "distance_to_new", "distance_to_old",
    "followed": the gripper ends nearer the new place than the old one}.
    """
    from vla_ros.sim.tasks import make_instruction

    harness = harness or SimHarness()
    policy = policy_factory(harness.world)
    out = []
    for seed in seeds:
        state = harness.world.reset(seed, n_objects=3)
        target = seed % 3
        old_xy = state.objects[target].position[:2].copy()
        new_xy = _free_spot(state, target, harness.world.config)
        task = Task("move", target, make_instruction("move", state.objects[target].name, phrasing=seed))
        moved = harness.world.reset(seed, n_objects=3)
        moved.objects[target].position[:2] = new_xy
        harness.run_episode(policy, task, seed, max_actions)
        end = harness.world.state.gripper_position[:2]
        to_new, to_old = float(np.hypot(*(end - new_xy))), float(np.hypot(*(end - old_xy)))
        out.append({"seed": seed, "old_xy": old_xy.tolist(), "new_xy": new_xy.tolist(),
                    "distance_to_new": to_new, "distance_to_old": to_old, "followed": to_new < to_old})
    return out


def _free_spot(state, target: int, config: WorldSpec) -> np.ndarray:
    """The spawn-box point farthest from the target's place that keeps clear of the other objects."""
    xs = np.linspace(config.spawn_min_xy[0], config.spawn_max_xy[0], 9)
    ys = np.linspace(config.spawn_min_xy[1], config.spawn_max_xy[1], 9)
    old = state.objects[target].position[:2]
    others = [o.position[:2] for i, o in enumerate(state.objects) if i != target]
    best, best_score = old, -1.0
    for x in xs:
        for y in ys:
            p = np.array([x, y])
            if all(np.hypot(*(p - q)) >= config.min_object_separation_m for q in others):
                score = float(np.hypot(*(p - old)))
                if score > best_score:
                    best, best_score = p, score
    return best


def summarize(results: Sequence[EpisodeResult]) -> dict[str, dict[str, float]]:
    """Per task kind (and 'all'): episodes, successes, success rate, mean actions."""
    table: dict[str, dict[str, float]] = {}
    groups = {kind: [r for r in results if r.kind == kind] for kind in sorted({r.kind for r in results})}
    groups["all"] = list(results)
    for kind, group in groups.items():
        if not group:
            continue
        wins = sum(r.success for r in group)
        table[kind] = {"episodes": len(group), "successes": wins, "success_rate": wins / len(group),
                       "mean_actions": float(np.mean([r.actions for r in group]))}
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    lines = [f"{'task':<6} {'episodes':>8} {'success':>8} {'rate':>7} {'actions':>8}"]
    for kind, row in table.items():
        lines.append(f"{kind:<6} {int(row['episodes']):>8} {int(row['successes']):>8} "
                     f"{100 * row['success_rate']:>6.1f}% {row['mean_actions']:>8.1f}")
    return "\n".join(lines)


def load_model_policy(checkpoint: str = "", backend: str = "", config=None) -> Policy:
    """The VLA Policy through the node's own factory (empty checkpoint: the embedded demo model).

    `config` is a NodeConfig whose policy section (dtype, unnorm_key, gripper options, ...) applies;
    `checkpoint` and `backend`, when given, override it.
    """
    import dataclasses

    from vla_ros.core.config import NodeConfig
    from vla_ros.runtime.factory import make_policy

    policy_cfg = (config or NodeConfig()).policy
    changes = {k: v for k, v in (("checkpoint", checkpoint), ("backend", backend)) if v}
    return make_policy(dataclasses.replace(policy_cfg, **changes))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vla-ros eval-demo",
        description="Success rate of a policy in the tabletop simulator, closed loop through the same "
                    "scheduler and safety filter as vla_node, on sim time, without ROS.")
    parser.add_argument("--episodes", type=int, default=50, help="number of episodes (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="first scene seed (default 0)")
    parser.add_argument("--policy", choices=("model", "expert", "noisy-expert"), default="model",
                        help="model: the VLA checkpoint; expert: the scripted expert (tests the harness); "
                             "noisy-expert: the expert seeing positions with errors (how imitable it is)")
    parser.add_argument("--noise-m", type=float, default=0.01,
                        help="noisy-expert: per-call position noise per axis [m] (default 0.01)")
    parser.add_argument("--bias-m", type=float, default=0.0,
                        help="noisy-expert: per-episode position bias per axis [m] (default 0)")
    parser.add_argument("--checkpoint", default="", help="checkpoint directory; empty = embedded demo model")
    parser.add_argument("--backend", default="", choices=("", "torch", "onnxruntime", "tensorrt"),
                        help="inference backend (default: the config's, torch)")
    parser.add_argument("--tasks", default=",".join(TASK_KINDS),
                        help=f"comma-separated task kinds, taken in turn (default {','.join(TASK_KINDS)})")
    parser.add_argument("--max-actions", type=int, default=DEFAULT_MAX_ACTIONS,
                        help=f"policy calls per episode before it fails (default {DEFAULT_MAX_ACTIONS})")
    parser.add_argument("--config", default="",
                        help="node config YAML (control rates, safety limits); default: the simulator's, "
                             "as in config/demo.yaml and the demonstrations")
    parser.add_argument("--robot-profile", default="", help="robot safety profile name or file")
    parser.add_argument("--json", default="", help="write the per-episode results and summary here")
    parser.add_argument("--quiet", action="store_true", help="only the summary table")
    return parser


def load_node_config(config_path: str = "", robot_profile: str = ""):
    """The node's configuration (file + robot profile), as vla_node would read it."""
    from vla_ros.control.profiles import load_profile
    from vla_ros.core.config import load_config

    overrides = load_profile(robot_profile) if robot_profile else {}
    return load_config(config_path or None, overrides=overrides)


def harness_for(node_cfg, config_path: str, robot_profile: str) -> SimHarness:
    """The simulator's own timing and limits, unless a config file or robot profile gives the node's."""
    if not (config_path or robot_profile):
        return SimHarness()
    return SimHarness(node_cfg.safety, node_cfg.control.control_rate_hz, node_cfg.control.action_period_s)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    kinds = [k.strip() for k in args.tasks.split(",") if k.strip()]
    bad = [k for k in kinds if k not in TASK_KINDS]
    if bad or not kinds:
        print(f"eval-demo: unknown task kind(s) {bad}; choose from {list(TASK_KINDS)}", file=sys.stderr)
        return 2
    if args.episodes < 1 or args.max_actions < 1:
        print("eval-demo: --episodes and --max-actions must be at least 1", file=sys.stderr)
        return 2
    if not (0.0 <= args.noise_m <= 0.1 and 0.0 <= args.bias_m <= 0.1):
        print("eval-demo: --noise-m and --bias-m must be in 0..0.1 m", file=sys.stderr)
        return 2
    try:
        node_cfg = load_node_config(args.config, args.robot_profile)
        harness = harness_for(node_cfg, args.config, args.robot_profile)
        if args.policy == "expert":
            def factory(world: TabletopWorld) -> Policy:
                return ExpertPolicy(world)
        elif args.policy == "noisy-expert":
            def factory(world: TabletopWorld) -> Policy:
                return NoisyExpertPolicy(world, args.noise_m, args.bias_m, args.seed)
        else:
            model_policy = load_model_policy(args.checkpoint, args.backend, node_cfg)

            def factory(world: TabletopWorld) -> Policy:
                return model_policy
    except (ConfigError, OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        print(f"eval-demo: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"eval-demo: {factory(harness.world).describe()}, {args.episodes} episodes from seed "
              f"{args.seed}, control {1 / harness.tick_period_s:g} Hz, action period "
              f"{harness.action_period_s:g} s", flush=True)

    def progress(i: int, r: EpisodeResult) -> None:
        if not args.quiet:
            mark = "ok  " if r.success else "FAIL"
            errors = f"  {r.policy_errors} policy errors: {r.last_error[:80]}" if r.policy_errors else ""
            print(f"[{i + 1:>3}/{args.episodes}] {mark} seed {r.seed:<5} {r.kind:<4} {r.actions:>3} actions  "
                  f"{r.instruction!r}{errors}", flush=True)

    started = time.perf_counter()
    results = evaluate(factory, args.episodes, args.seed, kinds, harness, args.max_actions, progress)
    table = summarize(results)
    print(format_table(table))
    policy_s = sum(r.policy_s for r in results)
    calls = max(1, sum(r.actions for r in results))
    print(f"wall {time.perf_counter() - started:.1f} s, policy {1e3 * policy_s / calls:.1f} ms per call")
    if args.json:
        payload = {"summary": table, "episodes": [asdict(r) for r in results],
                   "args": vars(args), "policy_ms_per_call": 1e3 * policy_s / calls}
        Path(args.json).write_text(json.dumps(payload, indent=1, default=_json_default))
    return 0


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
