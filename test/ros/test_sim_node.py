"""vla_sim over real rclpy + Fast DDS: camera and pose out, commands in, reset, success."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from vla_ros.msg import EndEffectorCommand  # noqa: E402

from vla_ros.ros.sim_node import SimNode  # noqa: E402
from vla_ros.sim.expert import expert_action  # noqa: E402


class Probe:
    """A second node that talks to vla_sim the way vla_node and the demo do."""

    def __init__(self, context) -> None:
        self.node = rclpy.create_node("sim_probe", context=context)
        self.images: list[Image] = []
        self.poses: list[PoseStamped] = []
        self.success: list[bool] = []
        self.tasks: list[str] = []
        self.node.create_subscription(Image, "camera/image_raw", self.images.append, 5)
        self.node.create_subscription(PoseStamped, "t/pose", self.poses.append, 10)
        self.node.create_subscription(Bool, "sim/success", lambda m: self.success.append(m.data), 10)
        qos = rclpy.qos.QoSProfile(depth=1, durability=rclpy.qos.DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, "sim/task", lambda m: self.tasks.append(m.data), qos)
        self.commands = self.node.create_publisher(EndEffectorCommand, "t/command", 10)
        self.reset = self.node.create_client(Trigger, "vla_sim/reset")

    def command(self, translation=(0.0, 0.0, 0.0), gripper=1.0, hold=False) -> None:
        msg = EndEffectorCommand()
        msg.header.frame_id = "tool0"
        msg.translation.x, msg.translation.y, msg.translation.z = (float(v) for v in translation)
        msg.gripper = float(gripper)
        msg.hold = hold
        self.commands.publish(msg)


def wait_for(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.fixture()
def graph():
    context = rclpy.Context()
    rclpy.init(context=context)
    sim = SimNode(context=context, parameter_overrides=[
        Parameter("pose_topic", value="t/pose"), Parameter("command_topic", value="t/command"),
        Parameter("camera_rate_hz", value=20.0), Parameter("seed", value=11),
        Parameter("task_kind", value="pick")])
    probe = Probe(context)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    executor.add_node(sim)
    executor.add_node(probe.node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: probe.images and probe.poses and probe.tasks), "nothing from vla_sim"
        yield sim, probe
    finally:
        executor.shutdown()
        thread.join(timeout=5.0)
        sim.destroy_node()
        probe.node.destroy_node()
        rclpy.try_shutdown(context=context)


def latest_position(probe: Probe) -> np.ndarray:
    p = probe.poses[-1].pose.position
    return np.array([p.x, p.y, p.z])


def test_publishes_rgb_frames_and_the_task(graph):
    sim, probe = graph
    image = probe.images[-1]
    assert (image.height, image.width, image.encoding) == (224, 224, "rgb8")
    assert image.step == 224 * 3 and len(image.data) == 224 * 224 * 3
    assert probe.tasks[-1] == sim.task.instruction and sim.task.kind == "pick"


def test_commands_move_the_pose_within_the_profile_limits(graph):
    sim, probe = graph
    start = latest_position(probe)
    for _ in range(5):
        probe.command((0.01, 0.0, -0.005))
    assert wait_for(lambda: sim.commands_executed >= 5)
    assert wait_for(lambda: latest_position(probe)[0] > start[0] + 0.045)
    np.testing.assert_allclose(latest_position(probe) - start, [0.05, 0.0, -0.025], atol=1e-6)

    before = latest_position(probe)
    probe.command((0.3, 0.0, 0.0))  # far beyond the 0.025 m per-tick limit
    probe.command((0.3, 0.0, 0.0), hold=True)  # HOLD: no motion whatever the fields say
    assert wait_for(lambda: sim.commands_executed >= 7)
    time.sleep(0.1)
    moved = latest_position(probe) - before
    assert moved[0] == pytest.approx(sim.limits.max_translation_step_m, abs=1e-6)


def test_reset_starts_a_new_scene_and_answers_with_the_instruction(graph):
    sim, probe = graph
    assert probe.reset.wait_for_service(timeout_sec=5.0)
    old_objects = [o.name for o in sim.world.state.objects]
    future = probe.reset.call_async(Trigger.Request())
    assert wait_for(future.done)
    response = future.result()
    assert response.success and response.message == sim.task.instruction
    assert wait_for(lambda: probe.tasks[-1] == response.message)
    assert sim.episodes == 2
    new_objects = [o.name for o in sim.world.state.objects]
    assert new_objects != old_objects  # seeds 11 and 12 give different scenes


def test_driving_the_expert_over_topics_reports_success(graph):
    sim, probe = graph
    assert wait_for(lambda: probe.success and probe.success[-1] is False)
    for _ in range(80):  # 2 ticks per expert action, like vla_node at 10 Hz with 0.2 s actions
        action = expert_action(sim.world.state, sim.task)
        for _ in range(2):
            count = sim.commands_executed
            probe.command(action[:3] / 2, action[6])
            assert wait_for(lambda c=count: sim.commands_executed > c)
            time.sleep(0.05)  # the fingers move with the time between commands
        if sim.episode_success:
            break
    assert sim.episode_success
    assert wait_for(lambda: probe.success[-1] is True)


def test_help_prints_usage_without_starting_a_node(capsys):
    from vla_ros.ros.sim_node import main

    assert main(["--help"]) == 0
    assert "usage: vla-ros sim" in capsys.readouterr().out
