"""`vla-ros eval-demo`: success rate of a policy in the tabletop simulator, closed loop, without ROS.

`vla-ros eval-demo --episodes N [--checkpoint DIR] [--seed S] [--policy model|expert]` runs the
same ControlCore as vla_node on sim time (vla_ros.sim.harness) and prints the success rate per task
kind. `--latency-ms N --jitter-ms N --loss P ...` put the policy behind a split deployment's link;
`--compare-split` runs the same seeds single-process and split (vla_ros.sim.split_eval).
`--backend onnxruntime|tensorrt --engine-dir DIR` runs exported (e.g. quantized) graphs or engines of the
checkpoint; the backend refuses a directory exported from another checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence

from vla_ros.control.profiles import load_profile
from vla_ros.core.config import NodeConfig, load_config
from vla_ros.core.files import write_json
from vla_ros.core.schema import ConfigError
from vla_ros.core.types import Policy
from vla_ros.runtime.factory import make_policy
from vla_ros.runtime.graph_dir import read_manifest
from vla_ros.sim.expert_policy import ExpertPolicy, NoisyExpertPolicy
from vla_ros.sim.harness import DEFAULT_MAX_ACTIONS, EpisodeResult, SimHarness, SplitLink, episode_plan
from vla_ros.sim.split_eval import (
    add_link_arguments,
    chunk_totals,
    describe_link,
    format_chunks,
    format_comparison,
    link_from_args,
    rate_difference_points,
)
from vla_ros.sim.summary import summarize
from vla_ros.sim.tasks import TASK_KINDS
from vla_ros.sim.world import TabletopWorld


def evaluate(policy_factory: Callable[[TabletopWorld], Policy], episodes: int, seed: int = 0,
             kinds: Sequence[str] = TASK_KINDS, harness: SimHarness | None = None,
             max_actions: int = DEFAULT_MAX_ACTIONS,
             progress: Callable[[int, EpisodeResult], None] | None = None,
             link: SplitLink | None = None) -> list[EpisodeResult]:
    """Run the episodes of `episode_plan` (behind `link` when given) and return their results."""
    harness = harness or SimHarness()
    policy = policy_factory(harness.world)
    results = []
    for i, (scene_seed, kind) in enumerate(episode_plan(episodes, seed, kinds)):
        task = harness.reset(scene_seed, kind)
        result = harness.run_episode(policy, task, scene_seed, max_actions, link=link)
        results.append(result)
        if progress is not None:
            progress(i, result)
    return results


def results_table(results: Sequence[EpisodeResult]) -> dict[str, dict[str, float]]:
    """Per task kind, then 'all': episodes, successes, success rate, mean actions (as printed and saved)."""
    if not results:
        return {}
    summary = summarize([r.kind for r in results], [r.success for r in results],
                        {"mean_actions": [r.actions for r in results]})
    return {**summary["by_kind"], "all": summary["all"]}


def format_table(table: dict[str, dict[str, float]]) -> str:
    """`results_table` as aligned text."""
    lines = [f"{'task':<6} {'episodes':>8} {'success':>8} {'rate':>7} {'actions':>8}"]
    for kind, row in table.items():
        lines.append(f"{kind:<6} {int(row['episodes']):>8} {int(row['successes']):>8} "
                     f"{100 * row['success_rate']:>6.1f}% {row['mean_actions']:>8.1f}")
    return "\n".join(lines)


def load_model_policy(checkpoint: str = "", backend: str = "", config: NodeConfig | None = None,
                      engine_dir: str = "") -> Policy:
    """The VLA Policy through the node's own factory (empty checkpoint: the embedded demo model).

    `config`'s policy section (dtype, unnorm_key, gripper options, ...) applies; `checkpoint`,
    `backend` and `engine_dir` (exported graphs or engines; policy.dtype becomes theirs), when given,
    override it.
    """
    policy_cfg = dataclasses.replace((config or NodeConfig()).policy, **{
        k: v for k, v in (("checkpoint", checkpoint), ("backend", backend), ("engine_dir", engine_dir)) if v})
    if engine_dir:
        if policy_cfg.backend == "torch":
            raise ValueError("--engine-dir holds exported graphs: choose --backend onnxruntime or tensorrt")
        dtype = read_manifest(engine_dir).get("dtype")
        if isinstance(dtype, str) and dtype != policy_cfg.dtype:
            policy_cfg = dataclasses.replace(policy_cfg, dtype=dtype)
    return make_policy(policy_cfg)


def load_node_config(config_path: str = "", robot_profile: str = "") -> NodeConfig:
    """The node's configuration (file + robot profile), as vla_node would read it."""
    overrides = load_profile(robot_profile) if robot_profile else {}
    return load_config(config_path or None, overrides=overrides)


def harness_for(node_cfg: NodeConfig, config_path: str, robot_profile: str) -> SimHarness:
    """The simulator's own timing and limits, unless a config file or robot profile gives the node's."""
    if not (config_path or robot_profile):
        return SimHarness()
    return SimHarness(node_cfg.safety, node_cfg.control.control_rate_hz, node_cfg.control.action_period_s)


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
    parser.add_argument("--engine-dir", default="",
                        help="exported graphs (vla-ros export, e.g. --quantize int4) or TensorRT engines of "
                             "the checkpoint, for --backend onnxruntime or tensorrt (sets policy.engine_dir)")
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
    add_link_arguments(parser)
    return parser


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, or None."""
    kinds = [k.strip() for k in args.tasks.split(",") if k.strip()]
    bad = [k for k in kinds if k not in TASK_KINDS]
    if bad or not kinds:
        return f"unknown task kind(s) {bad}; choose from {list(TASK_KINDS)}"
    if args.episodes < 1 or args.max_actions < 1:
        return "--episodes and --max-actions must be at least 1"
    if not (0.0 <= args.noise_m <= 0.1 and 0.0 <= args.bias_m <= 0.1):
        return "--noise-m and --bias-m must be in 0..0.1 m"
    return None


def policy_factory(args: argparse.Namespace, node_cfg: NodeConfig) -> Callable[[TabletopWorld], Policy]:
    """The policy of --policy on a harness's world (the model is loaded once, here)."""
    if args.policy == "expert":
        return ExpertPolicy
    if args.policy == "noisy-expert":
        return lambda world: NoisyExpertPolicy(world, args.noise_m, args.bias_m, args.seed)
    model_policy = load_model_policy(args.checkpoint, args.backend, node_cfg, args.engine_dir)
    return lambda world: model_policy


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"eval-demo: {problem}", file=sys.stderr)
        return 2
    kinds = [k.strip() for k in args.tasks.split(",") if k.strip()]
    try:
        link = link_from_args(args)
        node_cfg = load_node_config(args.config, args.robot_profile)
        harness = harness_for(node_cfg, args.config, args.robot_profile)
        factory = policy_factory(args, node_cfg)
    except (ConfigError, OSError, ValueError, KeyError, RuntimeError, ImportError) as exc:
        print(f"eval-demo: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"eval-demo: {factory(harness.world).describe()}, {args.episodes} episodes from seed "
              f"{args.seed}, control {1 / harness.tick_period_s:g} Hz, action period "
              f"{harness.action_period_s:g} s", flush=True)
        if link is not None:
            print(f"eval-demo: {describe_link(link)}" + (" (compared with single-process on the same seeds)"
                                                          if args.compare_split else ""), flush=True)
    plan = [("single", None), ("split", link)] if args.compare_split else [("", link)]
    runs = {}
    for label, run_link in plan:
        runs[label] = run(args, factory, harness, kinds, run_link, label)
    if args.compare_split:
        single, split = runs["single"], runs["split"]
        print(format_comparison(single["summary"], split["summary"], single["chunks"], split["chunks"]))
        difference = rate_difference_points(single["summary"], split["summary"])
        print(f"split - single: {difference:+.1f} points overall; wall {single['wall_s']:.1f} s + "
              f"{split['wall_s']:.1f} s, policy {single['policy_ms_per_call']:.1f} ms per call")
        payload = {"args": vars(args), "link": dataclasses.asdict(link) if link else None,
                   "single": single, "split": split, "success_rate_difference_points": difference}
    else:
        only = runs[""]
        print(format_table(only["summary"]))
        if link is not None:
            print(f"chunks: {format_chunks(only['chunks'])}")
        print(f"wall {only['wall_s']:.1f} s, policy {only['policy_ms_per_call']:.1f} ms per call")
        payload = {**only, "args": vars(args)}
        if link is not None:
            payload["link"] = dataclasses.asdict(link)
    if args.json:
        write_json(args.json, payload)
    return 0


def run(args: argparse.Namespace, factory: Callable[[TabletopWorld], Policy], harness: SimHarness,
        kinds: Sequence[str], link: SplitLink | None, label: str) -> dict:
    """One evaluation with progress lines (prefixed by `label`); its summary, episodes and timings."""
    prefix = f"{label:<6} " if label else ""

    def progress(i: int, r: EpisodeResult) -> None:
        if not args.quiet:
            mark = "ok  " if r.success else "FAIL"
            errors = f"  {r.policy_errors} policy errors: {r.last_error[:80]}" if r.policy_errors else ""
            print(f"{prefix}[{i + 1:>3}/{args.episodes}] {mark} seed {r.seed:<5} {r.kind:<4} {r.actions:>3} "
                  f"actions  {r.instruction!r}{errors}", flush=True)

    started = time.perf_counter()
    results = evaluate(factory, args.episodes, args.seed, kinds, harness, args.max_actions, progress, link)
    policy_s = sum(r.policy_s for r in results)
    calls = max(1, sum(r.actions for r in results))
    return {"summary": results_table(results), "episodes": [dataclasses.asdict(r) for r in results],
            "chunks": chunk_totals(results), "policy_ms_per_call": 1e3 * policy_s / calls,
            "wall_s": time.perf_counter() - started}
