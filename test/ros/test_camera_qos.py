"""Camera QoS (issue 15, case 2): `auto` reliability follows the publishers; losses are counted.

Real rclpy + Fast DDS: each test has its own context, a subscriber node and a publisher node.
"""

from __future__ import annotations

import itertools
import threading
from types import SimpleNamespace

import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vla_harness import NodeHarness, image_msg, wait_for  # noqa: E402
from vla_ros.msg import VlaStatus  # noqa: E402

from vla_ros.core.config import NodeConfig  # noqa: E402
from vla_ros.ros.camera import CameraLinkStats, CameraSubscription, choose_reliability, likely_cause  # noqa: E402
from vla_ros.ros.diagnostics import diagnostic_array  # noqa: E402
from vla_ros.ros.qos import camera_qos  # noqa: E402
from vla_ros.runtime.synthetic import SyntheticPolicy  # noqa: E402

R, BE = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
_ns = itertools.count()


# ----- the pure rule ----------------------------------------------------------------------------
def test_rule_reliable_iff_every_publisher_is_reliable():
    assert choose_reliability([]) == "reliable"  # no publisher yet: what camera drivers publish
    assert choose_reliability([R]) == "reliable"
    assert choose_reliability([R, R]) == "reliable"
    assert choose_reliability([R, BE]) == "best_effort"
    assert choose_reliability([BE]) == "best_effort"
    assert choose_reliability([ReliabilityPolicy.SYSTEM_DEFAULT]) == "best_effort"  # unknown: match anything


def test_likely_cause_points_to_the_readme():
    assert likely_cause("auto", "reliable", 0, 0) == ""
    assert "Large images over DDS" in likely_cause("auto", "best_effort", 12, 0)
    assert "shared memory" in likely_cause("best_effort", "best_effort", 1, 0)
    assert "auto or best_effort" in likely_cause("reliable", "reliable", 0, 1)
    assert "Large images over DDS" in likely_cause("reliable", "reliable", 3, 0)
    with pytest.raises(ValueError):
        camera_qos("sometimes")
    assert camera_qos("auto").reliability == R and camera_qos("auto").depth == 5


def test_diagnostics_inputs_show_camera_losses_and_why():
    s = VlaStatus(state=VlaStatus.ARMED, state_name="ARMED", image_age_s=2.0)
    stats = CameraLinkStats("auto", "best_effort", 1, frames_lost=140, incompatible_qos=0, switches=0)
    arr = diagnostic_array("/vla_node", s, NodeConfig(), active=True, worker=None, tick_errors=0,
                           skipped_no_pose=0, rejected={}, safety_counters={}, camera=stats)
    inputs = [st for st in arr.status if st.name.endswith("inputs")][0]
    values = {kv.key: kv.value for kv in inputs.values}
    assert inputs.level == DiagnosticStatus.WARN and "shared memory" in inputs.message
    assert values["camera_reliability"] == "best_effort (auto)" and values["camera_frames_lost"] == "140"
    assert values["camera_incompatible_qos"] == "0" and "Large images over DDS" in values["camera_hint"]


def test_diagnostics_name_the_stale_extra_camera_and_its_losses():
    s = VlaStatus(state=VlaStatus.HOLDING, state_name="HOLDING", image_age_s=0.05,
                  stale_camera="wrist/image_raw")
    primary = CameraLinkStats("auto", "reliable", 1, frames_lost=0, incompatible_qos=0, switches=0)
    wrist = CameraLinkStats("auto", "best_effort", 1, frames_lost=30, incompatible_qos=0, switches=0)
    arr = diagnostic_array("/vla_node", s, NodeConfig(), active=True, worker=None, tick_errors=0,
                           skipped_no_pose=0, rejected={}, safety_counters={}, camera=primary,
                           extra_cameras=[("wrist/image_raw", wrist)])
    inputs = [st for st in arr.status if st.name.endswith("inputs")][0]
    values = {kv.key: kv.value for kv in inputs.values}
    assert inputs.level == DiagnosticStatus.WARN
    assert "camera 'wrist/image_raw'" in inputs.message and "shared memory" in inputs.message
    assert values["camera2_topic"] == "wrist/image_raw" and values["camera2_frames_lost"] == "30"
    assert values["camera_frames_lost"] == "0"


# ----- over DDS ---------------------------------------------------------------------------------
class Pair:
    """A subscriber node and a publisher node in one private context, both spun in threads."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        ns = f"/cam_qos_{next(_ns)}"
        self.sub_node = rclpy.create_node("vla_node", namespace=ns, context=self.context)
        self.pub_node = rclpy.create_node("camera_driver", namespace=ns, context=self.context)
        self.received: list = []
        self.camera: CameraSubscription | None = None
        self._spinners = []
        for node in (self.sub_node, self.pub_node):
            ex = SingleThreadedExecutor(context=self.context)
            ex.add_node(node)
            t = threading.Thread(target=ex.spin, daemon=True)
            t.start()
            self._spinners.append((ex, t))

    def subscribe(self, reliability: str) -> CameraSubscription:
        self.camera = CameraSubscription(self.sub_node, "camera/image_raw", Image, self.received.append,
                                         reliability, raw=True, poll_s=0.2)
        return self.camera

    def publisher(self, reliability: str):
        return self.pub_node.create_publisher(Image, "camera/image_raw", camera_qos(reliability))

    def receives(self, pub, timeout: float = 3.0) -> bool:
        """Publish until a frame arrives (or `timeout` passes)."""
        start = len(self.received)

        def one() -> bool:
            pub.publish(image_msg())
            return len(self.received) > start

        return wait_for(one, timeout, step=0.05)

    def close(self) -> None:
        for ex, t in self._spinners:
            ex.shutdown(timeout_sec=1.0)
            t.join(2.0)
        if self.camera is not None:
            self.camera.destroy()
            self.camera.destroy()  # twice is harmless
        self.sub_node.destroy_node()
        self.pub_node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.close()


def _sees_publisher(p: Pair) -> bool:
    return len(p.sub_node.get_publishers_info_by_topic("camera/image_raw")) > 0


def test_auto_with_a_reliable_publisher_subscribes_reliable_and_receives(pair):
    pub = pair.publisher("reliable")
    assert wait_for(lambda: _sees_publisher(pair), 3.0)
    cam = pair.subscribe("auto")
    assert cam.reliability == "reliable" and cam.mode == "auto"
    assert pair.receives(pub)
    assert cam.switches == 0 and cam.incompatible == 0 and cam.lost == 0
    assert cam.stats().publishers == 1 and cam.stats().hint == ""


def test_auto_with_a_best_effort_publisher_subscribes_best_effort_and_receives(pair):
    pub = pair.publisher("best_effort")
    assert wait_for(lambda: _sees_publisher(pair), 3.0)
    cam = pair.subscribe("auto")
    assert cam.reliability == "best_effort"
    assert pair.receives(pub)
    assert cam.switches == 0


def test_auto_switches_when_a_best_effort_publisher_appears_and_back_when_it_leaves(pair):
    cam = pair.subscribe("auto")
    assert cam.reliability == "reliable"  # no publisher yet
    reliable_pub = pair.publisher("reliable")
    assert pair.receives(reliable_pub)
    be_pub = pair.publisher("best_effort")  # mixed: the reliable subscription cannot match it
    assert wait_for(lambda: cam.reliability == "best_effort", 3.0)
    assert cam.switches == 1
    assert pair.receives(be_pub) and pair.receives(reliable_pub)
    pair.pub_node.destroy_publisher(be_pub)  # only reliable publishers again
    assert wait_for(lambda: cam.reliability == "reliable", 3.0)
    assert pair.receives(reliable_pub)


def test_explicit_reliable_stays_reliable_and_counts_the_incompatible_publisher(pair):
    cam = pair.subscribe("reliable")
    pub = pair.publisher("best_effort")
    assert wait_for(lambda: cam.incompatible > 0, 3.0)
    assert cam.reliability == "reliable" and cam.switches == 0
    assert not pair.receives(pub, timeout=0.5)
    assert "auto or best_effort" in cam.stats().hint


def test_message_lost_events_are_counted(pair):
    cam = pair.subscribe("best_effort")
    cam._on_message_lost(SimpleNamespace(total_count=7, total_count_change=7))
    cam._on_message_lost(SimpleNamespace(total_count=9, total_count_change=2))
    assert cam.lost == 9 and "shared memory" in cam.stats().hint


def test_vla_node_defaults_to_auto_and_exposes_the_camera_subscription():
    h = NodeHarness(SyntheticPolicy(latency_s=0.01), {"control.control_rate_hz": 20.0})
    try:
        assert h.node.config.topics.camera_reliability == "auto"
        cam = h.node.camera_sub
        assert wait_for(lambda: cam.stats().publishers == 1, 3.0)
        assert cam.reliability == "reliable"  # the harness's probe publishes reliable
        h.publish_image()
        assert wait_for(lambda: h.node.core.image_stamp is not None, 3.0)
    finally:
        h.node.policy.release()
        h.close()


def test_vla_node_diagnostics_show_the_camera_link():
    # Needs ros/node.py `_on_status` to pass `camera=self.camera_sub.stats()` to diagnostic_array.
    h = NodeHarness(SyntheticPolicy(latency_s=0.01), {"control.control_rate_hz": 20.0,
                                                      "control.status_rate_hz": 10.0})
    try:
        def camera_values() -> dict:
            for arr in reversed(h.diagnostics):
                for st in arr.status:
                    if st.name.endswith("inputs"):
                        return {kv.key: kv.value for kv in st.values}
            return {}

        assert wait_for(lambda: camera_values().get("camera_publishers") == "1", 3.0), camera_values()
        values = camera_values()
        assert values["camera_reliability"] == "reliable (auto)" and values["camera_frames_lost"] == "0"
    finally:
        h.node.policy.release()
        h.close()
