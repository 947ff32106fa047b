"""`vla-ros play BAG`: publish a rosbag into a running ROS graph with its original timing.

The raw CDR of each message is published as recorded (no deserialization), at
`t_start + (t_msg - t_first) / rate` on the monotonic clock; with --clock a rosgraph_msgs/Clock on
/clock carries the bag time at --clock-hz (for nodes with use_sim_time). Each topic's publisher uses
the recorded reliability/durability when the bag has them (reliable, volatile, depth 10 otherwise),
so a best-effort camera stays best effort. `ros2 bag play` does the same on full ROS installs.

    vla-ros play BAG [--rate R] [--clock] [--clock-hz 100] [--loop] [--topics T ...] [--delay 1.0]
                     [--wait-for-subscribers S]
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from vla_ros.bag.io import CLOCK, NS_PER_S, BagError, BagReader


def message_class(msgtype: str) -> Any:
    """The generated Python class of 'pkg/msg/Type' (ImportError/AttributeError when not installed)."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def publisher_qos(recorded: tuple) -> Any:
    """rclpy QoS for a topic from its recorded offered profiles (reliable/volatile/10 without them)."""
    reliable, transient, depth = True, False, 10
    if recorded:
        q = recorded[0]
        reliable = getattr(q.reliability, "name", "RELIABLE") != "BEST_EFFORT"
        transient = getattr(q.durability, "name", "VOLATILE") == "TRANSIENT_LOCAL"
        depth = max(int(q.depth or 0), 1) if getattr(q.history, "name", "") == "KEEP_LAST" else 10
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE)


def _sleep_until(target: float, stop: list[bool]) -> None:
    """Sleep until time.monotonic() >= target: coarse sleep, then a short spin for precision."""
    while not stop[0]:
        left = target - time.monotonic()
        if left <= 0:
            return
        time.sleep(left - 0.0015 if left > 0.003 else 0.0002)


def play(bag_path: str | Path, rate: float = 1.0, clock: bool = False, clock_hz: float = 100.0,
         loop: bool = False, topics: list[str] | None = None, delay_s: float = 1.0,
         wait_for_subscribers_s: float = 0.0, node_name: str = "vla_bag_player", log: Any = None) -> dict:
    """Publish the bag; returns statistics (messages, timing error percentiles, wall time).

    With wait_for_subscribers_s > 0, playing starts once every topic has a matched subscriber (or
    that time has passed), so that no early message is lost to DDS discovery.
    """
    log = log or (lambda text: print(text, file=sys.stderr))
    if not (rate > 0 and np.isfinite(rate)):
        raise ValueError(f"--rate must be a positive number, got {rate}")
    stop = [False]
    with BagReader(bag_path) as bag:
        wanted = list(bag.topics) if not topics else topics
        missing = [t for t in wanted if t not in bag.topics]
        if missing:
            raise BagError(f"bag {str(bag_path)!r} has no topic(s) {missing}; it has {sorted(bag.topics)}")
        if clock:
            wanted = [t for t in wanted if bag.topics[t].msgtype != CLOCK]  # we publish our own clock
        rclpy.init(args=None)
        node = rclpy.create_node(node_name, start_parameter_services=False)
        publishers: dict[str, Any] = {}
        skipped: list[str] = []
        try:
            for t in wanted:
                info = bag.topics[t]
                try:
                    cls = message_class(info.msgtype)
                except (ImportError, AttributeError, ValueError):
                    skipped.append(f"{t} [{info.msgtype}]")
                    continue
                publishers[t] = node.create_publisher(cls, t, publisher_qos(info.qos))
            if skipped:
                log(f"play: skipping topics whose message types are not installed: {', '.join(skipped)}")
            if not publishers:
                raise BagError(f"bag {str(bag_path)!r}: nothing to publish")
            clock_pub = None
            if clock:
                clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(
                    depth=10, reliability=ReliabilityPolicy.RELIABLE))
            previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

            def on_signal(signum: int, frame: Any) -> None:
                stop[0] = True

            for s in previous:
                signal.signal(s, on_signal)
            errors: list[float] = []
            published = 0
            wall0 = time.monotonic()
            try:
                log(f"play: {len(publishers)} topics, {bag.duration_s:.2f} s at rate {rate:g}"
                    + (f", /clock at {clock_hz:g} Hz" if clock_pub else "") + (", looping" if loop else ""))
                t_first = bag.start_ns
                if wait_for_subscribers_s > 0:
                    _wait_for_subscribers(publishers, wait_for_subscribers_s, stop, log)
                if delay_s > 0:
                    _sleep_until(time.monotonic() + delay_s, stop)  # lets subscribers match first
                while not stop[0]:
                    start = time.monotonic()
                    next_clock = start
                    for topic, t_ns, raw in bag.messages(list(publishers)):
                        target = start + (t_ns - t_first) / NS_PER_S / rate
                        while clock_pub is not None and next_clock <= target and not stop[0]:
                            _sleep_until(next_clock, stop)
                            _publish_clock(clock_pub, t_first + int((next_clock - start) * rate * NS_PER_S))
                            next_clock += 1.0 / clock_hz
                        _sleep_until(target, stop)
                        if stop[0]:
                            break
                        if clock_pub is not None:
                            _publish_clock(clock_pub, t_ns)
                        publishers[topic].publish(raw)
                        errors.append(time.monotonic() - target)
                        published += 1
                    if not loop:
                        break
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
            wall = time.monotonic() - wall0
            for pub in [*publishers.values(), *([clock_pub] if clock_pub is not None else [])]:
                pub.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))  # reliable: deliver before exit
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    err_ms = np.abs(np.array(errors)) * 1e3 if errors else np.zeros(1)
    stats = {"published": published, "topics": sorted(publishers), "skipped": skipped,
             "rate": rate, "interrupted": stop[0], "wall_s": wall,
             "timing_error_ms": {"p50": float(np.percentile(err_ms, 50)),
                                 "p99": float(np.percentile(err_ms, 99)), "max": float(err_ms.max())}}
    return stats


ACK_TIMEOUT_S = 1.0  # how long play waits for reliable subscribers to acknowledge the last messages


def _wait_for_subscribers(publishers: dict[str, Any], timeout_s: float, stop: list[bool], log: Any) -> None:
    """Block until every publisher has a matched subscription, or timeout_s passes."""
    end = time.monotonic() + timeout_s
    while not stop[0] and time.monotonic() < end:
        if all(pub.get_subscription_count() > 0 for pub in publishers.values()):
            return
        time.sleep(0.02)
    lonely = [t for t, pub in publishers.items() if pub.get_subscription_count() == 0]
    if lonely:
        log(f"play: no subscriber after {timeout_s:g} s on {', '.join(lonely)}; playing anyway")


def _publish_clock(pub: Any, t_ns: int) -> None:
    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = int(t_ns // NS_PER_S), int(t_ns % NS_PER_S)
    pub.publish(msg)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 when the bag was played, 2 for a bad bag or arguments, 130 when interrupted."""
    ap = argparse.ArgumentParser(prog="vla-ros play", description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", help="rosbag2 directory (mcap or sqlite3), or a .mcap / .db3 file")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    ap.add_argument("--clock", action="store_true", help="publish /clock with the bag time (use_sim_time)")
    ap.add_argument("--clock-hz", type=float, default=100.0, help="/clock publishing rate [Hz]")
    ap.add_argument("--loop", action="store_true", help="play again from the start until interrupted")
    ap.add_argument("--topics", nargs="+", help="only these topics (default: all)")
    ap.add_argument("--delay", type=float, default=1.0,
                    help="wait before the first message so that subscribers can match [s] (default 1.0)")
    ap.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="S",
                    help="before playing, wait up to S seconds until every topic has a subscriber")
    ap.add_argument("--stats", help="write timing statistics as JSON here")
    args = ap.parse_args(argv)
    if not (args.clock_hz > 0):
        print("vla-ros play: error: --clock-hz must be positive", file=sys.stderr)
        return 2
    try:
        stats = play(args.bag, args.rate, args.clock, args.clock_hz, args.loop, args.topics, args.delay,
                     args.wait_for_subscribers)
    except (BagError, ValueError) as exc:
        print(f"vla-ros play: error: {exc}", file=sys.stderr)
        return 2
    e = stats["timing_error_ms"]
    print(f"play: published {stats['published']} messages in {stats['wall_s']:.2f} s; timing error "
          f"p50 {e['p50']:.2f} ms, p99 {e['p99']:.2f} ms, max {e['max']:.2f} ms", file=sys.stderr)
    if args.stats:
        Path(args.stats).write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return 130 if stats["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
