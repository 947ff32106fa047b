"""Start vla_node: `ros2 launch vla_ros vla.launch.py model_path:=/ckpt camera_topic:=/cam/image_raw`.

With role:=policy or role:=control it starts one half of a split deployment instead (vla_policy_node on
the GPU computer, vla_control_node on the robot computer; policy.launch.py and control.launch.py fix the
role, split.launch.py starts both halves on one computer). README: "Policy on another computer".

A thin mapping of launch arguments to node parameters (`node_settings`, tested without launch):
the config file is read and validated by vla_ros.core.config.load_config, the arguments given override
its values, and every parameter is handed to the node explicitly (so the parameters file works
under any namespace). Arguments left empty keep the config file's value.
"""

from __future__ import annotations

from typing import Any

from vla_ros.control.profiles import load_profile
from vla_ros.core.config import load_config
from vla_ros.core.schema import ConfigError, iter_fields

# argument -> (default, description)
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "config_file": ("", "vla_node parameters file (ROS 2 or plain YAML); empty = built-in defaults "
                        "(the same as config/vla.yaml)"),
    "robot": ("", "safety profile from config/robots (franka_fr3, ur_e_series, widowx_250) or a path; "
                  "applied over the config file"),
    "model_path": ("", "checkpoint directory (policy.checkpoint); empty = config value"),
    "backend": ("", "policy.backend: torch, onnxruntime or tensorrt; empty = config value"),
    "engine_dir": ("", "exported ONNX / TensorRT engine directory (policy.engine_dir); empty = config value"),
    "camera_topic": ("", "camera topic (topics.camera); empty = config value"),
    "camera_transport": ("", "raw or compressed (topics.camera_transport); empty = config value"),
    "instruction_topic": ("", "instruction topic (topics.instruction); empty = config value"),
    "role": ("", "both (vla_node: policy and control in one process), policy (vla_policy_node) or control "
                 "(vla_control_node) (split.role); empty = config value (default both)"),
    "chunk_topic": ("", "vla_ros/ActionChunk topic between the halves (split.chunk_topic); empty = config "
                        "value"),
    "namespace": ("", "namespace of the node; empty = root"),
    "use_sim_time": ("false", "follow /clock (bag replay, simulators)"),
    "autostart": ("true", "configure and activate at start; false leaves it to a lifecycle manager"),
    "arm": ("false", "arm right after activation (otherwise call ~/arm)"),
    "inference_process": ("", "true: run the policy in a child process (control loop free of its GIL; "
                              "a hung policy is killed and rebuilt), false: in a thread "
                              "(execution.inference_process); empty = config value (default true)"),
    "control_priority": ("", "SCHED_FIFO priority 1-99 of the control thread (needs rtprio rights, else "
                             "one warning and normal scheduling), 0 = off (execution.control_priority); "
                             "empty = config value (default 50)"),
}

# launch argument -> node parameter it sets when not empty
ARGUMENT_PARAMETERS: dict[str, str] = {
    "model_path": "policy.checkpoint",
    "backend": "policy.backend",
    "engine_dir": "policy.engine_dir",
    "camera_topic": "topics.camera",
    "camera_transport": "topics.camera_transport",
    "instruction_topic": "topics.instruction",
    "role": "split.role",
    "chunk_topic": "split.chunk_topic",
}

# split.role -> the executable (and node name) that runs it
ROLE_EXECUTABLES = {"both": "vla_node", "policy": "vla_policy_node", "control": "vla_control_node"}

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_bool(name: str, text: str) -> bool:
    """A launch argument's boolean value; anything else is an error naming the argument."""
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"launch argument '{name}' = {text!r}: must be true or false")


def node_settings(args: dict[str, str]) -> dict[str, Any]:
    """Launch argument values (strings) -> {namespace, parameters, arguments, executable} of the node
    action (the executable, also the node name, follows split.role).

    `parameters` holds every NodeConfig leaf (validated) plus use_sim_time; raises ConfigError
    naming the parameter for an invalid value.
    """
    values = {name: str(args.get(name, default)) for name, (default, _) in LAUNCH_ARGUMENTS.items()}
    unknown = sorted(set(args) - set(LAUNCH_ARGUMENTS))
    if unknown:
        raise ConfigError(f"unknown launch argument(s) {unknown} (known: {sorted(LAUNCH_ARGUMENTS)})")
    overrides: dict[str, Any] = {}
    if values["robot"]:
        overrides.update(load_profile(values["robot"]))
    for arg, param in ARGUMENT_PARAMETERS.items():
        if values[arg]:
            overrides[param] = values[arg]
    process = values["inference_process"].strip()
    if process:
        overrides["execution.inference_process"] = parse_bool("inference_process", process)
    priority = values["control_priority"].strip()
    if priority:
        if not priority.isdigit():
            raise ConfigError(f"launch argument 'control_priority' = {priority!r}: "
                              "must be an integer in [0, 99]")
        overrides["execution.control_priority"] = int(priority)
    cfg = load_config(values["config_file"] or None, overrides)
    parameters: dict[str, Any] = {}
    for name, value, _ in iter_fields(cfg):
        parameters[name] = [float(v) for v in value] if isinstance(value, list) else value
    parameters["use_sim_time"] = parse_bool("use_sim_time", values["use_sim_time"])
    arguments = []
    if not parse_bool("autostart", values["autostart"]):
        arguments.append("--managed")
    if parse_bool("arm", values["arm"]):
        arguments.append("--arm")
    return {"namespace": values["namespace"].strip("/"), "parameters": parameters, "arguments": arguments,
            "executable": ROLE_EXECUTABLES[cfg.split.role]}


def role_settings(args: dict[str, str], roles: tuple[str, ...]) -> list[dict[str, Any]]:
    """`node_settings` once per role in `roles` ("" = the role the arguments and config say); `arm` goes
    only to a node that commands the robot."""
    settings = []
    for role in roles:
        node = node_settings({**args, "role": role} if role else args)
        if node["executable"] == ROLE_EXECUTABLES["policy"]:
            node["arguments"] = [a for a in node["arguments"] if a != "--arm"]
        settings.append(node)
    return settings


def _launch_setup(context, roles: tuple[str, ...]):  # noqa: ANN001 - OpaqueFunction's context
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    resolved = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS
                if not (roles != ("",) and name == "role")}
    return [Node(package="vla_ros", executable=s["executable"], name=s["executable"], output="screen",
                 namespace=s["namespace"], parameters=[s["parameters"]], arguments=s["arguments"])
            for s in role_settings(resolved, roles)]


def launch_description(roles: tuple[str, ...] = ("",)):  # noqa: ANN201 - launch.LaunchDescription
    """Declared arguments, then one node per role (("",): the role the `role` argument says; the other
    launch files fix it: ("policy",), ("control",), ("policy", "control"))."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    fixed = roles != ("",)
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in LAUNCH_ARGUMENTS.items() if not (fixed and name == "role")]
    return LaunchDescription(declared + [OpaqueFunction(function=_launch_setup, kwargs={"roles": roles})])


def generate_launch_description():  # noqa: ANN201 - launch.LaunchDescription, imported lazily
    """The launch description: declared arguments, then the node built from their values."""
    return launch_description()
