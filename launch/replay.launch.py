"""Play a bag into vla_node on sim time: `ros2 launch vla_ros replay.launch.py bag:=/path/to/bag`.

vla_node comes from vla.launch.py (included with use_sim_time:=true, so every argument of
vla.launch.py works here too: config_file, robot, model_path, arm, ...); the bag is played with /clock
by `ros2 bag play --clock` where rosbag2 is installed and by `vla-ros play --clock` otherwise (which
first waits for the node's subscriptions). The node stays DISARMED unless arm:=true. Record what it
publishes with `vla-ros record DIR`, or replay the same bag offline with `vla-ros replay`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# argument -> (default, description); vla.launch.py's arguments pass through as well
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "bag": ("", "rosbag2 directory (or .mcap / .db3 file) to play"),
    "rate": ("1.0", "playback speed factor"),
    "loop": ("false", "play the bag again and again"),
    "play_delay": ("2.0", "seconds to wait before playing (vla_node loads its model meanwhile)"),
}


def have_ros2_bag() -> bool:
    """True when the `ros2 bag` verb (rosbag2's ros2bag package) is installed."""
    if shutil.which("ros2") is None:
        return False
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return False
    try:
        get_package_prefix("ros2bag")
    except PackageNotFoundError:
        return False
    return True


def bag_storage(bag: str) -> str:
    """The storage plugin named in a bag directory's metadata.yaml ('' when unknown)."""
    import yaml

    try:
        info = yaml.safe_load((Path(bag) / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        return str(info.get("storage_identifier") or "")
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return {".mcap": "mcap", ".db3": "sqlite3"}.get(Path(bag).suffix, "")


def player_command(args: dict[str, str], use_ros2_bag: bool) -> list[str]:
    """The command line that plays the bag with /clock (raises ValueError for bad arguments)."""
    bag = args.get("bag", "").strip()
    if not bag:
        raise ValueError("launch argument 'bag' is required: bag:=/path/to/bag")
    rate, delay = float(args.get("rate", "1.0")), float(args.get("play_delay", "2.0"))
    if not rate > 0 or delay < 0:
        raise ValueError(f"launch arguments rate = {rate} (> 0) and play_delay = {delay} (>= 0)")
    loop = str(args.get("loop", "false")).strip().lower() in ("true", "1", "yes", "on")
    if use_ros2_bag:
        cmd = ["ros2", "bag", "play", bag, "--clock", "--rate", str(rate)]
        if delay > 0:  # ros2 bag play refuses --delay 0
            cmd += ["--delay", str(delay)]
        storage = bag_storage(bag)
        if storage:  # older rosbag2 (Humble) assumes sqlite3 unless told
            cmd += ["--storage", storage]
    else:
        cmd = ["vla-ros", "play", bag, "--clock", "--rate", str(rate), "--wait-for-subscribers", "60",
               "--delay", str(delay)]
    return cmd + (["--loop"] if loop else [])


def _launch_setup(context, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - OpaqueFunction signature
    from launch.actions import ExecuteProcess
    from launch.substitutions import LaunchConfiguration

    resolved = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    return [ExecuteProcess(cmd=player_command(resolved, have_ros2_bag()), output="screen")]


def generate_launch_description():  # noqa: ANN201 - launch.LaunchDescription, imported lazily
    """vla.launch.py on sim time, plus the player."""
    from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchDescription

    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in LAUNCH_ARGUMENTS.items()]
    vla_launch = PythonLaunchDescriptionSource(str(Path(__file__).with_name("vla.launch.py")))
    node = IncludeLaunchDescription(vla_launch, launch_arguments={"use_sim_time": "true"}.items())
    return LaunchDescription(declared + [node, OpaqueFunction(function=_launch_setup)])
