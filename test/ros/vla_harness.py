"""Test harness for vla_node over real rclpy + Fast DDS: one context per test, everything torn down.

`NodeHarness` starts VlaNode (configured, activated) in its own rclpy.Context with a unique
namespace, spins it in a thread, and gives the test a probe node (its own executor thread) with
camera / instruction / e-stop / pose publishers, command / status / diagnostics / rosout
subscribers and the ~/arm and ~/reset_estop clients.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import Log
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import SetBool, Trigger
from vla_ros.msg import EndEffectorCommand, VlaStatus

from vla_ros.core.images import encode_raw
from vla_ros.core.types import ActionChunk, Instruction, Observation, PolicyInputs, observation_problem
from vla_ros.ros.node import VlaNode
from vla_ros.ros.qos import camera_qos, reliable_qos
from vla_ros.runtime.synthetic import SyntheticPolicy

_counter = itertools.count()
RGB = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> bool:
    """Poll `predicate` until it is true or `timeout` [s] passes; returns its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def image_msg(rgb: np.ndarray = RGB, encoding: str = "rgb8") -> Image:
    h, w, step, data = encode_raw(rgb, encoding)
    return Image(height=h, width=w, step=step, encoding=encoding, data=data)


@dataclass
class CameraProprioPolicy(SyntheticPolicy):
    """The synthetic policy taking `cameras` images and a `proprio_dim` vector (its `inputs`): an
    observation that does not fit raises; each one's centre pixels (camera order) and proprio are appended
    as a JSON line to `record_file`, which a test reads whether the policy runs in a thread or a process."""

    cameras: int = 2
    proprio_dim: int = 8
    record_file: str = ""

    @property
    def inputs(self) -> PolicyInputs:
        return PolicyInputs(cameras=self.cameras, proprio_dim=self.proprio_dim, chunk=self.chunk_len)

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        problem = observation_problem(observation, self.inputs)
        if problem is not None:
            raise ValueError(problem)
        centre = [img[img.shape[0] // 2, img.shape[1] // 2].tolist() for img in observation.images]
        proprio = None if observation.proprio is None else observation.proprio.tolist()
        with open(self.record_file, "a") as f:
            f.write(json.dumps({"stamp": observation.stamp, "centre": centre, "proprio": proprio}) + "\n")
        return super().predict(observation, instruction)


def recorded_observations(path: str | Path) -> list[dict]:
    """The JSON lines a CameraProprioPolicy wrote to `path` (none yet: [])."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.endswith("}")]


class NodeHarness:
    """VlaNode + probe node in a private context and namespace."""

    def __init__(self, policy, params: dict | None = None, *, configure: bool = True, activate: bool = True,
                 record_ticks: int = 0, output_type=EndEffectorCommand,
                 wait_first_command: bool = True, **node_kwargs) -> None:
        self.namespace = f"/vla_test_{next(_counter)}"
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self._executors: list[tuple[SingleThreadedExecutor, threading.Thread]] = []
        self._camera_stop = threading.Event()
        self._camera_thread: threading.Thread | None = None
        self.node: VlaNode | None = None
        self.probe = None
        try:
            overrides = [Parameter(k, value=v) for k, v in (params or {}).items()]
            self.node = VlaNode(policy, namespace=self.namespace, context=self.context,
                                parameter_overrides=overrides, record_ticks=record_ticks, **node_kwargs)
            if configure:
                ok = self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
                assert ok, self.node.last_error
            if activate:
                assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            self._spin(self.node)
            self._make_probe(output_type, wait_first_command)
        except BaseException:
            self.close()
            raise

    # ----- plumbing ------------------------------------------------------------------------------
    def _spin(self, node) -> None:
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        self._executors.append((executor, thread))

    def _make_probe(self, output_type, wait_first_command: bool) -> None:
        p = rclpy.create_node("probe", namespace=self.namespace, context=self.context)
        self.probe = p
        cfg = self.node.config.topics
        self.commands: list = []
        self.statuses: list[VlaStatus] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.grippers: list[float] = []
        self.logs: list[Log] = []
        p.create_subscription(output_type, cfg.command, self.commands.append, reliable_qos(100))
        p.create_subscription(Float64, cfg.command + "/gripper", lambda m: self.grippers.append(m.data),
                              reliable_qos(100))
        p.create_subscription(VlaStatus, "vla_node/status", self.statuses.append, reliable_qos())
        p.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, reliable_qos())
        rosout_qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        p.create_subscription(Log, "/rosout", self._on_log, rosout_qos)
        cam_type = CompressedImage if cfg.camera_transport == "compressed" else Image
        self.camera_pub = p.create_publisher(cam_type, cfg.camera, camera_qos(cfg.camera_reliability))
        self.instruction_pub = p.create_publisher(String, cfg.instruction, reliable_qos())
        self.estop_pub = p.create_publisher(Bool, cfg.estop, reliable_qos())
        self.pose_pub = p.create_publisher(PoseStamped, cfg.pose or "unused_pose", reliable_qos())
        self.arm_client = p.create_client(SetBool, "vla_node/arm")
        self.reset_client = p.create_client(Trigger, "vla_node/reset_estop")
        self._spin(p)
        if self.node.core is not None:  # configured: the node's subscriptions exist
            assert wait_for(lambda: self.camera_pub.get_subscription_count() > 0
                            and self.instruction_pub.get_subscription_count() > 0
                            and self.estop_pub.get_subscription_count() > 0, 5.0), "discovery failed"
        if self.node._active and wait_first_command:
            assert wait_for(lambda: len(self.commands) > 0, 5.0), "no command received from vla_node"

    def _on_log(self, msg: Log) -> None:
        if msg.name.endswith("vla_node"):
            self.logs.append(msg)

    def close(self) -> None:
        """Stop the camera, executors and nodes, and shut the context down (always safe to call)."""
        self.stop_camera()
        for executor, thread in self._executors:
            executor.shutdown(timeout_sec=1.0)
            thread.join(2.0)
        self._executors = []
        for n in (self.probe, self.node):
            if n is not None:
                n.destroy_node()
        self.probe = self.node = None
        if self.context.ok():
            rclpy.shutdown(context=self.context)

    # ----- inputs --------------------------------------------------------------------------------
    def publish_image(self, msg=None) -> None:
        self.camera_pub.publish(msg if msg is not None else image_msg())

    def start_camera(self, rate_hz: float = 30.0, make: Callable[[], object] | None = None) -> None:
        """Publish images at `rate_hz` from a thread until stop_camera()."""
        self.stop_camera()
        self._camera_stop.clear()

        def loop() -> None:
            period, t_next = 1.0 / rate_hz, time.monotonic()
            while not self._camera_stop.is_set():
                self.publish_image(make() if make is not None else None)
                t_next += period
                self._camera_stop.wait(max(0.0, t_next - time.monotonic()))

        self._camera_thread = threading.Thread(target=loop, daemon=True)
        self._camera_thread.start()

    def stop_camera(self) -> None:
        self._camera_stop.set()
        if self._camera_thread is not None:
            self._camera_thread.join(2.0)
            self._camera_thread = None

    def say(self, text: str) -> None:
        self.instruction_pub.publish(String(data=text))

    def _call(self, client, request, timeout: float = 5.0):
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"service {client.srv_name} did not answer"
        return future.result()

    def arm(self, on: bool = True) -> SetBool.Response:
        return self._call(self.arm_client, SetBool.Request(data=on))

    def reset_estop(self) -> Trigger.Response:
        return self._call(self.reset_client, Trigger.Request())

    # ----- observations --------------------------------------------------------------------------
    def commands_since(self, index: int) -> list:
        return list(self.commands[index:])

    def wait_commands(self, predicate: Callable[[object], bool], timeout: float = 5.0):
        """Wait for a command received from now on that satisfies `predicate`; returns it or None."""
        start = len(self.commands)
        found: list = []

        def check() -> bool:
            for msg in self.commands[start:]:
                if predicate(msg):
                    found.append(msg)
                    return True
            return False

        wait_for(check, timeout)
        return found[0] if found else None


@contextlib.contextmanager
def harnesses(base: dict, default_policy: Callable[[], object] | None = None) -> Iterator[Callable]:
    """`make(policy=None, params=None, **kw) -> NodeHarness` with `base` parameters under `params`;
    every harness made is closed (and its synthetic policy released) at the end."""
    made: list[NodeHarness] = []

    def make(policy=None, params: dict | None = None, **kw) -> NodeHarness:
        if policy is None and default_policy is not None and "policy_factory" not in kw:
            policy = default_policy()
        h = NodeHarness(policy, {**base, **(params or {})}, **kw)
        made.append(h)
        return h

    try:
        yield make
    finally:
        for h in made:
            policy = h.node.policy if h.node is not None else None
            if isinstance(policy, SyntheticPolicy):
                policy.release()
            h.close()
