"""A policy half that starts after the instruction was sent gets it from the control half (real DDS)."""

from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from vla_harness import NodeHarness, wait_for  # noqa: E402
from vla_ros.msg import ActionChunk as ActionChunkMsg  # noqa: E402

from vla_ros.ros.node import VlaNode  # noqa: E402
from vla_ros.ros.qos import chunk_qos  # noqa: E402
from vla_ros.runtime.synthetic import SyntheticPolicy  # noqa: E402

FAST = {"control.control_rate_hz": 50.0, "execution.inference_process": False,
        "execution.control_priority": 0}


@pytest.mark.parametrize("same_chunk_topic", [True, False])
def test_policy_node_started_after_the_instruction_gets_it_from_the_control_half(same_chunk_topic):
    chunk_topic = "vla/action_chunk" if same_chunk_topic else "other/action_chunk"  # other: not its half
    h = NodeHarness(None, {**FAST, "split.role": "control", "split.chunk_topic": chunk_topic})
    policy_node = None
    try:
        chunks: list = []
        h.probe.create_subscription(ActionChunkMsg, "vla/action_chunk", chunks.append, chunk_qos())
        h.say("stack the cups")  # a volatile teleop message, before the policy node exists
        assert wait_for(lambda: h.node.core.instruction == "stack the cups", 3.0)
        params = [Parameter(k, value=v) for k, v in {**FAST, "split.role": "policy"}.items()]
        policy_node = VlaNode(SyntheticPolicy(latency_s=0.01), node_name="vla_policy_node",
                              namespace=h.namespace, context=h.context, parameter_overrides=params)
        assert policy_node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert policy_node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        h._spin(policy_node)
        h.start_camera(30)
        if same_chunk_topic:
            assert wait_for(lambda: chunks, 3.0), "the new policy node never got the instruction"
            assert chunks[0].instruction == "stack the cups" and chunks[0].sequence == 0
        else:  # nothing holds the instruction: the new policy node waits for the next one
            assert wait_for(lambda: policy_node.camera_sub.stats().publishers > 0, 3.0)
            time.sleep(1.0)
            assert policy_node.core.instruction == ""
    finally:
        h.stop_camera()
        if policy_node is not None:
            policy_node.destroy_node()
        h.close()
