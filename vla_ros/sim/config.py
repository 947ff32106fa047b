"""SimConfig: the parameters of the simulator node vla_sim (ROS parameters, the demo launch file)."""

from __future__ import annotations

from dataclasses import dataclass

from vla_ros.core.config import NodeConfig
from vla_ros.core.schema import param, validate
from vla_ros.sim.tasks import TASK_KINDS

DEFAULT_POSE_TOPIC = "vla/ee_pose"


@dataclass
class SimConfig:
    """vla_sim: topics, camera rate, scene seed and task kind, motion limits."""

    camera_topic: str = param("camera/image_raw", "sensor_msgs/Image output (rgb8)")
    pose_topic: str = param(DEFAULT_POSE_TOPIC, "geometry_msgs/PoseStamped of the fingertip centre")
    command_topic: str = param("vla/command", "commands to execute, one per tick")
    command_type: str = param("end_effector", "end_effector: vla_ros/EndEffectorCommand; twist: TwistStamped",
                              choices=("end_effector", "twist"))
    instruction_topic: str = param("vla/instruction",
                                   "std_msgs/String; an instruction naming a scene object sets the task")
    publish_instruction: bool = param(False,
                                      "publish the new task's instruction on instruction_topic at reset")
    camera_rate_hz: float = param(10.0, "camera frame rate [Hz]", range=(0.1, 100.0))
    command_period_s: float = param(0.1, "nominal tick of twist commands [s]", range=(0.001, 10.0))
    frame_id: str = param("base", "frame of the pose and camera messages")
    seed: int = param(0, "seed of the first scene; each reset uses the next", range=(0, 2**31 - 1))
    task_kind: str = param("", "task kind of every reset; empty = random at each reset",
                           choices=("", *TASK_KINDS))
    robot_profile: str = param("", "robot safety profile name or file; empty = the simulator's limits "
                               "(as config/demo.yaml)")


def sim_config_for(node: NodeConfig, seed: int = 0, task_kind: str = "", camera_rate_hz: float = 10.0
                   ) -> SimConfig:
    """vla_sim's settings that match a vla_node configuration: the same topics and frame."""
    topics = node.topics
    return validate(SimConfig(camera_topic=topics.camera, pose_topic=topics.pose or DEFAULT_POSE_TOPIC,
                              command_topic=topics.command, instruction_topic=topics.instruction,
                              frame_id=node.control.frame_id, seed=seed, task_kind=task_kind,
                              camera_rate_hz=float(camera_rate_hz)))
