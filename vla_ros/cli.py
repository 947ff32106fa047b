"""`vla-ros <verb>`: one command line for everything; each verb lives in its own module.

The top of the layer table: the one place where bag/ and sim/ meet (bags of simulator frames).
"""

from __future__ import annotations

import importlib
import os
import sys

# verb -> (module or module:function, one-line help); the function (default `main`) takes argv -> int.
VERBS: dict[str, tuple[str, str]] = {
    "node": ("vla_ros.ros.node_main", "run vla_node without ros2 launch (--config FILE)"),
    "bench-control": ("vla_ros.ros.bench_control", "control-loop timing over real DDS"),
    "bench-split": ("vla_ros.ros.bench_split",
                    "split deployment over a faulty link: control timing, HOLD on loss"),
    "soak": ("vla_ros.ros.soak", "long-running load test of vla_node: camera flood, bad inputs, CPU hogs"),
    "demo": ("vla_ros.ros.demo", "closed-loop demo: simulator + vla_node over ROS topics"),
    "sim": ("vla_ros.ros.sim_node", "tabletop simulator node (camera, pose, commands, reset)"),
    "eval-demo": ("vla_ros.sim.evaluate", "success rate of the policy in the simulator, no ROS"),
    "train-demo": ("vla_ros.sim.train", "train the tiny embedded demo VLA on simulator data"),
    "predict": ("vla_ros.runtime.predict_cli", "actions from image files and an instruction, or a batch"),
    "convert": ("vla_ros.model.convert", "an OpenVLA-OFT release -> a checkpoint (safetensors + settings)"),
    "export": ("vla_ros.cli:export", "export a checkpoint to ONNX graphs (optionally quantized)"),
    "build-engine": ("vla_ros.runtime.trt_build", "build TensorRT engines from exported graphs"),
    "bench": ("vla_ros.runtime.bench", "per-stage latency of the backends side by side"),
    "quant-accuracy": ("vla_ros.sim.observations:quant_accuracy",
                       "actions of quantized graphs against full precision: token agreement, action error"),
    "bench-chunks": ("vla_ros.control.bench_chunks:main", "command jumps at chunk switches, per chunk rule"),
    "replay": ("vla_ros.bag.replay", "deterministic offline replay of a rosbag"),
    "play": ("vla_ros.ros.bag_play", "publish a rosbag into a running ROS graph"),
    "record": ("vla_ros.ros.bag_record", "record the node's topics to a rosbag"),
    "make-bag": ("vla_ros.cli:make_bag", "write a camera rosbag of simulator frames (to try replay)"),
    "bench-replay": ("vla_ros.cli:bench_replay", "offline replay speed on a simulator bag"),
}


def export(argv: list[str]) -> int:
    """`vla-ros export`: runtime/export, with rosbags readable as --calibration (bag/calibration)."""
    from vla_ros.bag import calibration
    from vla_ros.runtime import export as tool

    def read(path: str) -> object:
        return calibration.bag_calibration(path) if calibration.is_bag(path) else path

    return tool.main(argv, bag_reader=read)


def make_bag(argv: list[str]) -> int:
    """`vla-ros make-bag`: bag/make_bag with simulator frames."""
    from vla_ros.bag import make_bag as tool  # lazy: each verb loads only what it runs
    from vla_ros.sim.frames import sim_frames
    return tool.main(argv, frames=sim_frames)


def bench_replay(argv: list[str]) -> int:
    """`vla-ros bench-replay`: bag/bench_replay with simulator frames."""
    from vla_ros.bag import bench_replay as tool  # lazy: each verb loads only what it runs
    from vla_ros.sim.frames import sim_frames
    return tool.main(argv, frames=sim_frames)


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
    module_name, _, function = VERBS[verb][0].partition(":")
    entry = getattr(importlib.import_module(module_name), function or "main")
    try:
        return int(entry(rest) or 0)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # 128 + SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
