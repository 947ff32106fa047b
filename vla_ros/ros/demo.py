"""`vla-ros demo` (`make demo`): the closed loop over real ROS topics with the tabletop simulator.

vla_sim (camera, end-effector pose, command execution) and vla_node (policy -> scheduler -> safety
filter -> commands, armed through ~/arm) run as ROS 2 nodes over Fast DDS on this machine. For each
episode the simulator is reset to a new seeded scene, an instruction about one of its objects is
published (pick-up and move-to in turn, random target and phrasing), and the episode ends at
`sim/success` or the time limit with an empty instruction (HOLD).
Outputs, under --out (default build/demo):

    bag/           mcap rosbag: camera, instruction, commands, status, pose, sim/success, sim/task
    commands.png   the 7-DoF commands of one episode (the first successful one)
    summary.json   per-episode results, success rate, bag topic counts, settings

    vla-ros demo [--episodes 5] [--seed 0] [--policy model|expert] [--checkpoint DIR] [--no-bag]
    vla-ros demo --attach ...   drive vla_sim and vla_node already running (launch/demo.launch.py)

Exit status: 0 when the demo ran (whatever the success rate), 2 for bad arguments or a missing
model, 1 when the graph fails (a node does not start, a service does not answer, the bag fails),
130 when interrupted. This module checks the arguments and the configuration without loading ROS;
the run is vla_ros.ros.demo_run, its outputs vla_ros.ros.demo_outputs, the pure parts vla_ros.sim.demo.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from vla_ros.core.config import NodeConfig, load_config
from vla_ros.core.schema import ConfigError, parse_assignments
from vla_ros.model.spec import CheckpointError
from vla_ros.runtime.factory import resolve_checkpoint
from vla_ros.sim.demo import TASK_CHOICES, default_config_path

DEFAULT_OUT = Path("build") / "demo"
READY_TIMEOUT_S = 120.0  # model loading on a busy 2-core machine included


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-ros demo", description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:4]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=5, help="number of episodes (default 5)")
    p.add_argument("--seed", type=int, default=0,
                   help="simulator seed: episode i (1, 2, ...) gets scene seed+i (default 0)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output directory (default {DEFAULT_OUT})")
    p.add_argument("--policy", choices=("model", "expert"), default="model",
                   help="model: the VLA (default); expert: the scripted expert inside vla_node (checks the "
                        "loop itself)")
    p.add_argument("--checkpoint", default="", help="checkpoint directory; empty = the embedded demo model")
    p.add_argument("--config", default="", help="vla_node parameters (default config/demo.yaml)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override one vla_node parameter, e.g. safety.max_linear_velocity_mps=0.1")
    p.add_argument("--task", choices=TASK_CHOICES, default="alternate",
                   help="task kind of the episodes: alternate (pick, move, pick, ...; default), any (the "
                        "simulator's random choice), pick or move")
    p.add_argument("--max-seconds-per-episode", type=float, default=10.0,
                   help="time limit of an episode [s] (default 10)")
    p.add_argument("--settle-seconds", type=float, default=0.5,
                   help="HOLD time after each episode before the next reset [s] (default 0.5)")
    p.add_argument("--camera-rate-hz", type=float, default=10.0, help="simulator camera rate (default 10)")
    p.add_argument("--no-bag", action="store_true", help="do not record a rosbag (the plot comes from the "
                                                         "commands the driver received)")
    p.add_argument("--inference-process", action="store_true",
                   help="run the model in a child process (the control loop never waits for its GIL)")
    p.add_argument("--attach", action="store_true",
                   help="drive vla_sim and vla_node that are already running (launch/demo.launch.py)")
    p.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S,
                   help="seconds to wait for the graph, model loading included "
                        f"(default {READY_TIMEOUT_S:g})")
    p.add_argument("--verbose", action="store_true", help="show the nodes' ROS log output (INFO)")
    return p


def check_args(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, or None."""
    if not 1 <= args.episodes <= 10_000:
        return "--episodes must be between 1 and 10000"
    if not (0 <= args.seed < 2**31):
        return "--seed must be in [0, 2^31)"
    for name in ("max_seconds_per_episode", "ready_timeout"):
        value = getattr(args, name)
        if not (np.isfinite(value) and 0 < value <= 3600):
            return f"--{name.replace('_', '-')} must be in (0, 3600] seconds"
    if not (np.isfinite(args.settle_seconds) and 0 <= args.settle_seconds <= 60):
        return "--settle-seconds must be in [0, 60]"
    if not (np.isfinite(args.camera_rate_hz) and 1.0 <= args.camera_rate_hz <= 100.0):
        return "--camera-rate-hz must be in [1, 100]"
    if args.attach and (args.policy == "expert" or args.checkpoint):
        return "--attach drives nodes already running: --policy expert and --checkpoint do not apply"
    return None


def load_demo_config(args: argparse.Namespace) -> NodeConfig:
    """config/demo.yaml (or --config) with --param and --checkpoint applied, validated."""
    overrides = parse_assignments(args.param)
    if args.checkpoint:
        overrides["policy.checkpoint"] = args.checkpoint
    cfg = load_config(args.config or default_config_path(), overrides)
    if not cfg.topics.pose:
        raise ConfigError("the demo needs 'topics.pose' (the simulator's end-effector pose topic)")
    if cfg.topics.output_mode != "end_effector":
        raise ConfigError("the demo needs 'topics.output_mode' = 'end_effector' (what vla_sim executes)")
    return cfg


def prepare_ros_environment(attach: bool) -> None:
    """Keep DDS traffic on this machine; pick a domain unless the user chose one (before rclpy loads).

    With --attach the user's graph settings (domain, discovery range) are left as they are.
    """
    if attach:
        return
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_LOCALHOST_ONLY"] = "1"  # older distributions (Humble) read this one
    if not os.environ.get("ROS_DOMAIN_ID"):
        os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)  # 1..100: clear of the default 0
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vla-ros demo`."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    problem = check_args(args)
    if problem:
        print(f"vla-ros demo: {problem}", file=sys.stderr)
        return 2
    try:
        cfg = load_demo_config(args)
        if args.policy == "model" and not args.attach:
            try:
                resolve_checkpoint(cfg.policy.checkpoint)
            except CheckpointError as exc:
                raise ConfigError(str(exc)) from exc
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
    except (ConfigError, OSError) as exc:
        print(f"vla-ros demo: {exc}", file=sys.stderr)
        return 2
    prepare_ros_environment(args.attach)
    try:
        from vla_ros.ros.demo_run import run_demo  # lazy: loads rclpy, after the DDS environment is set
    except ImportError as exc:
        print(f"vla-ros demo: needs ROS 2 (rclpy) and the vla_ros messages ({exc}); run `make setup`, or "
              "source a ROS 2 install where vla_ros is built", file=sys.stderr)
        return 2
    return run_demo(args, cfg, out)


if __name__ == "__main__":
    sys.exit(main())
