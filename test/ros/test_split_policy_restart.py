"""A restarted policy half picks up the instruction a transient-local publisher holds (real DDS)."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from vla_harness import NodeHarness, wait_for  # noqa: E402
from vla_ros.msg import ActionChunk as ActionChunkMsg  # noqa: E402

from vla_ros.ros.node import VlaNode  # noqa: E402
from vla_ros.ros.qos import chunk_qos, latched_qos, reliable_qos  # noqa: E402
from vla_ros.runtime.synthetic import SyntheticPolicy  # noqa: E402

FAST = {"control.control_rate_hz": 50.0, "execution.inference_process": False,
        "execution.control_priority": 0}


@pytest.mark.parametrize("durability", ["transient_local", "volatile"])
def test_policy_node_started_after_the_instruction_uses_it_only_when_it_was_held(durability):
    h = NodeHarness(None, {**FAST, "split.role": "control"})  # the control half + probe (camera, chunks)
    policy_node = None
    try:
        qos = latched_qos() if durability == "transient_local" else reliable_qos()
        teleop = h.probe.create_publisher(String, "vla/instruction", qos)
        chunks: list = []
        h.probe.create_subscription(ActionChunkMsg, "vla/action_chunk", chunks.append, chunk_qos())
        teleop.publish(String(data="stack the cups"))  # before the policy node exists
        params = [Parameter(k, value=v) for k, v in {**FAST, "split.role": "policy"}.items()]
        policy_node = VlaNode(SyntheticPolicy(latency_s=0.01), node_name="vla_policy_node",
                              namespace=h.namespace, context=h.context, parameter_overrides=params)
        assert policy_node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert policy_node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        h._spin(policy_node)
        h.start_camera(30)
        got = wait_for(lambda: chunks, 3.0)
        if durability == "transient_local":
            assert got and chunks[0].instruction == "stack the cups" and chunks[0].sequence == 0
        else:  # a volatile publisher holds nothing: no instruction, no chunk
            assert not got and policy_node.core.instruction == ""
    finally:
        h.stop_camera()
        if policy_node is not None:
            policy_node.destroy_node()
        h.close()
