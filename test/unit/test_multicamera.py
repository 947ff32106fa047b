"""Several cameras without ROS: the per-camera settings from TopicsConfig, their check against the policy's
inputs, MultiFrame decoding (each camera at the worker's reduced scale, a damaged frame names its camera),
and the inference workers (thread and child process) carrying every image and the proprio vector."""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from test_images import camera_jpeg, damage_scan

from vla_ros.core.cameras import CameraSettings, camera_settings, inputs_problem
from vla_ros.core.config import TopicsConfig
from vla_ros.core.images import CompressedFrame, ImageError, MultiFrame, RawFrame, decode_min_size, encode_raw
from vla_ros.core.proprio import ProprioSpec
from vla_ros.core.schema import ConfigError
from vla_ros.core.types import ActionChunk, Instruction, Observation, PolicyInputs
from vla_ros.runtime.process_worker import ProcessInferenceWorker
from vla_ros.runtime.synthetic import SyntheticPolicy
from vla_ros.runtime.worker import InferenceWorker

RED, BLUE = (200, 30, 30), (20, 40, 220)
PROPRIO = np.array([0.1, -0.2, 0.3, 0.0, 0.0, 1.5, 0.04, 0.035])


@dataclass
class TwoCameraPolicy(SyntheticPolicy):
    """Takes 2 cameras and 8 proprio values; answers with a chunk whose first action's x is the proprio's
    first value and whose gripper is the wrist image's mean blue / 255 (so the parent can check both)."""

    inputs: PolicyInputs = PolicyInputs(cameras=2, proprio_dim=8, chunk=8)

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        actions = np.zeros((8, 7))
        actions[0, 0] = observation.proprio[0]
        actions[:, 6] = observation.extra_images[0][..., 2].mean() / 255.0
        return ActionChunk(actions, observation.stamp, instruction.text)


def solid(rgb: tuple[int, int, int], shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.tile(np.array(rgb, np.uint8), (*shape, 1))


def raw_frame(rgb: np.ndarray, stamp: float) -> RawFrame:
    h, w, step, data = encode_raw(rgb)
    return RawFrame.checked("rgb8", h, w, step, False, data, stamp)


def png_frame(rgb: np.ndarray, stamp: float) -> CompressedFrame:
    ok, buf = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    return CompressedFrame.checked("png", buf.tobytes(), stamp)


def two_cameras(stamp: float = 7.0) -> MultiFrame:
    return MultiFrame((raw_frame(solid(RED), stamp), png_frame(solid(BLUE), stamp + 0.01)),
                      ("camera/image_raw", "wrist/image_raw"), PROPRIO)


# ----- settings ----------------------------------------------------------------------------------
def test_one_camera_by_default_with_the_primary_settings():
    assert camera_settings(TopicsConfig(), 0.5) == (CameraSettings("camera/image_raw", "raw", "auto", 0.5),)


def test_extra_cameras_take_the_primary_settings_unless_given_per_camera():
    topics = TopicsConfig(camera_transport="compressed", camera_reliability="reliable",
                          extra_cameras=["wrist_left", "wrist_right"])
    cams = camera_settings(topics, 0.4)
    assert [c.topic for c in cams] == ["camera/image_raw", "wrist_left", "wrist_right"]
    assert all((c.transport, c.reliability, c.max_age_s) == ("compressed", "reliable", 0.4) for c in cams)
    topics.extra_camera_transports = ["raw", "compressed"]
    topics.extra_camera_reliabilities = ["best_effort", "auto"]
    topics.extra_camera_max_age_s = [0.2, 1]
    cams = camera_settings(topics, 0.4)
    assert [(c.transport, c.reliability, c.max_age_s) for c in cams[1:]] == [
        ("raw", "best_effort", 0.2), ("compressed", "auto", 1.0)]


@pytest.mark.parametrize(("fields", "message"), [
    ({"extra_camera_transports": ["raw"]}, "'topics.extra_camera_transports' has 1 value\\(s\\) for 2"),
    ({"extra_camera_max_age_s": [0.1, 0.2, 0.3]}, "'topics.extra_camera_max_age_s' has 3 value"),
    ({"extra_camera_transports": ["raw", "h264"]}, "must be one of \\['raw', 'compressed'\\]"),
    ({"extra_camera_reliabilities": ["auto", "sometimes"]}, "must be one of \\['auto', 'reliable'"),
    ({"extra_cameras": ["w", "camera/image_raw"]}, "must be non-empty and distinct"),
    ({"extra_cameras": ["w", ""]}, "must be non-empty and distinct"),
])
def test_wrong_per_camera_lists_are_config_errors(fields, message):
    topics = TopicsConfig(extra_cameras=["w", "v"])
    for name, value in fields.items():
        setattr(topics, name, value)
    with pytest.raises(ConfigError, match=message):
        camera_settings(topics, 0.5)


def test_inputs_problem_compares_cameras_and_proprio_with_the_policy():
    two = camera_settings(TopicsConfig(extra_cameras=["wrist"]), 0.5)
    libero = ProprioSpec("pose_gripper", ("l", "r"))
    assert inputs_problem(PolicyInputs(2, 8, 8), two, libero) is None
    assert inputs_problem(PolicyInputs(), two[:1], ProprioSpec()) is None
    assert "takes 1 camera image(s), the node has 2 (camera/image_raw, wrist)" in \
        inputs_problem(PolicyInputs(), two, ProprioSpec())
    assert "takes a proprio vector of 14 value(s), policy.proprio_source 'pose_gripper' gives 8" in \
        inputs_problem(PolicyInputs(2, 14, 25), two, libero)


# ----- MultiFrame --------------------------------------------------------------------------------
def test_multiframe_decodes_every_camera_in_order_with_the_primary_stamp_and_the_proprio():
    observation = two_cameras().decode()
    np.testing.assert_array_equal(observation.rgb, solid(RED))
    assert len(observation.extra_images) == 1
    np.testing.assert_array_equal(observation.extra_images[0], solid(BLUE))
    assert observation.stamp == 7.0
    np.testing.assert_array_equal(observation.proprio, PROPRIO)


def test_multiframe_decodes_each_jpeg_at_the_reduced_scale_it_was_checked_with():
    min_size = decode_min_size(224)  # 448 x 448: a 1280 x 960 frame decodes at 1/2
    big = CompressedFrame.checked("jpeg", camera_jpeg(size=(960, 1280)), 1.0, min_size=min_size)
    small = CompressedFrame.checked("jpeg", camera_jpeg(1, size=(480, 640)), 1.0, min_size=min_size)
    observation = MultiFrame((big, small), ("a", "b")).decode()
    assert [img.shape for img in observation.images] == [(480, 640, 3), (480, 640, 3)]
    assert observation.proprio is None


def test_a_damaged_frame_is_an_image_error_naming_its_camera():
    bad = CompressedFrame.checked("jpeg", damage_scan(camera_jpeg(), "zero"), 1.0)
    with pytest.raises(ImageError, match="camera 'wrist/image_raw': corrupt JPEG"):
        MultiFrame((raw_frame(solid(RED), 1.0), bad), ("camera/image_raw", "wrist/image_raw")).decode()


# ----- the workers -------------------------------------------------------------------------------
class Calls:
    """The worker's callbacks, kept."""

    def __init__(self) -> None:
        self.chunks: list[ActionChunk] = []
        self.rejects: list[tuple[str, Exception]] = []
        self.faults: list[str | None] = []
        self.event = threading.Event()

    def chunk(self, chunk: ActionChunk) -> None:
        self.chunks.append(chunk)
        self.event.set()

    def reject(self, kind: str, exc: Exception) -> None:
        self.rejects.append((kind, exc))
        self.event.set()


def wait_for(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.005)
    return predicate()


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_the_worker_carries_every_image_and_the_proprio_and_rejects_a_damaged_camera(process):
    calls = Calls()
    if process:
        worker = ProcessInferenceWorker(functools.partial(TwoCameraPolicy), calls.chunk, calls.faults.append,
                                        start_timeout_s=60, on_reject=calls.reject)
    else:
        worker = InferenceWorker(TwoCameraPolicy(), calls.chunk, calls.faults.append, on_reject=calls.reject)
    worker.start()
    try:
        assert worker.inputs == PolicyInputs(cameras=2, proprio_dim=8, chunk=8)  # from the child too
        worker.submit_frame(two_cameras(), Instruction("stack the cups", 1.0))
        assert wait_for(lambda: calls.chunks)
        chunk = calls.chunks[0]
        assert chunk.stamp == 7.0 and chunk.actions[0, 0] == PROPRIO[0]
        assert chunk.actions[0, 6] == pytest.approx(BLUE[2] / 255.0)
        bad = CompressedFrame.checked("jpeg", damage_scan(camera_jpeg(), "random"), 8.0)
        worker.submit_frame(MultiFrame((raw_frame(solid(RED), 8.0), bad), ("primary", "wrist")),
                            Instruction("stack the cups", 1.0))
        assert wait_for(lambda: calls.rejects)
        kind, exc = calls.rejects[0]
        assert kind == "image" and "camera 'wrist'" in str(exc)
        assert worker.stats.rejected == 1 and worker.stats.calls_ok == 1 and calls.faults == []
    finally:
        worker.stop(2.0)


def test_a_policy_without_inputs_is_the_single_camera_default():
    worker = InferenceWorker(SyntheticPolicy(), lambda c: None, lambda r: None)
    assert worker.inputs == PolicyInputs(cameras=1, proprio_dim=0, chunk=1)
