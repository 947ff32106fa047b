"""vla_node with a compressed camera sending damaged JPEGs (real rclpy + Fast DDS): the damaged frames are
counted as rejected inputs, never reach the policy, and the next good frame recovers the node."""

from __future__ import annotations

import itertools
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import CompressedImage  # noqa: E402
from vla_harness import NodeHarness, wait_for  # noqa: E402

from vla_ros.core.types import ActionChunk, Instruction, Observation  # noqa: E402
from vla_ros.runtime.synthetic import SyntheticPolicy  # noqa: E402

PARAMS = {"topics.camera_transport": "compressed", "control.control_rate_hz": 50.0,
          "control.action_period_s": 0.1, "control.status_rate_hz": 10.0, "safety.max_image_age_s": 0.3,
          "policy.max_inference_s": 1.0}


def good_jpeg() -> tuple[bytes, np.ndarray]:
    """A 320x240 camera-like JPEG and the RGB image it decodes to."""
    rng = np.random.default_rng(11)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (7, 7), 2)
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    jpeg = buf.tobytes()
    return jpeg, cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def damaged_jpegs(jpeg: bytes) -> list[bytes]:
    """Scan damage that keeps the headers and the end marker: zeroed, random bytes, cut short."""
    sos = jpeg.index(b"\xff\xda")
    start, end = sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], "big"), len(jpeg) - 2
    mid, rng = (start + end) // 2, np.random.default_rng(5)
    return [jpeg[:mid] + bytes(1024) + jpeg[mid + 1024:],
            jpeg[:mid] + rng.integers(0, 256, 1024, np.uint8).tobytes() + jpeg[mid + 1024:],
            jpeg[:mid] + b"\xff\xd9"]


class RecordingPolicy(SyntheticPolicy):
    """The synthetic policy, keeping a copy of every image it was given."""

    def __init__(self) -> None:
        super().__init__(latency_s=0.02)
        self.images: list[np.ndarray] = []

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        self.images.append(observation.rgb.copy())
        return super().predict(observation, instruction)


@pytest.fixture
def harness():
    made: list[NodeHarness] = []

    def make(policy) -> NodeHarness:
        h = NodeHarness(policy, PARAMS)
        made.append(h)
        return h

    yield make
    for h in made:
        if h.node is not None and isinstance(h.node.policy, SyntheticPolicy):
            h.node.policy.release()
        h.close()


def test_damaged_jpegs_are_rejected_never_reach_the_policy_and_the_node_recovers(harness):
    policy = RecordingPolicy()
    h = harness(policy)
    jpeg, rgb = good_jpeg()
    for data in damaged_jpegs(jpeg):  # the old decode path turned each into a partly grey image
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    bad = itertools.cycle(CompressedImage(format="jpeg", data=d) for d in damaged_jpegs(jpeg))
    h.say("pick up the cup")
    assert h.arm(True).success
    h.start_camera(30.0, make=lambda: next(bad))
    assert wait_for(lambda: h.node.rejected["image"] >= 10, 5.0), h.node.rejected
    time.sleep(0.2)
    h.stop_camera()
    assert policy.images == []  # not one damaged frame reached the model
    assert h.node.status().rejected_inputs >= 10
    assert all(m.hold for m in h.commands)  # no motion from garbage
    # Damaged and good frames interleaved: only the good ones reach the policy, the arm moves again.
    rejected = h.node.rejected["image"]
    good = CompressedImage(format="jpeg", data=jpeg)
    mixed = itertools.cycle([next(bad), good, next(bad), next(bad), good])
    h.start_camera(30.0, make=lambda: next(mixed))
    assert h.wait_commands(lambda m: not m.hold, 5.0) is not None, h.node.last_error
    assert wait_for(lambda: h.node.rejected["image"] > rejected + 3, 5.0)
    h.stop_camera()
    assert len(policy.images) >= 1
    for seen in policy.images:
        np.testing.assert_array_equal(seen, rgb)
    assert h.node.worker.stats.errors == 0 and h.node.tick_errors == 0
