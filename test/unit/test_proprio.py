"""The proprio conversions of vla_ros.core.proprio against hand-computed values (no ROS)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla_ros.core.proprio import (
    POSE_GRIPPER_DIM,
    ProprioError,
    axis_angle_from_quat,
    current_proprio,
    pick_joint_positions,
    pose_gripper_proprio,
    proprio_spec,
    robosuite_axis_angle,
)
from vla_ros.core.schema import ConfigError
from vla_ros.core.types import Pose

S45 = math.sin(math.pi / 4)


def libero_quat2axisangle(q: np.ndarray) -> np.ndarray:
    """robosuite's formula (LIBERO's proprio): xyz * 2 acos(w) / sqrt(1 - w^2); no sign flip."""
    den = math.sqrt(1.0 - q[3] * q[3])
    return np.zeros(3) if math.isclose(den, 0.0) else q[:3] * 2.0 * math.acos(q[3]) / den


@pytest.mark.parametrize(("quat", "expected"), [
    ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),  # identity: zeros
    ((0.0, 0.0, S45, S45), (0.0, 0.0, math.pi / 2)),  # 90 deg about z
    ((1.0, 0.0, 0.0, 0.0), (math.pi, 0.0, 0.0)),  # 180 deg about x
    ((0.5, 0.5, 0.5, 0.5), (2 * math.pi / 3 / math.sqrt(3),) * 3),  # 120 deg about (1, 1, 1)
    ((0.0, -0.5, 0.0, math.sqrt(3) / 2), (0.0, -math.pi / 3, 0.0)),  # -60 deg about y
])
def test_axis_angle_of_known_rotations(quat, expected):
    np.testing.assert_allclose(axis_angle_from_quat(np.array(quat)), expected, atol=1e-12)


def test_w_below_zero_gives_the_same_vector_as_its_positive_twin_with_angle_at_most_pi():
    rng = np.random.default_rng(0)
    for q in rng.normal(size=(200, 4)):
        q /= np.linalg.norm(q)
        v, twin = axis_angle_from_quat(q), axis_angle_from_quat(-q)
        np.testing.assert_allclose(v, twin, atol=1e-12)
        assert np.linalg.norm(v) <= math.pi + 1e-12
        positive = q if q[3] >= 0 else -q
        np.testing.assert_allclose(v, libero_quat2axisangle(positive), atol=1e-9)  # robosuite for w >= 0


def test_w_below_zero_is_flipped_where_robosuite_would_give_an_angle_above_pi():
    q = np.array([0.0, 0.0, S45, -S45])  # 270 deg about z == -90 deg about z
    np.testing.assert_allclose(axis_angle_from_quat(q), [0.0, 0.0, -math.pi / 2], atol=1e-12)
    np.testing.assert_allclose(libero_quat2axisangle(q), [0.0, 0.0, 1.5 * math.pi], atol=1e-12)


@pytest.mark.parametrize("angle", [1e-3, 1e-7, 1e-10, 1e-14])
def test_near_identity_keeps_full_relative_precision(angle):
    q = np.array([0.0, math.sin(angle / 2), 0.0, math.cos(angle / 2)])
    v = axis_angle_from_quat(q)
    assert v[0] == 0.0 and v[2] == 0.0
    assert v[1] == pytest.approx(angle, rel=1e-12)


def test_pose_gripper_proprio_is_position_axis_angle_fingers():
    v = pose_gripper_proprio([0.1, -0.2, 0.3], [0.0, 0.0, 2.0, 2.0], [0.04, -0.039])  # not normalized
    assert v.shape == (POSE_GRIPPER_DIM,) and v.dtype == np.float64
    np.testing.assert_allclose(v, [0.1, -0.2, 0.3, 0.0, 0.0, math.pi / 2, 0.04, -0.039], atol=1e-12)


@pytest.mark.parametrize(("position", "orientation", "fingers", "message"), [
    ([0.1, 0.2], [0, 0, 0, 1], [0, 0], "position needs 3"),
    ([0.1, 0.2, 0.3], [0, 0, 0, 0], [0, 0], "zero quaternion"),
    ([0.1, 0.2, 0.3], [0, 0, 0, 1], [0.0], "finger positions needs 2"),
    ([0.1, np.nan, 0.3], [0, 0, 0, 1], [0, 0], "NaN or Inf"),
    ([0.1, 0.2, 0.3], [0, 0, 0, 1], ["a", "b"], "not numeric"),
])
def test_pose_gripper_proprio_rejects_bad_input(position, orientation, fingers, message):
    with pytest.raises(ProprioError, match=message):
        pose_gripper_proprio(position, orientation, fingers)


def test_joint_positions_are_picked_by_name_in_the_checkpoint_order():
    names = ["waist", "shoulder", "elbow", "finger_left", "finger_right"]
    values = pick_joint_positions(names, [0.0, 0.1, 0.2, 0.03, -0.03], ["finger_right", "waist", "elbow"])
    np.testing.assert_array_equal(values, [-0.03, 0.0, 0.2])


def test_a_repeated_joint_name_takes_its_first_position():
    np.testing.assert_array_equal(pick_joint_positions(["a", "b", "a"], [1.0, 2.0, 3.0], ["a"]), [1.0])


@pytest.mark.parametrize(("names", "positions", "message"), [
    (["a", "b"], [1.0, 2.0], "lacks joint\\(s\\) 'c'"),
    (["a", "b", "c"], [1.0, 2.0], "3 names but 2 positions"),
    (["a", "b", "c"], [1.0, math.inf, 0.0], "NaN or Inf"),
])
def test_joint_positions_reject_missing_joints_and_bad_values(names, positions, message):
    with pytest.raises(ProprioError, match=message):
        pick_joint_positions(names, positions, ["a", "b", "c"])


def test_proprio_spec_dims_and_joints():
    aloha = [f"{side}_{j}" for side in ("left", "right") for j in range(7)]
    assert proprio_spec("none", [], [], "").dim == 0
    assert proprio_spec("joint_states", aloha, [], "").dim == 14
    spec = proprio_spec("pose_gripper", [], ["finger_l", "finger_r"], "ee_pose")
    assert (spec.dim, spec.joints) == (8, ("finger_l", "finger_r"))


@pytest.mark.parametrize(("args", "message"), [
    (("joints", [], [], ""), "must be one of"),
    (("joint_states", [], [], ""), "policy.proprio_joints.*at least one"),
    (("joint_states", ["a", "a"], [], ""), "distinct"),
    (("pose_gripper", [], ["l", "r"], ""), "needs 'topics.pose'"),
    (("pose_gripper", [], ["l"], "ee_pose"), "policy.proprio_gripper_joints.*2 joint names"),
])
def test_proprio_spec_refuses_unusable_settings(args, message):
    with pytest.raises(ConfigError, match=message):
        proprio_spec(*args)


def test_current_proprio_of_each_source_and_its_age_limit():
    fingers = (np.array([0.04, 0.035]), 10.0)
    pose = Pose(np.array([0.1, -0.2, 0.3]), np.array([0.0, 0.0, S45, S45]), stamp=10.1)
    gripper = proprio_spec("pose_gripper", [], ["l", "r"], "ee_pose")
    np.testing.assert_allclose(current_proprio(gripper, fingers, pose, 10.4, 0.5),
                               [0.1, -0.2, 0.3, 0.0, 0.0, math.pi / 2, 0.04, 0.035], atol=1e-12)
    with pytest.raises(ProprioError, match="no joint state with l, r .* last 0.5 s"):
        current_proprio(gripper, fingers, pose, 10.6, 0.5)  # the joint state is 0.6 s old
    with pytest.raises(ProprioError, match="no end-effector pose"):
        current_proprio(gripper, (fingers[0], 10.6), pose, 10.7, 0.5)  # the pose is 0.6 s old
    with pytest.raises(ProprioError, match="no joint state"):
        current_proprio(gripper, None, pose, 10.2, 0.5)
    joints = proprio_spec("joint_states", ["a", "b"], [], "")
    values = current_proprio(joints, (np.array([1.0, 2.0]), 5.0), None, 5.2, 0.5)
    np.testing.assert_array_equal(values, [1.0, 2.0])
    assert current_proprio(proprio_spec("none", [], [], ""), None, None, 0.0, 0.5) is None


def test_libero_proprio_keeps_the_quaternion_sign_as_robosuite_does():
    """LIBERO's data used robosuite's quat2axisangle: angle 2 acos(w), no sign flip (w < 0: above pi)."""
    axis = np.array([0.0, 0.6, 0.8])
    for angle in (0.3, 2.0, 3.0):
        q = np.concatenate([axis * math.sin(angle / 2), [math.cos(angle / 2)]])
        for quat in (q, -q):
            got = pose_gripper_proprio([0.1, 0.2, 0.3], quat, [0.04, -0.04])[3:6]
            w = quat[3]
            expected = quat[:3] * 2.0 * math.acos(w) / math.sqrt(1.0 - w * w)  # robosuite's formula
            np.testing.assert_allclose(got, expected, atol=1e-12)
    assert np.linalg.norm(pose_gripper_proprio([0, 0, 0], -q, [0, 0])[3:6]) > math.pi
    np.testing.assert_array_equal(robosuite_axis_angle(np.array([0.0, 0.0, 0.0, 1.0])), np.zeros(3))
