"""The closed-loop demo on a ROS 2 install: `ros2 launch vla_ros demo.launch.py episodes:=5`.

Three processes, the same graph `vla-ros demo` builds in one process:
- vla_sim, the tabletop simulator (`python -m vla_ros.ros.sim_node`), seeded;
- vla_node from vla.launch.py with config/demo.yaml (autostart, DISARMED until the driver arms it);
- the episode driver, `vla-ros demo --attach` (`python -m vla_ros.ros.demo`): it arms vla_node, runs
  the episodes, records the mcap bag, writes the plot and summary.json, and ends the launch when done.

The argument -> command-line mapping is plain Python (tested without the launch packages);
`generate_launch_description` only wraps it in launch actions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from vla_ros.core.config import load_config
from vla_ros.sim.config import sim_config_for

HERE = Path(__file__).resolve().parent
# Source tree: <repo>/launch -> <repo>/config; installed: share/vla_ros/launch -> share/vla_ros/config.
DEMO_CONFIG = HERE.parent / "config" / "demo.yaml"

# argument -> (default, description)
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "episodes": ("5", "number of episodes"),
    "seed": ("0", "simulator seed: the scene of episode i is seed + i"),
    "task": ("alternate", "task kinds: alternate (pick, move, ...), any (the simulator's random choice), "
                          "pick or move"),
    "max_seconds_per_episode": ("10.0", "time limit of one episode [s]"),
    "out": ("build/demo", "output directory of the bag, the plot and summary.json"),
    "record": ("true", "record the mcap bag (false: no bag; the plot comes from the driver)"),
    "config_file": ("", "vla_node parameters; empty = config/demo.yaml"),
    "model_path": ("", "checkpoint directory; empty = the embedded demo model"),
    "camera_rate_hz": ("10.0", "simulator camera rate [Hz]"),
    "inference_process": ("", "true/false: run the model in a child process of vla_node; empty = the config "
                              "file's execution.inference_process (default true)"),
    "ready_timeout": ("180.0", "seconds the driver waits for the nodes (model loading included)"),
}

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class LaunchArgumentError(ValueError):
    """A launch argument has an invalid value; the message names it."""


def _bool(name: str, text: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise LaunchArgumentError(f"launch argument '{name}' = {text!r}: must be true or false")


def _number(name: str, text: str, kind: type, lo: float, hi: float) -> Any:
    try:
        value = kind(str(text).strip())
    except ValueError:
        raise LaunchArgumentError(f"launch argument '{name}' = {text!r}: must be a {kind.__name__}") from None
    if not lo <= value <= hi:
        raise LaunchArgumentError(f"launch argument '{name}' = {text!r}: must be in [{lo:g}, {hi:g}]")
    return value


def resolve(args: dict[str, str]) -> dict[str, Any]:
    """Launch argument strings -> typed, checked values (LaunchArgumentError names a bad one)."""
    unknown = sorted(set(args) - set(LAUNCH_ARGUMENTS))
    if unknown:
        raise LaunchArgumentError(f"unknown launch argument(s) {unknown} (known: {sorted(LAUNCH_ARGUMENTS)})")
    raw = {name: str(args.get(name, default)) for name, (default, _) in LAUNCH_ARGUMENTS.items()}
    task = raw["task"].strip()
    if task not in ("alternate", "any", "pick", "move"):
        raise LaunchArgumentError(f"launch argument 'task' = {task!r}: must be alternate, any, pick or move")
    return {
        "episodes": _number("episodes", raw["episodes"], int, 1, 10_000),
        "seed": _number("seed", raw["seed"], int, 0, 2**31 - 1),
        "task": task,
        "max_seconds_per_episode": _number("max_seconds_per_episode", raw["max_seconds_per_episode"], float,
                                           0.1, 3600.0),
        "out": raw["out"].strip() or "build/demo",
        "record": _bool("record", raw["record"]),
        "config_file": raw["config_file"].strip() or str(DEMO_CONFIG),
        "model_path": raw["model_path"].strip(),
        "camera_rate_hz": _number("camera_rate_hz", raw["camera_rate_hz"], float, 1.0, 100.0),
        "inference_process": (_bool("inference_process", raw["inference_process"])
                              if raw["inference_process"].strip() else None),  # None: the config's
        "ready_timeout": _number("ready_timeout", raw["ready_timeout"], float, 1.0, 3600.0),
    }


def sim_command(values: dict[str, Any], python: str = sys.executable) -> list[str]:
    """vla_sim's command line, its topics taken from the vla_node config (so both sides match)."""
    # alternate / any: the driver asks for the kind of each episode, vla_sim draws at random
    task_kind = values["task"] if values["task"] in ("pick", "move") else ""
    sim = sim_config_for(load_config(values["config_file"]), seed=values["seed"], task_kind=task_kind,
                         camera_rate_hz=values["camera_rate_hz"])
    params = {"camera_topic": sim.camera_topic, "pose_topic": sim.pose_topic,
              "command_topic": sim.command_topic, "instruction_topic": sim.instruction_topic,
              "frame_id": sim.frame_id, "seed": str(sim.seed),
              "camera_rate_hz": repr(sim.camera_rate_hz)}  # '10.0': a double parameter
    if sim.task_kind:
        params["task_kind"] = sim.task_kind
    cmd = [python, "-m", "vla_ros.ros.sim_node", "--ros-args", "-r", "__node:=vla_sim"]
    for name, value in params.items():
        cmd += ["-p", f"{name}:={value}"]
    return cmd


def vla_launch_arguments(values: dict[str, Any]) -> dict[str, str]:
    """Arguments of the included vla.launch.py: the demo config, DISARMED (the driver arms it)."""
    return {"config_file": values["config_file"], "model_path": values["model_path"], "arm": "false",
            "autostart": "true",
            "inference_process": {None: "", True: "true", False: "false"}[values["inference_process"]]}


def driver_command(values: dict[str, Any], python: str = sys.executable) -> list[str]:
    """`vla-ros demo --attach ...`: episodes, bag, plot and summary against the running nodes."""
    cmd = [python, "-m", "vla_ros.ros.demo", "--attach", "--episodes", str(values["episodes"]),
           "--task", values["task"],
           "--max-seconds-per-episode", repr(float(values["max_seconds_per_episode"])),
           "--out", values["out"], "--config", values["config_file"],
           "--camera-rate-hz", repr(float(values["camera_rate_hz"])),
           "--ready-timeout", repr(float(values["ready_timeout"]))]
    if not values["record"]:
        cmd.append("--no-bag")
    return cmd


def _launch_setup(context, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - OpaqueFunction signature
    # lazy: the launch packages are needed only by ros2 launch; the mapping above is tested without them
    from launch.actions import EmitEvent, ExecuteProcess, IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import LaunchConfiguration

    values = resolve({name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS})
    sim = ExecuteProcess(cmd=sim_command(values), name="vla_sim", output="screen")
    vla = IncludeLaunchDescription(PythonLaunchDescriptionSource(str(HERE / "vla.launch.py")),
                                   launch_arguments=vla_launch_arguments(values).items())
    driver = ExecuteProcess(cmd=driver_command(values), name="vla_demo_driver", output="screen")
    done = RegisterEventHandler(OnProcessExit(
        target_action=driver, on_exit=[EmitEvent(event=Shutdown(reason="demo finished"))]))
    return [sim, vla, driver, done]


def generate_launch_description():  # noqa: ANN201 - launch.LaunchDescription, imported lazily
    """Declared arguments, then the three processes built from their values."""
    # lazy: as in _launch_setup
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in LAUNCH_ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=_launch_setup)])
