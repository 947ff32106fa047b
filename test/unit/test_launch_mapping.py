"""launch/vla.launch.py: the argument -> parameter mapping, tested without the launch packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from vla_ros.core.config import NodeConfig, load_config
from vla_ros.core.schema import ConfigError, iter_fields

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "vla.launch.py"


@pytest.fixture(scope="module")
def launch_module():
    spec = importlib.util.spec_from_file_location("vla_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not need launch / launch_ros
    return module


def test_declares_the_required_arguments(launch_module):
    required = {"config_file", "model_path", "backend", "camera_topic", "instruction_topic", "namespace",
                "use_sim_time"}
    assert required <= set(launch_module.LAUNCH_ARGUMENTS)
    leaves = {name for name, _, _ in iter_fields(NodeConfig())}
    assert set(launch_module.ARGUMENT_PARAMETERS.values()) <= leaves


def test_defaults_give_every_parameter_its_default(launch_module):
    settings = launch_module.node_settings({})
    expected = {name: value for name, value, _ in iter_fields(NodeConfig())}
    params = settings["parameters"]
    assert params.pop("use_sim_time") is False
    assert params == expected
    assert settings["namespace"] == "" and settings["arguments"] == []


def test_arguments_override_the_config_file(launch_module, tmp_path):
    cfg_file = tmp_path / "vla.yaml"
    cfg_file.write_text("vla_node:\n  ros__parameters:\n    control:\n      control_rate_hz: 50.0\n"
                        "    policy:\n      backend: onnxruntime\n      checkpoint: /from/file\n")
    s = launch_module.node_settings({
        "config_file": str(cfg_file), "model_path": "/models/openvla", "camera_topic": "/wrist/image_raw",
        "instruction_topic": "/teleop/text", "namespace": "/arm_left", "use_sim_time": "True",
        "camera_transport": "compressed", "autostart": "false", "arm": "true", "control_priority": "80",
        "inference_process": "true"})
    p = s["parameters"]
    assert p["policy.checkpoint"] == "/models/openvla"  # argument wins over the file
    assert p["policy.backend"] == "onnxruntime"  # file value kept (argument empty)
    assert p["control.control_rate_hz"] == 50.0
    assert p["topics.camera"] == "/wrist/image_raw" and p["topics.instruction"] == "/teleop/text"
    assert p["topics.camera_transport"] == "compressed"
    assert p["use_sim_time"] is True
    assert p["execution.inference_process"] is True and p["execution.control_priority"] == 80
    assert s["namespace"] == "arm_left"
    assert s["arguments"] == ["--managed", "--arm"]


def test_execution_arguments_keep_the_config_value_when_empty(launch_module, tmp_path):
    cfg_file = tmp_path / "vla.yaml"
    cfg_file.write_text("execution:\n  inference_process: true\n  control_priority: 50\n")
    p = launch_module.node_settings({"config_file": str(cfg_file)})["parameters"]
    assert p["execution.inference_process"] is True and p["execution.control_priority"] == 50
    p = launch_module.node_settings({"config_file": str(cfg_file), "inference_process": "false",
                                     "control_priority": "0"})["parameters"]
    assert p["execution.inference_process"] is False and p["execution.control_priority"] == 0


def test_robot_profile_applies_safety_limits(launch_module):
    p = launch_module.node_settings({"robot": "widowx_250"})["parameters"]
    from vla_ros.control.profiles import load_profile

    for name, value in load_profile("widowx_250").items():
        assert p[name] == pytest.approx(value)


def test_shipped_config_file_loads(launch_module):
    p = launch_module.node_settings({"config_file": str(ROOT / "config" / "vla.yaml")})["parameters"]
    assert p["control.control_rate_hz"] == load_config(ROOT / "config" / "vla.yaml").control.control_rate_hz


@pytest.mark.parametrize("args, words", [
    ({"backend": "tensorflow"}, "'policy.backend' = 'tensorflow'"),
    ({"use_sim_time": "maybe"}, "'use_sim_time' = 'maybe'"),
    ({"camera_transport": "theora"}, "'topics.camera_transport'"),
    ({"modelpath": "/x"}, "unknown launch argument"),
    ({"control_priority": "high"}, "'control_priority' = 'high'"),
    ({"control_priority": "120"}, r"'execution.control_priority' = 120.*\[0, 99\]"),
    ({"inference_process": "maybe"}, "'inference_process' = 'maybe'"),
])
def test_invalid_arguments_name_the_parameter(launch_module, args, words):
    with pytest.raises(ConfigError, match=words):
        launch_module.node_settings(args)


def test_generate_launch_description_where_launch_ros_imports(launch_module):
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI here")
    from launch import LaunchDescription

    ld = launch_module.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    names = {a.name for a in ld.entities if hasattr(a, "default_value")}
    assert names == set(launch_module.LAUNCH_ARGUMENTS)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), ROOT / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not need launch / launch_ros
    return module


@pytest.mark.parametrize("role, executable", [("", "vla_node"), ("both", "vla_node"),
                                              ("policy", "vla_policy_node"), ("control", "vla_control_node")])
def test_role_picks_the_executable_and_sets_split_role(launch_module, role, executable):
    s = launch_module.node_settings({"role": role, "chunk_topic": "/gpu/chunks"})
    assert s["executable"] == executable
    assert s["parameters"]["split.role"] == (role or "both")
    assert s["parameters"]["split.chunk_topic"] == "/gpu/chunks"
    assert (ROOT / "scripts" / executable).exists()  # installed by CMakeLists.txt
    assert f"scripts/{executable}" in (ROOT / "CMakeLists.txt").read_text()


@pytest.mark.parametrize("file, executables", [
    ("policy.launch.py", ["vla_policy_node"]), ("control.launch.py", ["vla_control_node"]),
    ("split.launch.py", ["vla_policy_node", "vla_control_node"])])
def test_launch_files_of_the_halves_fix_the_role_and_share_the_arguments(launch_module, file, executables):
    module = _load(file)
    settings = module.vla_launch.role_settings({"model_path": "/models/oft", "arm": "true",
                                                "chunk_topic": "chunks"}, module.ROLES)
    assert [s["executable"] for s in settings] == executables
    for s in settings:
        p = s["parameters"]
        assert p["split.role"] == s["executable"].removeprefix("vla_").removesuffix("_node")
        assert p["policy.checkpoint"] == "/models/oft" and p["split.chunk_topic"] == "chunks"
        assert ("--arm" in s["arguments"]) == (s["executable"] == "vla_control_node")  # the policy never arms


def test_role_argument_is_checked(launch_module):
    with pytest.raises(ConfigError, match="split.role"):
        launch_module.node_settings({"role": "gpu"})
