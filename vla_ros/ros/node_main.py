"""`vla-ros node`: run vla_node without ros2 launch (also the body of `ros2 run vla_ros vla_node`).

    vla-ros node --config config/vla.yaml --param control.control_rate_hz=50 --arm
    ros2 run vla_ros vla_node --ros-args --params-file config/vla.yaml

The node configures and activates itself unless --managed is given (then a lifecycle manager
drives it). Exit status: 0 after Ctrl-C, 2 for an invalid configuration, 1 when a transition fails.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import threading
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn as Ret
from rclpy.signals import SignalHandlerOptions

from vla_ros.core.config import NodeConfig, load_config
from vla_ros.core.schema import ConfigError, parse_assignments
from vla_ros.ros.node import VlaNode
from vla_ros.ros.params import config_to_parameters
from vla_ros.runtime.synthetic import SyntheticPolicy

DEFAULT_SWITCH_INTERVAL_S = 0.0005
ROLE_NAMES = {"both": "vla_node", "policy": "vla_policy_node", "control": "vla_control_node"}  # default names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-ros node", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML config (plain or ROS 2 parameters file); default: the defaults")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override one parameter, e.g. control.control_rate_hz=50 (repeatable)")
    p.add_argument("--arm", action="store_true", help="arm right after activation (otherwise call ~/arm)")
    p.add_argument("--managed", action="store_true",
                   help="do not configure/activate: leave the transitions to a lifecycle manager")
    p.add_argument("--synthetic-policy", action="store_true",
                   help="use the synthetic test-double policy instead of a model (wiring checks only)")
    p.add_argument("--inference-process", action="store_true",
                   help="set execution.inference_process: run the policy in a child process, so the control "
                        "loop never waits for its GIL and a hung policy is killed and rebuilt")
    p.add_argument("--control-priority", type=int, default=None, metavar="N",
                   help="set execution.control_priority: SCHED_FIFO priority 1-99 of the control thread "
                        "(needs rtprio rights; 0 = off)")
    p.add_argument("--switch-interval", type=float, default=DEFAULT_SWITCH_INTERVAL_S, metavar="S",
                   help="GIL switch interval [s]: how long the control thread may wait for a Python-heavy "
                        f"thread (default {DEFAULT_SWITCH_INTERVAL_S}; Python's own default is 0.005)")
    p.add_argument("--role", choices=tuple(ROLE_NAMES), default=None,
                   help="set split.role: both (policy and control in one process), policy (cameras + "
                        "instruction -> action chunks) or control (action chunks -> safe commands); "
                        "README: 'Policy on another computer'")
    p.add_argument("--name", default=None, help="node name (default: vla_node, vla_policy_node or "
                                                 "vla_control_node by role)")
    p.add_argument("--namespace", default=None, help="node namespace")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vla-ros node`; arguments after --ros-args go to ROS."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args: list[str] = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    args = build_parser().parse_args(argv)
    if not 1e-5 <= args.switch_interval <= 0.1:
        print("vla-ros node: --switch-interval must be in [1e-5, 0.1] s", file=sys.stderr)
        return 2
    try:
        overrides = parse_assignments(args.param)
        if args.inference_process:
            overrides["execution.inference_process"] = True
        if args.control_priority is not None:
            overrides["execution.control_priority"] = args.control_priority
        if args.role is not None:
            overrides["split.role"] = args.role
        cfg = load_config(args.config, overrides) if (args.config or overrides) else None  # before ROS
    except ConfigError as exc:
        print(f"vla-ros node: invalid configuration: {exc}", file=sys.stderr)
        return 2
    sys.setswitchinterval(args.switch_interval)
    role = cfg.split.role if cfg is not None else "both"
    return run_node(cfg, ros_args, arm=args.arm, managed=args.managed, synthetic=args.synthetic_policy,
                    name=args.name or ROLE_NAMES[role], namespace=args.namespace, given=overrides)


def explicit_parameters(cfg: NodeConfig, given: dict[str, Any]) -> list:
    """Parameters of `cfg` that differ from the defaults or were given with --param.

    Those override --ros-args parameters; every other parameter keeps what --ros-args says.
    """
    defaults = {p.name: p.value for p in config_to_parameters(NodeConfig())}
    return [p for p in config_to_parameters(cfg) if p.name in given or p.value != defaults[p.name]]


def run_node(cfg: NodeConfig | None, ros_args: list[str], arm: bool = False, managed: bool = False,
             synthetic: bool = False, name: str = "vla_node", namespace: str | None = None,
             given: dict[str, Any] | None = None) -> int:
    """Create the node, drive its transitions, spin; Ctrl-C publishes a final HOLD before exiting."""
    # Ctrl-C is handled here (KeyboardInterrupt), so that the node can still publish its final HOLD.
    rclpy.init(args=["vla_node"] + ros_args, signal_handler_options=SignalHandlerOptions.NO)
    _terminate_like_ctrl_c()
    node = None
    executor = SingleThreadedExecutor()
    try:
        factory = functools.partial(SyntheticPolicy, latency_s=0.05) if synthetic else None
        overrides = explicit_parameters(cfg, given or {}) if cfg is not None else None
        try:
            node = VlaNode(None, node_name=name, namespace=namespace, parameter_overrides=overrides,
                           policy_factory=factory)
        except ConfigError as exc:
            print(f"vla-ros node: invalid parameter: {exc}", file=sys.stderr)
            return 2
        if not managed:
            if node.trigger_configure() != Ret.SUCCESS:
                print(f"vla-ros node: {node.last_error or 'configure failed'}", file=sys.stderr)
                return 1
            if node.trigger_activate() != Ret.SUCCESS:
                print("vla-ros node: activate failed", file=sys.stderr)
                return 1
            if arm:
                node.core.set_armed(True)
                node.get_logger().warning("armed at start-up (--arm)")
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None and rclpy.ok():
            node.trigger_shutdown()  # final HOLD when active, then release everything
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (and SIGINT even when inherited as ignored) end the node like Ctrl-C: final HOLD first."""
    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, raise_interrupt)
        signal.signal(signal.SIGINT, raise_interrupt)


def ros_main(role: str | None = None) -> None:
    """Entry point of the installed executables (ros2 run / launch): vla_node, and with `role` the
    halves vla_policy_node / vla_control_node (a --role or --param split.role given wins)."""
    argv = sys.argv[1:]
    if role is not None:
        argv = ["--role", role, *argv]
    sys.exit(main(argv))


if __name__ == "__main__":
    sys.exit(main())
