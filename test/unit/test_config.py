"""Configuration schema, YAML loading (plain and ROS 2 parameter files) and robot safety profiles."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from vla_ros.control.profiles import (
    available_profiles,
    load_profile,
    parse_flat_yaml,
    profile_limits,
    resolve_profile,
)
from vla_ros.core.config import NodeConfig, load_config
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.schema import ConfigError, apply_overrides, flatten_yaml, iter_fields, validate

ROBOTS = Path(__file__).resolve().parents[2] / "config" / "robots"


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----- schema ----------------------------------------------------------------------------------------
def test_defaults_are_valid_and_documented():
    cfg = validate(NodeConfig())
    for name, _, f in iter_fields(cfg):
        assert f.metadata.get("help"), f"parameter {name} has no help text"
    assert load_config() == cfg


@pytest.mark.parametrize("name, value, allowed", [
    ("safety.max_linear_velocity_mps", 3.5, "[0.0, 3.0]"),
    ("safety.max_image_age_s", 0.0, "[0.001, 60.0]"),
    ("control.control_rate_hz", 2000, "[1.0, 1000.0]"),
    ("safety.workspace_min_m", [0.0, 0.0, -11.0], "[-10.0, 10.0]"),
    ("safety.max_translation_step_m", math.nan, "[0.0, 0.5]"),
    ("safety.max_gripper_speed_per_s", math.inf, "[0.0, 1000.0]"),
])
def test_range_errors_name_the_parameter_and_the_range(name, value, allowed):
    with pytest.raises(ConfigError) as err:
        load_config(overrides={name: value})
    assert f"'{name}'" in str(err.value) and allowed in str(err.value)


def test_choices_error_lists_the_choices():
    with pytest.raises(ConfigError, match=r"'policy.backend'.*one of \['torch', 'onnxruntime', 'tensorrt'\]"):
        load_config(overrides={"policy.backend": "tflite"})


@pytest.mark.parametrize("name, value, message", [
    ("safety.max_linear_velocity_mps", True, "must be a number"),
    ("safety.max_linear_velocity_mps", "fast", "must be a number"),
    ("safety.require_pose", 1, "must be true or false"),
    ("topics.camera", 5, "must be a string"),
    ("safety.workspace_min_m", 0.5, "must be a list"),
    ("safety.workspace_min_m", [0.0, "a", 0.0], "must be a number"),
    ("safety.max_linear_velocity_mps", 10 ** 400, "too large"),
])
def test_type_errors(name, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load_config(overrides={name: value})
    assert name in str(err.value)


def test_int_is_accepted_for_a_float_and_the_original_is_untouched():
    base = NodeConfig()
    cfg = apply_overrides(base, {"safety.max_linear_velocity_mps": 0, "safety.workspace_max_m": [1, 1, 1]})
    assert cfg.safety.max_linear_velocity_mps == 0.0 and isinstance(cfg.safety.max_linear_velocity_mps, float)
    assert cfg.safety.workspace_max_m == [1.0, 1.0, 1.0]
    assert base.safety.max_linear_velocity_mps == 0.25


def test_unknown_parameter_with_a_hint():
    with pytest.raises(ConfigError, match=r"unknown parameter 'max_linear_velocity_mps' "
                                          r"\(did you mean 'safety.max_linear_velocity_mps'\?\)"):
        load_config(overrides={"max_linear_velocity_mps": 0.1})
    with pytest.raises(ConfigError, match="unknown parameter 'safety.warp_speed'"):
        load_config(overrides={"safety.warp_speed": 9})


@pytest.mark.parametrize("overrides, message", [
    ({"safety.workspace_min_m": [0.0, 0.0]}, "must have 3 values"),
    ({"safety.workspace_min_m": [0.5, 0.0, 0.0], "safety.workspace_max_m": [0.5, 1.0, 1.0]}, "below"),
    ({"safety.gripper_min": 0.8, "safety.gripper_max": 0.2}, "gripper_min"),
    ({"control.frame_id": ""}, "control.frame_id"),
    ({"topics.output_mode": "pose"}, "topics.pose"),
])
def test_cross_field_checks(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(overrides=overrides)


def test_flatten_yaml():
    tree = {"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}
    assert flatten_yaml(tree) == {"a.b": 1, "a.c.d": [1, 2], "e": "x"}


# ----- YAML files -------------------------------------------------------------------------------------
PARAMS = """
safety:
  max_linear_velocity_mps: 0.1
  workspace_min_m: [-0.5, -0.5, 0.0]
control:
  control_rate_hz: 50
"""


def check_params(cfg: NodeConfig) -> None:
    assert cfg.safety.max_linear_velocity_mps == 0.1 and cfg.control.control_rate_hz == 50.0
    assert cfg.safety.workspace_min_m == [-0.5, -0.5, 0.0]


def test_plain_yaml(tmp_path):
    check_params(load_config(write(tmp_path, PARAMS)))


@pytest.mark.parametrize("node", ["vla_node", "/**", "/robot/vla_node"])
def test_ros_parameter_file_wrapper(tmp_path, node):
    indented = "\n".join("    " + line for line in PARAMS.strip().splitlines())
    text = f'"{node}":\n  ros__parameters:\n{indented}\n'
    check_params(load_config(write(tmp_path, text)))


def test_overrides_win_over_the_file(tmp_path):
    cfg = load_config(write(tmp_path, PARAMS), overrides={"safety.max_linear_velocity_mps": 0.2})
    assert cfg.safety.max_linear_velocity_mps == 0.2


def test_file_errors_name_the_file_and_the_parameter(tmp_path):
    path = write(tmp_path, "safety:\n  max_angular_velocity_radps: 9.0\n")
    with pytest.raises(ConfigError, match=r"'safety.max_angular_velocity_radps' = 9.0.*\[0.0, 2.5\]"):
        load_config(path)


@pytest.mark.parametrize("content", [
    b"safety: [unclosed\n",  # YAML syntax
    b"\xff\xfe\x00garbage\x81",  # not UTF-8
    b"- a\n- b\n",  # not a mapping
    b"vla_node:\n  ros__parameters: [1, 2]\n",  # parameters not a mapping
    b"vla_node:\n  ros__parameters: {}\nother_node:\n  ros__parameters: {}\n",  # several nodes
    b"safety:\n  max_image_age_s: .nan\n",
])
def test_corrupt_files_give_a_config_error(tmp_path, content):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_empty_file_is_the_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == NodeConfig()
    assert load_config(write(tmp_path, "vla_node:\n  ros__parameters:\n")) == NodeConfig()


# ----- robot profiles ----------------------------------------------------------------------------------
VENDOR = {  # the vendor / reference figures the profiles cite (safety-and-ros-conventions.md)
    "franka_fr3": dict(max_linear_velocity_mps=3.0, max_linear_acceleration_mps2=9.0,
                       max_angular_velocity_radps=2.5, max_angular_acceleration_radps2=17.0),
    "ur_e_series": dict(max_linear_velocity_mps=0.25, max_angular_velocity_radps=math.radians(30),
                        max_linear_acceleration_mps2=1.2),
    "widowx_250": dict(max_translation_step_m=0.05, max_rotation_step_rad=0.25,
                       max_linear_velocity_mps=0.25, max_angular_velocity_radps=1.25),
}


def test_the_three_robot_profiles_ship():
    assert {"franka_fr3", "ur_e_series", "widowx_250"} <= set(available_profiles())


@pytest.mark.parametrize("name", sorted(VENDOR))
def test_profiles_are_valid_and_inside_the_vendor_limits(name):
    overrides = load_profile(name)
    assert all(key.startswith("safety.") for key in overrides)
    limits = profile_limits(name)
    for field, vendor in VENDOR[name].items():
        assert getattr(limits, field) <= vendor, field
    assert limits.max_linear_velocity_mps <= 0.25  # ISO 10218 reduced speed
    assert limits.require_pose  # a real arm's workspace is only enforced with a pose
    cfg = load_config(overrides=overrides)  # usable as node overrides
    assert cfg.safety == limits


def test_the_libero_profile_maps_osc_units_and_keeps_the_fr3_limits():
    overrides = load_profile("franka_fr3_libero")
    assert overrides["policy.action_scale"] == [0.05, 0.05, 0.05, 0.5, 0.5, 0.5]
    assert profile_limits("franka_fr3_libero") == profile_limits("franka_fr3")
    cfg = load_config(overrides=overrides)
    assert cfg.policy.action_scale == [0.05, 0.05, 0.05, 0.5, 0.5, 0.5] and not cfg.policy.gripper_invert


def test_widowx_uses_the_bridge_workspace():
    limits = profile_limits("widowx_250")
    assert limits.workspace_min_m == [0.1, -0.20, -0.01] and limits.workspace_max_m == [0.45, 0.25, 0.30]


@pytest.mark.parametrize("path", sorted(ROBOTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_profile_parser_agrees_with_pyyaml(path):
    text = path.read_text()
    assert parse_flat_yaml(text) == yaml.safe_load(text)


def test_profile_by_path_and_base(tmp_path):
    path = write(tmp_path, "safety.max_linear_velocity_mps: 0.1\nmax_image_age_s: 0.2  # bare name\n",
                 "mine.yaml")
    assert load_profile(str(path)) == {"safety.max_linear_velocity_mps": 0.1, "safety.max_image_age_s": 0.2}
    base = replace(SafetyLimits(), max_action_age_s=0.7)
    limits = profile_limits(path, base=base)
    assert limits.max_linear_velocity_mps == 0.1 and limits.max_action_age_s == 0.7


@pytest.mark.parametrize("text, message", [
    ("safety.max_linear_velocity_mps: 4.0\n",
     r"'safety.max_linear_velocity_mps' = 4.0: must be a number in \[0.0, 3.0\]"),
    ("safety.max_warp: 1\n", "unknown parameter 'safety.max_warp'"),
    ("control.control_rate_hz: 5\n", r"only safety\.\* parameters and .*, got 'control.control_rate_hz'"),
    ("policy.checkpoint: /x\n", r"and policy.action_scale.*, got 'policy.checkpoint'"),
    ("policy.action_scale: [0.05, 0.05]\n", r"'policy.action_scale' needs 6 values"),
    ("safety:\n  max_linear_velocity_mps: 0.1\n", r"bad.yaml:1: missing value \(profiles are flat"),
    ("safety.max_image_age_s: 0.1\n  safety.max_action_age_s: 0.1\n", r"bad.yaml:2: profiles are flat"),
    ("safety.max_linear_velocity_mps 0.1\n", r"bad.yaml:1: expected 'name: value'"),
    ("a: 1\na: 2\n", "given twice"),
    ("safety.workspace_min_m: [0.1, 0.2\n", "unterminated list"),
    ("safety.gripper_min: {a: 1}\n", "outside the flat YAML"),
])
def test_bad_profiles_are_refused_with_a_clear_message(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_profile(write(tmp_path, text, "bad.yaml"))


def test_unknown_profile_name_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown robot profile 'kuka'.*franka_fr3"):
        load_profile("kuka")
    with pytest.raises(ConfigError, match="letters, digits"):
        resolve_profile("fr3; rm -rf")
    with pytest.raises(ConfigError, match="not found"):
        load_profile("/nonexistent/profile.yaml")


def test_profile_dir_from_the_environment(tmp_path, monkeypatch):
    write(tmp_path, "safety.max_linear_velocity_mps: 0.05\n", "lab_arm.yaml")
    monkeypatch.setenv("VLA_ROS_PROFILE_DIR", str(tmp_path))
    assert load_profile("lab_arm") == {"safety.max_linear_velocity_mps": 0.05}
    assert "lab_arm" in available_profiles()


def test_split_config_examples_load_and_agree_on_what_both_halves_must_share():
    policy = load_config(ROBOTS.parent / "split_policy.yaml")
    control = load_config(ROBOTS.parent / "split_control.yaml")
    assert (policy.split.role, control.split.role) == ("policy", "control")
    assert policy.split.chunk_topic == control.split.chunk_topic
    assert policy.topics.instruction == control.topics.instruction
    assert policy.control.action_period_s == control.control.action_period_s
