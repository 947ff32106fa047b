"""`vla_chunk_relay`: a fault-injecting relay between the policy and control halves (`vla-ros bench-split`).

    python -m vla_ros.ros.relay --from vla/action_chunk_policy --to vla/action_chunk \\
        --latency-ms 100 --jitter-ms 30 --loss 0.1 --duplicate 0.01 --reorder 0.05 --seed 0

Each vla_ros/ActionChunk received on `--from` goes through vla_ros.control.netem.FaultyLink (seeded latency
with jitter, loss, duplication, reordering, on time.monotonic) and is republished unchanged on `--to` at its
delivery time. Delivery runs in a thread of its own that sleeps until the next message is due (no polling
timer), so the relay adds well under a millisecond to the configured delay. Both topics use chunk_qos().
The counts (received, lost, duplicated, reordered, delivered) and every arrival time are written to
`--out` at the end; SIGTERM, SIGINT, `--seconds` or the `--stop-file` end the process.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from vla_ros.control.netem import FaultyLink, LinkFaults, add_fault_arguments, faults_from_arguments
from vla_ros.msg import ActionChunk as ActionChunkMsg
from vla_ros.ros.qos import chunk_qos

NODE_NAME = "vla_chunk_relay"


class ChunkRelay:
    """Chunks from `source` to `target` of `node` through a FaultyLink; call `start` to begin delivering.

    `clock` (monotonic seconds) times the link; `arrivals` holds (clock time, sequence) of every chunk
    received, before the link decides its fate."""

    def __init__(self, node: Node, source: str, target: str, faults: LinkFaults, seed: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._link: FaultyLink[ActionChunkMsg] = FaultyLink(faults, seed)
        self._clock = clock
        self._wake = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.arrivals: list[tuple[float, int]] = []
        self._pub = node.create_publisher(ActionChunkMsg, target, chunk_qos())
        self._sub = node.create_subscription(ActionChunkMsg, source, self._on_chunk, chunk_qos())
        self._node = node

    @property
    def faults(self) -> LinkFaults:
        return self._link.faults

    def start(self) -> None:
        """Start the delivery thread."""
        with self._wake:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._deliver, name="chunk_relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop delivering (what is still in flight is dropped) and release the topics."""
        with self._wake:
            self._running = False
            self._link.clear()
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(2.0)
        self._node.destroy_subscription(self._sub)
        self._node.destroy_publisher(self._pub)

    def counts(self) -> dict[str, int]:
        """Chunks received, lost, duplicated, reordered by the link, and published."""
        with self._wake:
            link = self._link
            return {"received": link.sent, "lost": link.lost, "duplicated": link.duplicated,
                    "reordered": link.reordered, "delivered": self.delivered}

    def subscription_count(self) -> int:
        """Readers matched on the target topic."""
        return self._pub.get_subscription_count()

    def publisher_count(self) -> int:
        """Writers matched on the source topic."""
        return self._node.count_publishers(self._sub.topic_name)

    def _on_chunk(self, msg: ActionChunkMsg) -> None:
        now = self._clock()
        with self._wake:
            self.arrivals.append((now, int(msg.sequence)))
            self._link.send(msg, now)
            self._wake.notify()

    def _deliver(self) -> None:
        while True:
            with self._wake:
                if not self._running:
                    return
                due = self._link.due(self._clock())
                if not due:
                    next_at = self._link.next_delivery
                    self._wake.wait(None if next_at is None else max(0.0, next_at - self._clock()))
                    continue
            for msg in due:  # outside the lock: a publish may take a while
                self._pub.publish(msg)
                self.delivered += 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vla_ros.ros.relay", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", default="vla/action_chunk_policy",
                   help="topic the policy half publishes its chunks on (default vla/action_chunk_policy)")
    p.add_argument("--to", dest="target", default="vla/action_chunk",
                   help="topic the control half listens on, split.chunk_topic (default vla/action_chunk)")
    add_fault_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the link's random draws (default 0)")
    p.add_argument("--namespace", default="", help="namespace of the relay node")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: run until stopped)")
    p.add_argument("--stop-file", default="", help="stop as soon as this file exists")
    p.add_argument("--out", default="", help="write the counts and arrival times as JSON here at the end")
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the relay as a process until --seconds, --stop-file, SIGTERM or Ctrl-C."""
    a = build_parser().parse_args(argv)
    try:
        faults = faults_from_arguments(a)
    except ValueError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    deadline = time.monotonic() + a.seconds if a.seconds > 0 else float("inf")
    stop = Path(a.stop_file) if a.stop_file else None
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(NODE_NAME, namespace=a.namespace or None, context=ctx)
    relay = ChunkRelay(node, a.source, a.target, faults, a.seed)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    relay.start()
    node.get_logger().info(f"relaying {a.source} -> {a.target}: {faults}")
    try:
        while time.monotonic() < deadline and not (stop is not None and stop.exists()):
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        relay.stop()
        if a.out:
            Path(a.out).write_text(json.dumps({**relay.counts(), "arrivals": relay.arrivals}))
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
