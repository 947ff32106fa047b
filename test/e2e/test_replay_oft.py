"""Replay of two-camera + joint-state bags through a tiny OpenVLA-OFT checkpoint (LIBERO form: 2 cameras,
proprio 8 = pose + fingers, chunk 8): determinism, the observation the policy gets, missing inputs, and
the chunk rules' command jumps at chunk switches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bag_fixtures import (
    CAMERA_HZ,
    DURATION_S,
    IMAGE_SIDE,
    OFT_SETTINGS,
    STATE_HZ,
    WRIST_TOPIC,
    make_oft_bag,
    make_oft_checkpoint,
    tree_digest,
)

from vla_ros.bag import replay
from vla_ros.bag.io import NS_PER_S, BagReader
from vla_ros.bag.latency import LatencyModel
from vla_ros.bag.make_bag import ARM_JOINTS, FINGER_JOINTS, JOINT_STATES_TOPIC, arm_state, wrist_frames
from vla_ros.bag.replay_types import ReplayOptions
from vla_ros.bag.replayer import replay_bag
from vla_ros.core.config import NodeConfig, load_config
from vla_ros.core.proprio import pose_gripper_proprio
from vla_ros.core.schema import parse_assignments
from vla_ros.core.types import Observation
from vla_ros.runtime.factory import make_policy
from vla_ros.sim.frames import sim_frames

LATENCY = "fixed:0.1"  # two control ticks, a quarter of a chunk (8 x 0.05 s)
NEAR_A_CHUNK = "fixed:0.36"  # 0.9 of a chunk's duration


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_oft_checkpoint(tmp_path_factory.mktemp("oft") / "oft_libero")


@pytest.fixture(scope="module")
def oft_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_oft_bag(tmp_path_factory.mktemp("oft_bag") / "bag")


def oft_args(checkpoint: Path, *extra: str) -> list[str]:
    """The replay flags of the LIBERO form: the checkpoint and OFT_SETTINGS."""
    return ["--checkpoint", str(checkpoint), *[arg for s in OFT_SETTINGS for arg in ("--set", s)], *extra]


def run(bag: Path, out: Path, checkpoint: Path, *extra: str) -> int:
    return replay.main([str(bag), "--out", str(out), "--latency-model", LATENCY, "--no-progress",
                        *oft_args(checkpoint, *extra)])


def oft_config(checkpoint: Path, *extra: str) -> NodeConfig:
    return load_config(None, parse_assignments([*OFT_SETTINGS, f"policy.checkpoint={checkpoint}", *extra]))


def test_two_cameras_and_joint_states_replay_byte_identical_twice(oft_bag: Path, checkpoint: Path,
                                                                  tmp_path: Path) -> None:
    assert run(oft_bag, tmp_path / "first", checkpoint) == 0
    assert run(oft_bag, tmp_path / "second", checkpoint) == 0
    first, second = tree_digest(tmp_path / "first"), tree_digest(tmp_path / "second")
    assert "plot.png" in first and "replay/replay.mcap" in first
    assert first == second
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    frames = int(round(DURATION_S * CAMERA_HZ))
    assert summary["inputs"]["images"] == frames
    assert summary["inputs"]["extra_cameras"] == {WRIST_TOPIC: {"images": frames}}
    assert summary["inputs"]["joint_states"] == int(round(DURATION_S * STATE_HZ))
    assert "openvla-oft" in summary["inference"]["policy"] and summary["inference"]["errors"] == 0
    assert summary["inference"]["results"]["accepted"] >= 10
    chunks = summary["chunks"]
    assert chunks["chunk_switches"] >= 5 and chunks["chunk_jump_max"] >= chunks["chunk_jump_p95"] > 0
    assert chunks["chunk_delay_s"]["count"] == summary["inference"]["results"]["accepted"]
    assert chunks["dropped_actions"] >= chunks["chunk_delay_s"]["count"]  # 0.1 s late: an action passed
    assert summary["commands"]["moving"] > summary["commands"]["hold"]
    with BagReader(tmp_path / "first" / "replay") as out:
        assert {WRIST_TOPIC, JOINT_STATES_TOPIC} <= set(out.topics)


def test_the_policy_gets_both_cameras_and_the_libero_proprio(oft_bag: Path, checkpoint: Path,
                                                              tmp_path: Path) -> None:
    config = oft_config(checkpoint)
    policy = make_policy(config.policy)
    seen: list[Observation] = []
    predict = policy.predict

    def recording(observation: Observation, instruction):  # noqa: ANN001, ANN202 - Policy.predict
        seen.append(observation)
        return predict(observation, instruction)

    policy.predict = recording
    replay_bag(oft_bag, tmp_path / "out", config, policy,
               ReplayOptions(LatencyModel.parse(LATENCY), plot=False))
    with BagReader(oft_bag) as bag:
        t0 = bag.start_ns / NS_PER_S
    primary = sim_frames(seed=3, width=IMAGE_SIDE, height=IMAGE_SIDE)
    wrist = wrist_frames(primary)
    assert len(seen) >= 10
    for obs in seen:
        index = int(round((obs.stamp - t0) * CAMERA_HZ))  # the frame pair written at the primary's log time
        t_s = index / CAMERA_HZ
        assert np.array_equal(obs.rgb, primary(index, t_s))
        assert len(obs.extra_images) == 1 and np.array_equal(obs.extra_images[0], wrist(index, t_s))
        assert not np.array_equal(obs.rgb, obs.extra_images[0])
        # the newest joint state and pose at the offer (the frame, or an instruction 1 ms after it)
        latest = int((obs.stamp - t0 + 0.001 - 0.0005) * STATE_HZ)
        expected = [pose_gripper_proprio(p, q, joints[-2:]) for joints, p, q in
                    (arm_state(i / STATE_HZ) for i in (latest - 1, latest))]
        assert obs.proprio is not None and obs.proprio.shape == (8,)
        assert any(np.allclose(obs.proprio, e, rtol=0, atol=1e-12) for e in expected)


@pytest.mark.parametrize(("missing", "named"), [
    ("wrist", f"camera (topics.extra_cameras[0]) topic '{WRIST_TOPIC}'"),
    ("robot_state", f"joint states (policy.proprio_source is pose_gripper) topic '{JOINT_STATES_TOPIC}'")])
def test_a_bag_without_the_wrist_camera_or_the_joint_states_is_a_clear_error(
        checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, missing: str, named: str) -> None:
    bag = make_oft_bag(tmp_path / "bag", duration_s=1.0, **{missing: False})
    assert run(bag, tmp_path / "out", checkpoint) == 2
    assert f"has no {named}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_one_camera_settings_for_a_two_camera_policy_are_refused(
        oft_bag: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = [str(oft_bag), "--out", str(tmp_path / "out"), "--checkpoint", str(checkpoint)]
    assert replay.main(args) == 2
    assert "takes 2 camera image(s)" in capsys.readouterr().err


def test_skipping_superseded_calls_stays_exact_for_a_chunked_policy(oft_bag: Path, checkpoint: Path,
                                                                    tmp_path: Path) -> None:
    """A held-back chunk decides when the next inference is due: it is applied before that question.
    Proprio from joint states alone (no pose messages, which apply it anyway), 5 Hz ticks: several frames
    come between two ticks."""
    joints = ", ".join([*ARM_JOINTS, FINGER_JOINTS[0]])
    config = oft_config(checkpoint, "control.control_rate_hz=5", "topics.pose=",
                        "policy.proprio_source=joint_states", f"policy.proprio_joints=[{joints}]")
    policy = make_policy(config.policy)
    calls = {}
    for skip in (False, True):
        options = ReplayOptions(LatencyModel.parse("zero"), plot=False, skip_superseded=skip)
        calls[skip] = replay_bag(oft_bag, tmp_path / str(skip), config, policy, options).summary["inference"]
    lazy, eager = ((tmp_path / name / "commands.csv").read_bytes() for name in ("True", "False"))
    assert lazy == eager and calls[True]["calls"] == calls[False]["calls"] >= 10


def test_crossfade_jumps_less_than_replace_with_latency_near_a_chunk(
        oft_bag: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Inference takes 0.9 of a chunk: chunks start on arrival and the next call starts at once (with
    observation alignment nearly every action would have passed: no switch to measure)."""
    out = tmp_path / "rules"
    arrival = ("--set", "control.chunk_alignment=arrival", "--set", "control.replan_fraction=0")
    args = [str(oft_bag), "--out", str(out), "--latency-model", NEAR_A_CHUNK,
            "--chunk-rules", "crossfade,replace", "--no-plot", *oft_args(checkpoint, *arrival)]
    assert replay.main(args) == 0
    assert "max jump" in capsys.readouterr().out
    rows = {r["rule"]: r for r in json.loads((out / "chunk_rules.json").read_text())["rows"]}
    crossfade, replace = rows["crossfade"], rows["replace"]
    assert crossfade["switches"] == replace["switches"] >= 5  # the same timeline, only the rule differs
    assert 0 < crossfade["jump_max"] < replace["jump_max"] and crossfade["jump_p95"] < replace["jump_p95"]
    assert sorted(p.name for p in out.iterdir()) == ["chunk_rules.json", "crossfade", "replace"]
