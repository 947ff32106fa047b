"""ROS messages <-> vla_ros types: images, instructions, poses, and the three command outputs.

Everything that can be wrong in an incoming message raises `InputError` (or `ImageError`, both
ValueError) with a message fit for a log line; the node counts and rejects those inputs.
"""

from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image

from vla_ros.control.safety import Command, intervention_names
from vla_ros.core.images import (
    MAX_COMPRESSED_BYTES,
    MAX_PIXELS,
    CompressedFrame,
    ImageError,
    RawFrame,
)
from vla_ros.core.inputs import pose_from_fields
from vla_ros.core.proprio import axis_angle_from_quat as rotvec_from_quat  # also the name tests use
from vla_ros.core.stamps import NS_PER_S, ns_to_seconds, seconds_to_ns
from vla_ros.core.types import Pose
from vla_ros.msg import EndEffectorCommand

# Serialized camera messages larger than this are rejected before deserialization
# (the largest acceptable frame, MAX_PIXELS at 4 bytes per pixel, plus header room).
MAX_IMAGE_MESSAGE_BYTES = MAX_PIXELS * 4 + 65536
MAX_COMPRESSED_MESSAGE_BYTES = MAX_COMPRESSED_BYTES + 65536


# ----- time --------------------------------------------------------------------------------------
def seconds_to_time(seconds: float) -> Time:
    """builtin_interfaces/Time from seconds (non-finite or negative -> zero time)."""
    if not math.isfinite(seconds) or seconds <= 0.0:
        return Time()
    ns = seconds_to_ns(seconds)  # exact: time_to_seconds gives the same float back
    return Time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def time_to_seconds(stamp: Time) -> float:
    """Seconds from builtin_interfaces/Time, correctly rounded."""
    return ns_to_seconds(stamp.sec * NS_PER_S + stamp.nanosec)


# ----- camera ------------------------------------------------------------------------------------
def camera_frame(raw: bytes, compressed: bool, stamp: float, pose: Pose | None = None,
                 min_size: tuple[int, int] | None = None) -> CompressedFrame | RawFrame:
    """A serialized Image / CompressedImage after the cheap checks (size before parsing, header, end
    marker), not decoded yet; `min_size`: see vla_ros.core.images.decode_compressed."""
    limit = MAX_COMPRESSED_MESSAGE_BYTES if compressed else MAX_IMAGE_MESSAGE_BYTES
    if len(raw) > limit:
        raise ImageError(f"camera message of {len(raw)} bytes is too large (limit {limit})")
    msg_type = CompressedImage if compressed else Image
    try:
        msg = deserialize_message(raw, msg_type)
    except Exception as exc:  # malformed CDR from a foreign publisher
        raise ImageError(f"cannot deserialize {msg_type.__name__}: {exc}") from exc
    if compressed:
        return CompressedFrame.checked(msg.format, msg.data, stamp, pose, min_size)
    return RawFrame.checked(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data,
                            stamp, pose)


def raw_camera_to_rgb(raw: bytes, compressed: bool, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a serialized Image / CompressedImage, refusing oversized messages before parsing."""
    return camera_frame(raw, compressed, 0.0, min_size=min_size).decode().rgb


# ----- pose --------------------------------------------------------------------------------------
def pose_from_msg(msg: PoseStamped, stamp: float) -> Pose:
    """Pose (unit quaternion) from a PoseStamped; `stamp` is the receipt time on the node clock."""
    p, q = msg.pose.position, msg.pose.orientation
    return pose_from_fields((p.x, p.y, p.z), (q.x, q.y, q.z, q.w), stamp)


# ----- rotations (quaternions are x, y, z, w) ----------------------------------------------------
def quat_from_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Quaternion of R = Rz(yaw) Ry(pitch) Rx(roll) (fixed-axis roll, pitch, yaw, as in tf2)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return np.array([sr * cp * cy - cr * sp * sy,
                     cr * sp * cy + sr * cp * sy,
                     cr * cp * sy - sr * sp * cy,
                     cr * cp * cy + sr * sp * sy])


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b (apply b, then a)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz])


# ----- commands out ------------------------------------------------------------------------------
def command_to_end_effector(cmd: Command, frame_id: str) -> EndEffectorCommand:
    """vla_ros/EndEffectorCommand carrying everything the filter decided."""
    msg = EndEffectorCommand()
    msg.header.stamp = seconds_to_time(cmd.stamp)
    msg.header.frame_id = frame_id
    t, r = cmd.translation, cmd.rotation
    msg.translation.x, msg.translation.y, msg.translation.z = float(t[0]), float(t[1]), float(t[2])
    msg.rotation.x, msg.rotation.y, msg.rotation.z = float(r[0]), float(r[1]), float(r[2])
    msg.gripper = float(cmd.gripper)
    msg.hold = bool(cmd.hold)
    msg.interventions = int(cmd.interventions)
    msg.intervention_names = intervention_names(cmd.interventions)
    if cmd.source_stamp is not None:
        msg.source_stamp = seconds_to_time(cmd.source_stamp)
    return msg


def command_to_twist(cmd: Command, frame_id: str, tick_period_s: float) -> TwistStamped:
    """TwistStamped for MoveIt Servo's delta_twist_cmds: velocity = this tick's delta / tick period."""
    msg = TwistStamped()
    msg.header.stamp = seconds_to_time(cmd.stamp)
    msg.header.frame_id = frame_id
    v = np.asarray(cmd.translation, dtype=np.float64) / tick_period_s
    w = rotvec_from_quat(quat_from_rpy(*map(float, cmd.rotation))) / tick_period_s
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(w))):
        v, w = np.zeros(3), np.zeros(3)  # cannot happen after the filter; never publish NaN
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = map(float, v)
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = map(float, w)
    return msg


def command_to_pose_target(cmd: Command, pose: Pose, frame_id: str) -> PoseStamped:
    """Absolute PoseStamped target: current pose moved by this tick's delta (rotation applied in frame_id)."""
    msg = PoseStamped()
    msg.header.stamp = seconds_to_time(cmd.stamp)
    msg.header.frame_id = frame_id
    position = np.asarray(pose.position, dtype=np.float64) + np.asarray(cmd.translation, np.float64)
    q = quat_multiply(quat_from_rpy(*map(float, cmd.rotation)), np.asarray(pose.orientation, np.float64))
    q = q / np.linalg.norm(q)
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = map(float, position)
    msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w = \
        map(float, q)
    return msg


OUTPUT_TYPES = {"end_effector": EndEffectorCommand, "twist": TwistStamped, "pose": PoseStamped}


def command_message(cmd: Command, output_mode: str, frame_id: str, tick_period_s: float,
                    pose: Pose | None = None) -> EndEffectorCommand | TwistStamped | PoseStamped:
    """The message of `cmd` for topics.output_mode (an OUTPUT_TYPES key); "pose" needs the current `pose`."""
    if output_mode == "end_effector":
        return command_to_end_effector(cmd, frame_id)
    if output_mode == "twist":
        return command_to_twist(cmd, frame_id, tick_period_s)
    if pose is None:
        raise ValueError("output_mode 'pose' needs the current end-effector pose")
    return command_to_pose_target(cmd, pose, frame_id)
