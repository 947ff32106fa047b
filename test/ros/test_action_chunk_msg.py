"""vla_ros/ActionChunk: the policy/control contract, round trip over real DDS and the receiver's checks."""

from __future__ import annotations

import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from vla_harness import wait_for  # noqa: E402
from vla_ros.msg import ActionChunk as ActionChunkMsg  # noqa: E402

from vla_ros.core.types import ActionChunk  # noqa: E402
from vla_ros.ros.chunk_msg import ChunkEnvelope, chunk_from_msg, chunk_to_msg  # noqa: E402
from vla_ros.ros.qos import reliable_qos  # noqa: E402


def _envelope(seq: int = 7) -> ChunkEnvelope:
    actions = np.arange(8 * 7, dtype=np.float64).reshape(8, 7) * 1e-3 + 1e-9  # rows differ
    chunk = ActionChunk(actions=actions, stamp=1_700_000_000.123456789,
                        instruction="put the bowl on the plate", timings={"vision": 0.1, "actions": 0.05})
    return ChunkEnvelope(chunk, seq, 0.05, "torch cpu fp32 openvla-oft tiny", "openvla-oft")


def test_round_trip_over_dds_keeps_every_field():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("chunk_contract", context=context)
    received: list = []
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    try:
        pub = node.create_publisher(ActionChunkMsg, "policy/action_chunk", reliable_qos())
        node.create_subscription(ActionChunkMsg, "policy/action_chunk", received.append, reliable_qos())
        spinner.start()
        sent = _envelope()
        assert wait_for(lambda: pub.get_subscription_count() > 0, 10)
        pub.publish(chunk_to_msg(sent, "base_link"))
        assert wait_for(lambda: received, 10)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    msg = received[0]
    assert (msg.chunk_length, msg.action_dim, msg.header.frame_id) == (8, 7, "base_link")
    got = chunk_from_msg(msg)
    np.testing.assert_array_equal(got.chunk.actions, sent.chunk.actions)  # row-major, bit for bit
    assert abs(got.chunk.stamp - sent.chunk.stamp) < 1e-6  # float64 seconds at 1.7e9 resolve ~0.2 us
    assert got.chunk.instruction == sent.chunk.instruction
    assert (got.sequence, got.action_period_s, got.model, got.family) == (7, 0.05, sent.model, sent.family)
    assert got.chunk.timings == {"inference": pytest.approx(0.15)}


@pytest.mark.parametrize("field, value, message", [
    ("action_dim", 14, "action_dim is 14"),
    ("chunk_length", 0, "chunk_length must be at least 1"),
    ("actions", [0.0] * 55, "55 action values, chunk_length x action_dim = 8 x 7"),
    ("action_period_s", 0.0, "action_period_s must be a positive number"),
    ("action_period_s", float("nan"), "action_period_s must be a positive number"),
])
def test_unplayable_messages_are_refused_naming_the_field(field, value, message):
    msg = chunk_to_msg(_envelope(), "base_link")
    setattr(msg, field, value)
    with pytest.raises(ValueError, match=message):
        chunk_from_msg(msg)


def test_non_finite_actions_are_refused():
    msg = chunk_to_msg(_envelope(), "base_link")
    values = list(msg.actions)
    values[10] = float("inf")
    msg.actions = values
    with pytest.raises(ValueError, match="NaN or Inf"):
        chunk_from_msg(msg)
