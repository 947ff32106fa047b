"""`vla-ros node`: run vla_node without ros2 launch (also the body of `ros2 run vla_ros vla_node`).

    vla-ros node --config config/vla.yaml --param control.control_rate_hz=50 --arm
    ros2 run vla_ros vla_node --ros-args --params-file config/vla.yaml

The node configures and activates itself unless --managed is given (then a lifecycle manager
drives it). Exit status: 0 after Ctrl-C, 2 for an invalid configuration, 1 when a transition fails.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

import yaml

from vla_ros.core.schema import ConfigError

DEFAULT_SWITCH_INTERVAL_S = 0.0005


def parse_param(text: str) -> tuple[str, Any]:
    """`name=value` with a YAML-typed value (`50` -> 50, `true` -> True, `[0, 1]` -> list)."""
    if "=" not in text:
        raise ConfigError(f"--param {text!r}: expected NAME=VALUE")
    name, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return name.strip(), value


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
                   help="run the policy in a child process: the control loop never waits for its GIL and a "
                        "hung policy is killed and rebuilt (recommended for CPU inference)")
    p.add_argument("--control-priority", type=int, default=0, metavar="N",
                   help="SCHED_FIFO priority 1-99 for the control thread (needs rtprio rights; 0 = off)")
    p.add_argument("--switch-interval", type=float, default=DEFAULT_SWITCH_INTERVAL_S, metavar="S",
                   help="GIL switch interval [s]: how long the control thread may wait for a Python-heavy "
                        f"thread (default {DEFAULT_SWITCH_INTERVAL_S}; Python's own default is 0.005)")
    p.add_argument("--name", default="vla_node", help="node name (default vla_node)")
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
    if not 0 <= args.control_priority <= 99 or not 1e-5 <= args.switch_interval <= 0.1:
        print("vla-ros node: --control-priority must be 0-99 and --switch-interval in [1e-5, 0.1] s",
              file=sys.stderr)
        return 2
    try:
        overrides = dict(parse_param(p) for p in args.param)
        from vla_ros.core.config import load_config  # validates before ROS starts

        cfg = load_config(args.config, overrides) if (args.config or overrides) else None
    except ConfigError as exc:
        print(f"vla-ros node: invalid configuration: {exc}", file=sys.stderr)
        return 2
    sys.setswitchinterval(args.switch_interval)
    return run_node(cfg, ros_args, arm=args.arm, managed=args.managed, synthetic=args.synthetic_policy,
                    name=args.name, namespace=args.namespace, given=overrides,
                    control_priority=args.control_priority, inference_process=args.inference_process)


def explicit_parameters(cfg, given: dict[str, Any]):
    """Parameters of `cfg` that differ from the defaults or were given with --param.

    Those override --ros-args parameters; every other parameter keeps what --ros-args says.
    """
    from vla_ros.core.config import NodeConfig
    from vla_ros.ros.params import config_to_parameters

    defaults = {p.name: p.value for p in config_to_parameters(NodeConfig())}
    return [p for p in config_to_parameters(cfg) if p.name in given or p.value != defaults[p.name]]


def run_node(cfg, ros_args: list[str], arm: bool = False, managed: bool = False, synthetic: bool = False,
             name: str = "vla_node", namespace: str | None = None,
             given: dict[str, Any] | None = None, control_priority: int = 0,
             inference_process: bool = False) -> int:
    """Create the node, drive its transitions, spin; Ctrl-C publishes a final HOLD before exiting."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn as Ret

    from vla_ros.ros.node import VlaNode

    try:  # handle Ctrl-C ourselves so the node can still publish its final HOLD
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(args=["vla_node"] + ros_args, signal_handler_options=SignalHandlerOptions.NO)
    except (ImportError, TypeError):
        rclpy.init(args=["vla_node"] + ros_args)
    _terminate_like_ctrl_c()
    node = None
    executor = SingleThreadedExecutor()
    try:
        factory = None
        if synthetic:
            import functools

            from vla_ros.runtime.synthetic import SyntheticPolicy

            factory = functools.partial(SyntheticPolicy, latency_s=0.05)
        overrides = explicit_parameters(cfg, given or {}) if cfg is not None else None
        try:
            node = VlaNode(None, node_name=name, namespace=namespace, parameter_overrides=overrides,
                           control_priority=control_priority, inference_process=inference_process,
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


def ros_main() -> None:
    """Entry point of the installed `vla_node` executable (ros2 run / launch)."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
