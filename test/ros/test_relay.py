"""vla_chunk_relay over real DDS: a lost chunk never arrives, a duplicated one twice, latency delays."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from vla_harness import wait_for  # noqa: E402
from vla_ros.msg import ActionChunk as ActionChunkMsg  # noqa: E402

from vla_ros.control.netem import LinkFaults  # noqa: E402
from vla_ros.control.split import ChunkEnvelope  # noqa: E402
from vla_ros.core.types import ActionChunk  # noqa: E402
from vla_ros.ros.chunk_msg import chunk_to_msg  # noqa: E402
from vla_ros.ros.qos import chunk_qos  # noqa: E402
from vla_ros.ros.relay import ChunkRelay  # noqa: E402

CASES = {  # name -> the link's faults
    "lossy": LinkFaults(loss=1.0),
    "doubling": LinkFaults(duplicate=1.0),
    "slow": LinkFaults(latency_s=0.2),
}


def _msg(sequence: int) -> ActionChunkMsg:
    chunk = ActionChunk(actions=np.full((8, 7), 1e-3), stamp=100.0 + sequence, instruction="pick",
                        timings={"total": 0.05})
    return chunk_to_msg(ChunkEnvelope(chunk, sequence, 0.05), "base_link")


@pytest.fixture(scope="module")
def link():
    """One relay per case (`<name>/in` -> `<name>/out`), a publisher into each and what came out of each
    (arrival time, sequence)."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("relay_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    out: dict[str, list[tuple[float, int]]] = {name: [] for name in CASES}
    relays, pubs = {}, {}
    for name, faults in CASES.items():
        relays[name] = ChunkRelay(node, f"{name}/in", f"{name}/out", faults, seed=1)
        relays[name].start()
        pubs[name] = node.create_publisher(ActionChunkMsg, f"{name}/in", chunk_qos())
        node.create_subscription(ActionChunkMsg, f"{name}/out",
                                 lambda m, n=name: out[n].append((time.monotonic(), m.sequence)), chunk_qos())
    spinner.start()
    try:
        assert wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values())
                        and all(r.subscription_count() > 0 for r in relays.values()), 10)
        sent: dict[str, list[tuple[float, int]]] = {name: [] for name in CASES}
        for sequence in range(3):
            for name, pub in pubs.items():
                sent[name].append((time.monotonic(), sequence))
                pub.publish(_msg(sequence))
            time.sleep(0.05)
        assert wait_for(lambda: len(out["doubling"]) >= 6 and len(out["slow"]) >= 3, 10)
        time.sleep(0.3)  # anything else (a lost chunk) would have arrived by now
        yield relays, sent, out
    finally:
        for relay in relays.values():
            relay.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_a_lost_chunk_never_arrives(link):
    relays, _, out = link
    assert out["lossy"] == []
    assert relays["lossy"].counts() == {"received": 3, "lost": 3, "duplicated": 0, "reordered": 0,
                                        "delivered": 0}


def test_a_duplicated_chunk_arrives_twice(link):
    relays, _, out = link
    assert sorted(seq for _, seq in out["doubling"]) == [0, 0, 1, 1, 2, 2]
    counts = relays["doubling"].counts()
    assert counts["duplicated"] == 3 and counts["delivered"] == 6 and counts["lost"] == 0


def test_latency_delays_every_chunk(link):
    relays, sent, out = link
    assert [seq for _, seq in out["slow"]] == [0, 1, 2]
    delays = [arrived - left for (left, _), (arrived, _) in zip(sent["slow"], out["slow"])]
    assert all(0.2 <= d < 0.5 for d in delays), delays
    received = relays["slow"].arrivals  # at the relay at once, sent on 0.2 s later
    assert [seq for _, seq in received] == [0, 1, 2]
    assert all(at - left < 0.15 for (left, _), (at, _) in zip(sent["slow"], received))
