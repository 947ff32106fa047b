"""vla_sim: the tabletop simulator as a ROS 2 node (camera, end-effector pose, commands, reset).

Publishes sensor_msgs/Image (rgb8) at camera_rate_hz on `camera_topic` and the end-effector
geometry_msgs/PoseStamped on `pose_topic`; executes vla_ros/EndEffectorCommand (or TwistStamped)
from `command_topic`, each message one control tick, clipped to the robot profile's per-tick limits;
`~/reset` (std_srvs/Trigger) starts a new scene and task and answers with the instruction;
`sim/success` (std_msgs/Bool) says whether the episode's task has been achieved;
`sim/task` (std_msgs/String, transient local) carries the current instruction. An instruction
received on `instruction_topic` that names an object of the scene becomes the task.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from vla_ros.control.profiles import profile_limits
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.schema import ConfigError
from vla_ros.msg import EndEffectorCommand
from vla_ros.ros.params import declare_config_parameters, read_config_parameters
from vla_ros.sim.config import SimConfig
from vla_ros.sim.harness import sim_limits
from vla_ros.sim.render import Renderer
from vla_ros.sim.tasks import Task, is_success, parse_instruction, sample_task
from vla_ros.sim.world import TabletopWorld

MAX_COMMAND_DT_S = 0.25  # a longer gap between commands counts as this much finger motion time


class SimNode(Node):
    """The simulator behind ROS topics; time is the node's clock."""

    def __init__(self, **kwargs) -> None:
        """Declares the SimConfig parameters (read-only); raises ConfigError naming an invalid one."""
        super().__init__("vla_sim", **kwargs)
        declare_config_parameters(self, SimConfig())
        self.config = read_config_parameters(self, SimConfig)
        cfg = self.config
        self.limits: SafetyLimits = profile_limits(cfg.robot_profile) if cfg.robot_profile else sim_limits()

        self.world = TabletopWorld()
        self.renderer = Renderer()
        self.task: Task | None = None
        self.episode_success = False
        self.episodes = 0
        self.commands_executed = 0
        self._last_command_time: float | None = None

        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        # A reliable publisher serves both reliable and best-effort subscribers.
        self.image_pub = self.create_publisher(Image, cfg.camera_topic, reliable)
        self.pose_pub = self.create_publisher(PoseStamped, cfg.pose_topic, reliable)
        self.success_pub = self.create_publisher(Bool, "sim/success", reliable)
        self.task_pub = self.create_publisher(String, "sim/task", latched)
        self.instruction_pub = self.create_publisher(String, cfg.instruction_topic, reliable)
        if cfg.command_type == "twist":
            self.create_subscription(TwistStamped, cfg.command_topic, self._on_twist, reliable)
        else:
            self.create_subscription(EndEffectorCommand, cfg.command_topic, self._on_command, reliable)
        self.create_subscription(String, cfg.instruction_topic, self._on_instruction, reliable)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_timer(1.0 / cfg.camera_rate_hz, self._on_camera_timer)
        self.reset_episode()

    # ----------------------------------------------------------------------------- episodes
    def reset_episode(self) -> str:
        """New scene (next seed) and task; returns the instruction."""
        seed = self.config.seed + self.episodes
        self.episodes += 1
        self.world.reset(seed)
        kind = self.config.task_kind or None
        self.task = sample_task(self.world.state, np.random.default_rng([seed, 7]), kind)
        self.episode_success = False
        self._last_command_time = None
        self.task_pub.publish(String(data=self.task.instruction))
        if self.config.publish_instruction:
            self.instruction_pub.publish(String(data=self.task.instruction))
        self._publish_pose()
        self.get_logger().info(f"episode {self.episodes} (seed {seed}): {self.task.instruction!r}")
        return self.task.instruction

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.message = self.reset_episode()
        response.success = True
        return response

    def _on_instruction(self, msg: String) -> None:
        if self.task is not None and msg.data.strip() == self.task.instruction:
            return
        task = parse_instruction(msg.data, self.world.state)
        if task is not None:
            self.task = task
            self.episode_success = False
            self.task_pub.publish(String(data=task.instruction))

    # ----------------------------------------------------------------------------- commands
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _command_dt(self) -> float:
        now = self._now()
        last, self._last_command_time = self._last_command_time, now
        if last is None:
            return self.config.command_period_s
        return min(max(now - last, 0.0), MAX_COMMAND_DT_S)

    def _on_command(self, msg: EndEffectorCommand) -> None:
        translation = np.array([msg.translation.x, msg.translation.y, msg.translation.z])
        rotation = np.array([msg.rotation.x, msg.rotation.y, msg.rotation.z])
        if msg.hold:
            translation[:] = 0.0
            rotation[:] = 0.0
        self.execute(translation, rotation, float(msg.gripper), self._command_dt())

    def _on_twist(self, msg: TwistStamped) -> None:
        dt = self._command_dt()
        linear, angular = msg.twist.linear, msg.twist.angular
        period = self.config.command_period_s
        translation = np.array([linear.x, linear.y, linear.z]) * period
        rotation = np.array([angular.x, angular.y, angular.z]) * period
        self.execute(translation, rotation, self.world.state.gripper_opening, dt)

    def execute(self, translation: np.ndarray, rotation: np.ndarray, gripper: float, dt: float) -> None:
        """One tick of motion, limited like the robot would: non-finite input is ignored."""
        finite = np.all(np.isfinite(translation)) and np.all(np.isfinite(rotation))
        if not (finite and math.isfinite(gripper)):
            self.get_logger().warning("ignoring a non-finite command", throttle_duration_sec=2.0)
            return
        translation = _clip_norm(translation, self.limits.max_translation_step_m)
        rotation = _clip_norm(rotation, self.limits.max_rotation_step_rad)
        gripper = min(max(gripper, self.limits.gripper_min), self.limits.gripper_max)
        self.world.step(translation, rotation, gripper, dt)
        self.commands_executed += 1
        self._publish_pose()
        self._update_success()

    # ----------------------------------------------------------------------------- outputs
    def _update_success(self) -> None:
        if self.task is not None and not self.episode_success:
            self.episode_success = is_success(self.task, self.world.state, self.world.spec)

    def _publish_pose(self) -> None:
        pose = self.world.pose(0.0)
        msg = PoseStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.config.frame_id
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in pose.position)
        o = msg.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in pose.orientation)
        self.pose_pub.publish(msg)

    def _on_camera_timer(self) -> None:
        rgb = self.renderer.render(self.world.state)
        msg = Image()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = "camera"
        msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
        msg.encoding = "rgb8"
        msg.is_bigendian = 0
        msg.step = 3 * msg.width
        msg.data = rgb.tobytes()
        self.image_pub.publish(msg)
        self._update_success()
        self.success_pub.publish(Bool(data=bool(self.episode_success)))
        self._publish_pose()


def _clip_norm(vector: np.ndarray, limit: float) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector * (limit / norm) if norm > limit else vector


def main(argv: list[str] | None = None) -> int:
    """Run vla_sim until Ctrl-C (ROS arguments such as `--ros-args -p seed:=3` are accepted)."""
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        print("usage: vla-ros sim [--ros-args -p NAME:=VALUE ...]\n\n" + (__doc__ or ""))
        return 0
    rclpy.init(args=sys.argv if argv is None else ["vla_sim", *argv])
    try:
        node = SimNode()
    except ConfigError as exc:
        print(f"vla_sim: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
