"""The control half of a split deployment, on the robot computer.

    ros2 launch vla_ros control.launch.py config_file:=/path/to/config.yaml

Starts vla_control_node with the arguments of vla.launch.py, all but `role`, which is fixed here.
README: "Policy on another computer".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("vla_launch", Path(__file__).with_name("vla.launch.py"))
vla_launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vla_launch)

ROLES = ("control",)


def generate_launch_description():  # noqa: ANN201 - launch.LaunchDescription, imported lazily
    """vla.launch.py's description with the role fixed."""
    return vla_launch.launch_description(ROLES)
