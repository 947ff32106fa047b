"""Test harness for the split deployment over real rclpy + Fast DDS: the control half under test, a probe
that publishes hand-made ActionChunk messages, and real policy nodes on demand.

`SplitHarness` is a NodeHarness whose node runs split.role control (named vla_node, so the probe's arm
client and status subscription work unchanged). Its probe also publishes vla_ros/ActionChunk messages
built with a chosen sequence, stamp, instruction, period and length (`chunk`, `send`), records every
chunk on the topic (`chunks`), and `start_policy` / `kill_policy` run policy nodes (split.role policy,
a SyntheticPolicy in a thread) in the same context and namespace, each with its own executor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy
from vla_harness import NodeHarness, wait_for
from vla_ros.msg import ActionChunk as ActionChunkMsg
from vla_ros.msg import EndEffectorCommand

from vla_ros.control.split import ChunkEnvelope
from vla_ros.core.types import ActionChunk
from vla_ros.ros.chunk_msg import chunk_to_msg
from vla_ros.ros.conversions import time_to_seconds
from vla_ros.ros.node import VlaNode
from vla_ros.ros.qos import chunk_qos, reliable_qos
from vla_ros.runtime.synthetic import SyntheticPolicy

# Fast settings for every node of these tests: 50 Hz control, policy in a thread, normal scheduling.
BASE = {"control.control_rate_hz": 50.0, "execution.inference_process": False,
        "execution.control_priority": 0}
INSTRUCTION = "pick up the cup"
POLICY_NODE = "vla_policy_node"


def seconds(stamp: Time) -> float:
    """builtin_interfaces/Time in seconds."""
    return time_to_seconds(stamp)


class SplitHarness(NodeHarness):
    """A control node (split.role control) + probe with a chunk publisher, + policy nodes on demand."""

    def __init__(self, params: dict | None = None, **kwargs) -> None:
        self._policies: list[tuple[VlaNode, SingleThreadedExecutor, threading.Thread]] = []
        super().__init__(None, {**BASE, "split.role": "control", **(params or {})}, **kwargs)
        try:
            topic = self.node.config.split.chunk_topic
            self.chunk_pub = self.probe.create_publisher(ActionChunkMsg, topic, chunk_qos())
            assert wait_for(lambda: self.chunk_pub.get_subscription_count() > 0, 5.0), \
                "the control node's chunk subscription did not match"
            self.chunks: list[tuple[float, ActionChunkMsg]] = []  # (receipt time, message), probe's own too
            self.probe.create_subscription(ActionChunkMsg, topic, self._on_chunk, reliable_qos(100))
            self.period_s = self.node.config.control.action_period_s
        except BaseException:
            self.close()
            raise

    def _on_chunk(self, msg: ActionChunkMsg) -> None:
        self.chunks.append((self.now(), msg))

    def close(self) -> None:
        """Kill the policy nodes still running, then close the control node and probe."""
        for node, _, _ in list(self._policies):
            self.kill_policy(node)
        super().close()

    # ----- time, readiness -----------------------------------------------------------------------
    def now(self) -> float:
        """The probe's ROS clock [s] (system time, as the nodes')."""
        return self.probe.get_clock().now().nanoseconds * 1e-9

    def ready(self, instruction: str = INSTRUCTION, camera_hz: float = 30.0) -> None:
        """Camera running, instruction in force, armed: the control node HOLDs only for want of a chunk."""
        self.start_camera(camera_hz)
        assert self.arm().success
        self.say(instruction)
        assert wait_for(lambda: self.node.status().instruction == instruction, 5.0), "instruction not taken"
        assert wait_for(lambda: 0.0 <= self.node.status().image_age_s < 0.2, 5.0), "no camera frame"
        assert self.wait_commands(lambda c: c.hold and c.interventions == 0, 2.0) is not None, \
            "no plain HOLD (armed, fresh camera, instruction, no chunk)"

    # ----- hand-made chunks ----------------------------------------------------------------------
    def chunk(self, sequence: int, stamp: float, *, instruction: str = INSTRUCTION,
              direction: tuple[float, float, float] = (1.0, 0.0, 0.0), length: int = 10,
              step_m: float = 0.004, gripper: float = 1.0, period_s: float | None = None,
              inference_s: float = 0.0) -> ActionChunkMsg:
        """An ActionChunk message of `length` equal actions of `step_m` along `direction`."""
        actions = np.zeros((length, 7))
        actions[:, :3] = np.asarray(direction, dtype=np.float64) * step_m
        actions[:, 6] = gripper
        chunk = ActionChunk(actions=actions, stamp=stamp, instruction=instruction,
                            timings={"inference": inference_s})
        envelope = ChunkEnvelope(chunk, sequence, self.period_s if period_s is None else period_s,
                                 "probe", "synthetic")
        return chunk_to_msg(envelope, self.node.config.control.frame_id)

    def send(self, msg: ActionChunkMsg, until: Callable[[], bool] | None = None,
             timeout: float = 3.0) -> None:
        """Publish `msg` and wait until the control node took it: `until()` true, by default one more
        chunk counted in chunks_received (one at a time: the topic keeps only the last 4)."""
        if until is None:
            before = self.node.status().chunks_received
            until = lambda: self.node.status().chunks_received > before  # noqa: E731
        self.chunk_pub.publish(msg)
        assert wait_for(until, timeout), f"chunk {msg.sequence} not taken by the control node"

    # ----- the commands ----------------------------------------------------------------------------
    def moving(self, source_stamp: float) -> list[EndEffectorCommand]:
        """The commands received so far that move the arm from the chunk stamped `source_stamp`."""
        return [c for c in list(self.commands)
                if not c.hold and abs(seconds(c.source_stamp) - source_stamp) < 1e-6]

    def first(self, predicate: Callable[[EndEffectorCommand], bool], start: int = 0,
              timeout: float = 3.0) -> EndEffectorCommand | None:
        """The first command from index `start` on (received before or after this call) satisfying
        `predicate`, waiting up to `timeout` [s] for it; None if none."""
        found: list[EndEffectorCommand] = []

        def check() -> bool:
            found.extend(c for c in list(self.commands)[start:] if predicate(c))
            return bool(found)

        wait_for(check, timeout)
        return found[0] if found else None

    def hold_after(self, source_stamp: float, timeout: float = 3.0) -> EndEffectorCommand | None:
        """The first HOLD after the first command moving from the chunk stamped `source_stamp`."""
        found: list[EndEffectorCommand] = []

        def check() -> bool:
            commands = list(self.commands)
            start = next((i for i, c in enumerate(commands)
                          if not c.hold and abs(seconds(c.source_stamp) - source_stamp) < 1e-6), None)
            if start is None:
                return False
            hold = next((c for c in commands[start:] if c.hold), None)
            if hold is not None:
                found.append(hold)
            return hold is not None

        wait_for(check, timeout)
        return found[0] if found else None

    # ----- policy nodes ----------------------------------------------------------------------------
    def start_policy(self, policy: SyntheticPolicy | None = None, params: dict | None = None) -> VlaNode:
        """A policy node (split.role policy, the policy in a thread), configured, active and spinning in
        its own executor, its chunk publisher matched with the control node and the probe."""
        overrides = {**BASE, "split.role": "policy", **(params or {})}
        node = VlaNode(policy if policy is not None else SyntheticPolicy(latency_s=0.02),
                       node_name=POLICY_NODE, namespace=self.namespace, context=self.context,
                       parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        executor = SingleThreadedExecutor(context=self.context)
        thread = threading.Thread(target=executor.spin, daemon=True)
        self._policies.append((node, executor, thread))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.last_error
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS, node.last_error
        executor.add_node(node)
        thread.start()
        chunk_pub = node._chunk_pub
        assert wait_for(lambda: chunk_pub.get_subscription_count() >= 2
                        and self._subscribed(self.instruction_pub.topic_name)
                        and self._subscribed(self.camera_pub.topic_name), 5.0), "policy node discovery failed"
        return node

    def _subscribed(self, topic: str) -> bool:
        """Whether the policy node has a volatile subscription (the one the probe's volatile publishers
        match) on `topic`, as the probe's graph sees it."""
        infos = self.probe.get_subscriptions_info_by_topic(topic)
        return any(info.node_name == POLICY_NODE and info.qos_profile.durability == DurabilityPolicy.VOLATILE
                   for info in infos)

    def kill_policy(self, node: VlaNode) -> None:
        """Stop a policy node without a transition, as a crash would: executor gone, node destroyed."""
        for entry in list(self._policies):
            if entry[0] is node:
                self._policies.remove(entry)
                _, executor, thread = entry
                executor.shutdown(timeout_sec=1.0)
                if thread.is_alive():
                    thread.join(2.0)
        policy = node.policy
        node.destroy_node()
        if isinstance(policy, SyntheticPolicy):
            policy.release()
