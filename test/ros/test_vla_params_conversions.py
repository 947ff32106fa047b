"""vla_ros.ros.params (descriptors, validation, config/vla.yaml) and vla_ros.ros.conversions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from vla_ros.control.safety import Command, Intervention  # noqa: E402
from vla_ros.core.config import NodeConfig, load_config  # noqa: E402
from vla_ros.core.inputs import InputError, decode_string_cdr, sanitize_instruction  # noqa: E402
from vla_ros.core.schema import ConfigError, iter_fields  # noqa: E402
from vla_ros.core.types import Pose  # noqa: E402
from vla_ros.ros.conversions import (  # noqa: E402
    command_to_end_effector,
    command_to_pose_target,
    command_to_twist,
    pose_from_msg,
    quat_from_rpy,
    quat_multiply,
    raw_camera_to_rgb,
    rotvec_from_quat,
    seconds_to_time,
    time_to_seconds,
)
from vla_ros.ros.params import (  # noqa: E402
    config_to_parameters,
    declare_config_parameters,
    read_config_parameters,
    render_parameters_yaml,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_node():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = []

    def make(overrides=None):
        node = rclpy.create_node(f"p{len(nodes)}", context=ctx, parameter_overrides=overrides or [])
        nodes.append(node)
        return node

    yield make
    for n in nodes:
        n.destroy_node()
    rclpy.shutdown(context=ctx)


def test_every_leaf_declared_with_descriptor(make_node):
    node = make_node()
    declare_config_parameters(node)
    for name, value, field in iter_fields(NodeConfig()):
        d = node.describe_parameter(name)
        assert d.read_only and d.description, name
        meta = field.metadata
        if meta.get("range") is not None and isinstance(value, float):
            assert d.type == ParameterType.PARAMETER_DOUBLE
            assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == meta["range"]
        if meta.get("choices") is not None:
            assert all(str(c) in d.additional_constraints for c in meta["choices"])
    assert read_config_parameters(node) == NodeConfig()
    result = node.set_parameters([Parameter("control.control_rate_hz", value=20.0)])[0]
    assert not result.successful  # read-only after start


def test_integer_value_accepted_for_a_float_parameter(make_node):
    node = make_node([Parameter("control.control_rate_hz", value=50),
                      Parameter("safety.workspace_min_m", value=[-1, -1, 0])])
    declare_config_parameters(node)
    cfg = read_config_parameters(node)
    assert cfg.control.control_rate_hz == 50.0 and cfg.safety.workspace_min_m == [-1.0, -1.0, 0.0]


@pytest.mark.parametrize("name, value, words", [
    ("control.control_rate_hz", 0.5, r"\[1.0, 1000.0\]"),
    ("safety.max_linear_velocity_mps", -1.0, r"\[0.0, 3.0\]"),
    ("policy.backend", "tensorflow", "must be one of"),
    ("safety.workspace_min_m", [1.0, 1.0, 1.0], "below"),
    ("control.frame_id", "", "must not be empty"),
    ("control.status_rate_hz", "fast", "must be a number"),
])
def test_invalid_values_name_the_parameter(make_node, name, value, words):
    node = make_node([Parameter(name, value=value)])
    with pytest.raises(ConfigError, match=words) as info:
        declare_config_parameters(node)
        read_config_parameters(node)
    assert name in str(info.value) or name.split(".")[0] in str(info.value)


def test_config_round_trips_through_parameters(make_node):
    cfg = load_config(None, {"control.control_rate_hz": 42.0, "topics.output_mode": "twist",
                             "safety.workspace_max_m": [0.5, 0.5, 0.9]})
    node = make_node(config_to_parameters(cfg))
    declare_config_parameters(node)
    assert read_config_parameters(node) == cfg


def test_config_vla_yaml_is_generated_and_documents_every_parameter():
    text = (ROOT / "config" / "vla.yaml").read_text()
    assert text == render_parameters_yaml(), \
        "config/vla.yaml is out of date: python -m vla_ros.ros.params > config/vla.yaml"
    assert load_config(ROOT / "config" / "vla.yaml") == NodeConfig()
    lines = text.splitlines()
    for name, _, _ in iter_fields(NodeConfig()):
        leaf = name.split(".")[-1]
        idx = [i for i, line in enumerate(lines) if line.strip().startswith(leaf + ":")]
        assert idx, f"{name} missing from config/vla.yaml"
        assert lines[idx[0] - 1].strip().startswith("#"), f"{name} has no comment in config/vla.yaml"


# ----- conversions -------------------------------------------------------------------------------
def test_time_round_trip():
    t = 1_700_000_123.456789
    assert abs(time_to_seconds(seconds_to_time(t)) - t) < 1e-6
    assert seconds_to_time(float("nan")).sec == 0 and seconds_to_time(-1.0).sec == 0


def test_string_cdr_decoding_matches_rclpy_and_is_strict():
    raw = serialize_message(String(data="  pick up the cup  "))
    assert decode_string_cdr(raw) == "pick up the cup"
    be = b"\x00\x00\x00\x00" + (4).to_bytes(4, "big") + b"abc\x00"
    assert decode_string_cdr(be) == "abc"
    bad_utf8 = b"\x00\x01\x00\x00" + (4).to_bytes(4, "little") + b"\xff\xfeA\x00"
    with pytest.raises(InputError, match="UTF-8"):
        decode_string_cdr(bad_utf8)
    with pytest.raises(InputError, match="too long"):
        decode_string_cdr(serialize_message(String(data="x" * 5000)))
    with pytest.raises(InputError, match="malformed"):
        decode_string_cdr(b"\x00\x01\x00\x00" + (400).to_bytes(4, "little") + b"abc\x00")
    with pytest.raises(InputError, match="truncated"):
        decode_string_cdr(b"\x00\x01")
    with pytest.raises(InputError, match="encapsulation"):
        decode_string_cdr(b"\x12\x34\x00\x00" + (1).to_bytes(4, "little") + b"\x00")


def test_sanitize_instruction():
    assert sanitize_instruction("  déplace le cube\n") == "déplace le cube"
    with pytest.raises(InputError, match="control character"):
        sanitize_instruction("stop\x00now")
    with pytest.raises(InputError, match="UTF-8"):
        sanitize_instruction("bad \ufffd text")  # what rclpy makes of invalid UTF-8
    with pytest.raises(InputError, match="too long"):
        sanitize_instruction("é" * 2049)  # 4098 bytes


def test_raw_camera_rejects_oversized_and_garbage():
    with pytest.raises(ValueError, match="too large"):
        raw_camera_to_rgb(b"\x00\x01\x00\x00" + bytes(70 * 1024 * 1024), compressed=False)
    with pytest.raises(ValueError):
        raw_camera_to_rgb(b"\x00\x01\x00\x00garbage", compressed=False)


def test_pose_from_msg_validates_and_normalizes():
    msg = PoseStamped()
    msg.pose.position.x = 0.3
    msg.pose.orientation.w = 1.02
    pose = pose_from_msg(msg, 5.0)
    assert pose.stamp == 5.0 and np.isclose(np.linalg.norm(pose.orientation), 1.0)
    msg.pose.orientation.w = 0.2
    with pytest.raises(InputError, match="unit quaternion"):
        pose_from_msg(msg, 5.0)
    msg.pose.orientation.w = 1.0
    msg.pose.position.y = float("nan")
    with pytest.raises(InputError, match="NaN"):
        pose_from_msg(msg, 5.0)


def rotation_matrix(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_quaternion_helpers_match_rotation_matrices():
    r, p, y = 0.3, -0.2, 1.1
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    np.testing.assert_allclose(rotation_matrix(quat_from_rpy(r, p, y)), rz @ ry @ rx, atol=1e-12)
    a, b = quat_from_rpy(0.1, 0.2, 0.3), quat_from_rpy(-0.4, 0.5, 0.6)
    np.testing.assert_allclose(rotation_matrix(quat_multiply(a, b)), rotation_matrix(a) @ rotation_matrix(b),
                               atol=1e-12)
    np.testing.assert_allclose(rotvec_from_quat(quat_from_rpy(0, 0, 0.25)), [0, 0, 0.25], atol=1e-12)


def cmd(translation=(0.01, -0.02, 0.005), rotation=(0.0, 0.0, 0.0), hold=False, bits=0):
    return Command(stamp=100.5, translation=np.array(translation), rotation=np.array(rotation), gripper=0.4,
                   hold=hold, interventions=bits, source_stamp=None if hold else 100.25)


def test_end_effector_message():
    bits = int(Intervention.TRANSLATION_STEP | Intervention.GRIPPER_SLEW)
    m = command_to_end_effector(cmd(bits=bits), "base_link")
    assert m.header.frame_id == "base_link" and abs(time_to_seconds(m.header.stamp) - 100.5) < 1e-6
    assert (m.translation.x, m.translation.y, m.translation.z) == (0.01, -0.02, 0.005)
    assert m.interventions == bits and list(m.intervention_names) == ["TRANSLATION_STEP", "GRIPPER_SLEW"]
    assert abs(time_to_seconds(m.source_stamp) - 100.25) < 1e-6 and m.gripper == 0.4
    hold = command_to_end_effector(cmd((0, 0, 0), hold=True), "base_link")
    assert hold.hold and hold.source_stamp.sec == 0


def test_twist_is_delta_over_tick_period():
    m = command_to_twist(cmd(rotation=(0.0, 0.0, 0.02)), "base_link", 0.01)
    np.testing.assert_allclose([m.twist.linear.x, m.twist.linear.y, m.twist.linear.z], [1.0, -2.0, 0.5])
    np.testing.assert_allclose([m.twist.angular.x, m.twist.angular.y, m.twist.angular.z], [0, 0, 2.0],
                               atol=1e-12)
    assert m.header.frame_id == "base_link"


def test_pose_target_composes_rotation_in_the_command_frame():
    current = Pose(position=np.array([0.3, 0.0, 0.4]), orientation=quat_from_rpy(0.0, math.pi / 2, 0.0),
                   stamp=100.0)
    m = command_to_pose_target(cmd(rotation=(0.0, 0.0, 0.1)), current, "base_link")
    position = [m.pose.position.x, m.pose.position.y, m.pose.position.z]
    np.testing.assert_allclose(position, [0.31, -0.02, 0.405])
    q = [m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w]
    expected = rotation_matrix(quat_from_rpy(0, 0, 0.1)) @ rotation_matrix(current.orientation)
    np.testing.assert_allclose(rotation_matrix(q), expected, atol=1e-12)
    assert np.isclose(np.linalg.norm(q), 1.0)
