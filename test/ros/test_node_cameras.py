"""vla_node with a 2-camera + proprio policy over real rclpy + Fast DDS: both cameras' frames reach the
policy in the checkpoint's order with LIBERO's 8-D proprio, a stale wrist camera holds the arm and the
status names it, a camera count or proprio length the policy does not take refuses to configure, and
a joint state lacking a proprio joint is rejected."""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from sensor_msgs.msg import CompressedImage, JointState  # noqa: E402
from vla_harness import (  # noqa: E402
    CameraProprioPolicy,
    harnesses,
    image_msg,
    recorded_observations,
    wait_for,
)

from vla_ros.ros.qos import camera_qos, reliable_qos  # noqa: E402

WRIST = "wrist/image_raw"
RED, BLUE = (200, 30, 30), (20, 40, 220)
POSITION, S45 = (0.1, -0.2, 0.3), math.sin(math.pi / 4)
FINGERS = {"finger_left": 0.04, "finger_right": 0.035}
EXPECTED_PROPRIO = [*POSITION, 0.0, 0.0, math.pi / 2, 0.04, 0.035]  # position, 90 deg about z, fingers
BASE = {"control.control_rate_hz": 50.0, "control.action_period_s": 0.05, "control.status_rate_hz": 10.0,
        "safety.max_image_age_s": 0.3, "safety.max_pose_age_s": 0.5, "policy.max_inference_s": 1.0,
        "topics.extra_cameras": [WRIST], "topics.extra_camera_transports": ["compressed"],
        "topics.extra_camera_max_age_s": [0.25], "topics.pose": "ee_pose",
        "policy.proprio_source": "pose_gripper", "policy.proprio_gripper_joints": list(FINGERS)}


def solid(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.tile(np.array(rgb, np.uint8), (48, 64, 1))


def png_msg(rgb: tuple[int, int, int]) -> CompressedImage:
    ok, buf = cv2.imencode(".png", solid(rgb)[..., ::-1])
    assert ok
    return CompressedImage(format="png", data=buf.tobytes())


def pose_msg() -> PoseStamped:
    msg = PoseStamped()
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = POSITION
    msg.pose.orientation.z, msg.pose.orientation.w = S45, S45
    return msg


def joints_msg(names: list[str]) -> JointState:
    positions = {"arm_joint": 0.5, **FINGERS}
    return JointState(name=names, position=[positions[n] for n in names])


class Streams:
    """Publishers of the probe node, each repeated at its own rate from a thread until stop()."""

    def __init__(self) -> None:
        self._stops: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []

    def start(self, name: str, publish: Callable[[], None], rate_hz: float) -> None:
        stop = self._stops[name] = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                publish()
                stop.wait(1.0 / rate_hz)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, name: str | None = None) -> None:
        for key, event in self._stops.items():
            if name is None or key == name:
                event.set()
        if name is None:
            for thread in self._threads:
                thread.join(2.0)


@pytest.fixture
def streams():
    made = Streams()
    yield made
    made.stop()


@pytest.fixture
def harness():
    with harnesses(BASE) as make:
        yield make


def policy_factory(tmp_path, **kw) -> functools.partial:
    """A picklable factory of the 2-camera + 8-D proprio test double (chunk 8) recording to tmp_path."""
    return functools.partial(CameraProprioPolicy, latency_s=0.02, chunk_len=8,
                             record_file=str(tmp_path / "observations.jsonl"), **kw)


def feed_everything(h, streams: Streams, joint_names: list[str] | None = None) -> None:
    """Primary camera red (raw), wrist blue (PNG), pose and joint states, all streaming."""
    p = h.probe
    wrist = p.create_publisher(CompressedImage, WRIST, camera_qos("reliable"))
    joints = p.create_publisher(JointState, "joint_states", reliable_qos())
    assert wait_for(lambda: wrist.get_subscription_count() > 0 and joints.get_subscription_count() > 0
                    and h.pose_pub.get_subscription_count() > 0, 5.0), "discovery failed"
    primary, wrist_frame = image_msg(solid(RED)), png_msg(BLUE)
    names = joint_names if joint_names is not None else ["arm_joint", *FINGERS]
    streams.start("pose", lambda: h.pose_pub.publish(pose_msg()), 50.0)
    streams.start("joints", lambda: joints.publish(joints_msg(names)), 50.0)
    streams.start("wrist", lambda: wrist.publish(wrist_frame), 30.0)
    streams.start("primary", lambda: h.publish_image(primary), 30.0)


def moving(m) -> bool:
    return not m.hold and np.linalg.norm([m.translation.x, m.translation.y, m.translation.z]) > 0


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_policy_gets_both_cameras_in_order_and_the_libero_proprio(harness, streams, tmp_path, process):
    factory = policy_factory(tmp_path)
    kw = {"inference_process": True, "policy_factory": factory} if process else {}
    h = harness(None if process else factory(), **kw)
    feed_everything(h, streams)
    h.say("put the bowl on the plate")
    assert h.arm().success
    record = tmp_path / "observations.jsonl"
    assert wait_for(lambda: len(recorded_observations(record)) >= 2, 5.0), h.node.last_error
    for seen in recorded_observations(record):
        assert seen["centre"] == [list(RED), list(BLUE)]  # primary first, then the wrist camera
        np.testing.assert_allclose(seen["proprio"], EXPECTED_PROPRIO, atol=1e-9)
    assert h.wait_commands(moving, 5.0) is not None, h.node.last_error
    assert h.node.worker.stats.errors == 0 and h.node.rejected == {k: 0 for k in h.node.rejected}


def test_a_chunk_of_8_is_replanned_after_half_of_it_played_not_at_every_frame(harness, streams, tmp_path):
    h = harness(policy_factory(tmp_path)())
    feed_everything(h, streams)
    h.say("put the bowl on the plate")
    assert h.arm().success
    assert h.wait_commands(moving, 5.0) is not None, h.node.last_error
    record = tmp_path / "observations.jsonl"
    before = len(recorded_observations(record))
    time.sleep(1.0)  # 30 primary frames; chunks of 8 x 0.05 s, replanned after 0.2 s: about 4-5 calls
    calls = len(recorded_observations(record)) - before
    assert 2 <= calls <= 10, calls


def test_a_stale_wrist_camera_holds_and_the_status_names_it(harness, streams, tmp_path):
    h = harness(policy_factory(tmp_path)())
    feed_everything(h, streams)
    h.say("open the drawer")
    assert h.arm().success
    assert h.wait_commands(moving, 5.0) is not None, h.node.last_error
    streams.stop("wrist")
    assert h.wait_commands(lambda m: m.hold, 2.0) is not None
    reason = f"HOLD: camera '{WRIST}' has no frame in the last 0.25 s"
    assert wait_for(lambda: h.statuses and reason in h.statuses[-1].last_error, 2.0), \
        h.statuses[-1].last_error if h.statuses else "no status"
    record = tmp_path / "observations.jsonl"
    calls = len(recorded_observations(record))
    assert not wait_for(lambda: len(recorded_observations(record)) > calls + 1, 0.5)  # no inference
    assert all(m.hold for m in h.commands_since(len(h.commands) - 5))


@pytest.mark.parametrize(("params", "message"), [
    ({"topics.extra_cameras": [], "topics.extra_camera_transports": [], "topics.extra_camera_max_age_s": []},
     "the policy takes 2 camera image(s), the node has 1 (camera/image_raw)"),
    ({"policy.proprio_source": "none"}, "proprio vector of 8 value(s), policy.proprio_source 'none' gives 0"),
    ({"topics.extra_camera_transports": ["raw", "compressed"]},
     "'topics.extra_camera_transports' has 2 value(s) for 1 extra camera(s)"),
    ({"topics.extra_camera_reliabilities": ["fast"]}, "every entry must be one of ['auto', 'reliable'"),
])
def test_cameras_or_proprio_the_policy_does_not_take_refuse_to_configure(harness, tmp_path, params, message):
    h = harness(policy_factory(tmp_path)(), params, configure=False, activate=False)
    assert h.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert message in h.node.last_error, h.node.last_error
    assert h.node.core is None and h.node.worker is None


def test_a_joint_state_lacking_a_finger_joint_is_rejected_and_nothing_runs(harness, streams, tmp_path):
    h = harness(policy_factory(tmp_path)())
    feed_everything(h, streams, joint_names=["arm_joint", "finger_left"])
    h.say("close the microwave")
    assert h.arm().success
    assert wait_for(lambda: h.node.rejected["proprio"] >= 5, 3.0), h.node.rejected

    def logged(text: str) -> bool:
        return any(text in log.msg for log in h.logs)

    assert wait_for(lambda: logged("rejected proprio: joint state lacks joint(s) 'finger_right'"), 3.0)
    assert wait_for(lambda: logged("no inference: no joint state with finger_left, finger_right"), 3.0)
    assert recorded_observations(tmp_path / "observations.jsonl") == []
    assert all(m.hold for m in h.commands_since(0))
