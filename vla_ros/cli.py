"""`vla-ros <verb>`: one command line for everything; each verb lives in its own module."""

from __future__ import annotations

import importlib
import os
import sys

# verb -> (module, one-line help). Each module has `main(argv: list[str]) -> int`.
VERBS: dict[str, tuple[str, str]] = {
    "node": ("vla_ros.ros.node_main", "run vla_node without ros2 launch (--config FILE)"),
    "bench-control": ("vla_ros.ros.bench_control", "control-loop timing over real DDS"),
    "demo": ("vla_ros.sim.demo", "closed-loop demo: simulator + vla_node over ROS topics"),
    "sim": ("vla_ros.ros.sim_node", "tabletop simulator node (camera, pose, commands, reset)"),
    "eval-demo": ("vla_ros.sim.evaluate", "success rate of the policy in the simulator, no ROS"),
    "train-demo": ("vla_ros.sim.train", "train the tiny embedded demo VLA on simulator data"),
    "predict": ("vla_ros.runtime.predict_cli", "one action from an image file and an instruction"),
    "export": ("vla_ros.runtime.export", "export a checkpoint to ONNX graphs"),
    "build-engine": ("vla_ros.runtime.trt_build", "build TensorRT engines from exported graphs"),
    "bench": ("vla_ros.runtime.bench", "per-stage latency of the backends side by side"),
    "replay": ("vla_ros.bag.replay", "deterministic offline replay of a rosbag"),
    "play": ("vla_ros.ros.bag_play", "publish a rosbag into a running ROS graph"),
    "record": ("vla_ros.ros.bag_record", "record the node's topics to a rosbag"),
}


def usage() -> str:
    """The list of verbs with their help."""
    width = max(len(v) for v in VERBS)
    lines = ["usage: vla-ros <verb> [options]   (vla-ros <verb> --help for a verb's options)", ""]
    lines += [f"  {verb:<{width}}  {help_}" for verb, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the verb's module."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(f"vla-ros: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[verb][0])
    try:
        return int(module.main(rest) or 0)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # 128 + SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
