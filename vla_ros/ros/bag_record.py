"""`vla-ros record DIR`: record vla_node's topics to an mcap bag (rosbags writer, atomic).

Topics default to the node's own (camera, instruction, e-stop, pose, command, status, action chunks) from
--config and --namespace; a topic is subscribed as soon as it appears in the graph, with the
reliability and durability its publishers offer, and recorded as raw CDR with the receipt time
(the node clock: wall time, or /clock with --use-sim-time). The bag is written under a temporary
name and renamed to DIR when recording stops (--seconds, Ctrl-C or SIGTERM), so DIR is never half
written.

    vla-ros record DIR [--topics T ...] [--seconds S] [--config FILE] [--storage mcap|sqlite3]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from vla_ros.bag.io import BagError, qos_profile, typestore
from vla_ros.bag.replay_inputs import resolve_topic
from vla_ros.bag.writer import BagWriter
from vla_ros.core.config import load_config
from vla_ros.ros.bag_play import message_class

DEFAULT_NODE_NAME = "vla_node"


def node_topics(config_path: str | None = None, namespace: str = "/", node_name: str = DEFAULT_NODE_NAME
                ) -> list[str]:
    """Absolute names of vla_node's topics for a config: inputs, command (+ gripper), status, chunks."""
    cfg = load_config(config_path)
    t = cfg.topics
    names = [t.camera, t.instruction, t.estop, t.command, "~/status", cfg.split.chunk_topic]
    if t.pose:
        names.append(t.pose)
    if t.output_mode != "end_effector":
        names.append(t.command + "/gripper")
    return [resolve_topic(n, namespace, node_name) for n in names]


def subscription_qos(endpoints: list[Any]) -> tuple[Any, list[Any]]:
    """(rclpy QoS matching every publisher, rosbags offered-QoS records for metadata.yaml)."""
    reliable = bool(endpoints) and all(e.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                                       for e in endpoints)
    transient = bool(endpoints) and all(e.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                        for e in endpoints)
    offered = [qos_profile(e.qos_profile.reliability == ReliabilityPolicy.RELIABLE,
                           max(int(e.qos_profile.depth or 0), 1),
                           e.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL) for e in endpoints]
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                     reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE)
    return qos, offered[:1]


def record(out: str | Path, topics: list[str], seconds: float = 0.0, storage: str = "mcap",
           use_sim_time: bool = False, overwrite: bool = False, node_name: str = "vla_bag_recorder",
           log: Any = None) -> dict[str, int]:
    """Record `topics` until `seconds` pass (0 = until SIGINT/SIGTERM); returns messages per topic."""
    log = log or (lambda text: print(text, file=sys.stderr))
    stop = [False]
    writer = BagWriter(out, storage=storage, overwrite=overwrite,
                       custom_data={"generator": "vla_ros record"})
    writer.open()  # fails early (BagError) when `out` exists
    try:
        rclpy.init(args=None)
    except Exception:
        writer.abort()
        raise
    node = rclpy.create_node(node_name, start_parameter_services=False,
                             parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)])
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    subscribed: dict[str, Any] = {}
    unknown: set[str] = set()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: Any) -> None:
        stop[0] = True

    for s in previous:
        signal.signal(s, on_signal)
    ok = False
    try:
        log(f"record: waiting for {', '.join(topics)} -> {out}")
        start = time.monotonic()
        next_scan = start
        while not stop[0] and (seconds <= 0 or time.monotonic() - start < seconds):
            if time.monotonic() >= next_scan:
                next_scan = time.monotonic() + 0.2
                _subscribe_new(node, writer, topics, subscribed, unknown, log)
            executor.spin_once(timeout_sec=0.02)
        ok = True
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for sub in subscribed.values():
            node.destroy_subscription(sub)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        if ok:
            writer.close()
        else:
            writer.abort()
    counts = dict(writer.counts)
    log("record: " + ", ".join(f"{t}: {n}" for t, n in sorted(counts.items())) + f" -> {out}")
    return counts


def _subscribe_new(node: Any, writer: BagWriter, topics: list[str], subscribed: dict[str, Any],
                   unknown: set[str], log: Any) -> None:
    """Subscribe to the wanted topics that have appeared in the graph since the last scan."""
    graph = dict(node.get_topic_names_and_types())
    for topic in topics:
        if topic in subscribed or topic in unknown or topic not in graph:
            continue
        msgtype = graph[topic][0]
        try:
            cls = message_class(msgtype)
        except (ImportError, AttributeError, ValueError):
            cls = None
        if cls is None or msgtype not in typestore().types:
            unknown.add(topic)
            log(f"record: cannot record {topic} [{msgtype}]: type not installed or without a definition")
            continue
        endpoints = node.get_publishers_info_by_topic(topic)
        qos, offered = subscription_qos(endpoints)
        writer.add_topic(topic, msgtype, qos=offered)

        def callback(raw: bytes, topic: str = topic) -> None:
            writer.write(topic, node.get_clock().now().nanoseconds, raw)

        subscribed[topic] = node.create_subscription(cls, topic, callback, qos, raw=True)
        log(f"record: recording {topic} [{msgtype}]")


def main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 after a clean stop, 2 for bad arguments or an output that exists."""
    ap = argparse.ArgumentParser(prog="vla-ros record", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="bag directory to create")
    ap.add_argument("--topics", nargs="+", help="topics to record (default: the node's topics from --config)")
    ap.add_argument("--config", help="node config YAML naming the topics")
    ap.add_argument("--namespace", default="/", help="namespace of vla_node (resolves relative topic names)")
    ap.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default: Ctrl-C)")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--use-sim-time", action="store_true", help="stamp messages with /clock time")
    ap.add_argument("--force", action="store_true", help="replace an existing bag directory")
    args = ap.parse_args(argv)
    try:
        topics = args.topics or node_topics(args.config, args.namespace)
        if Path(args.out).exists() and not args.force:
            raise BagError(f"output {args.out!r} exists already; use --force to replace it")
        record(args.out, topics, args.seconds, args.storage, args.use_sim_time, args.force)
    except (BagError, ValueError) as exc:
        print(f"vla-ros record: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
