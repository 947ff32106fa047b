"""A replay's inputs: which bag topics drive the core, and their messages decoded as the node does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_ros.bag.convert import check_image_format, image_rgb
from vla_ros.bag.io import (
    ACTION_CHUNK,
    BOOL,
    COMPRESSED_IMAGE,
    IMAGE,
    JOINT_STATE,
    NS_PER_S,
    POSE_STAMPED,
    STRING,
    BagReader,
    deserialize,
)
from vla_ros.core.config import NodeConfig
from vla_ros.core.inputs import pose_from_fields
from vla_ros.core.proprio import pick_joint_positions
from vla_ros.core.types import Pose


def resolve_topic(name: str, namespace: str = "/", node_name: str = "vla_node") -> str:
    """Absolute topic name of a config entry: relative names go under `namespace`, ~/ under the node."""
    if name.startswith("/"):
        return name
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if name.startswith("~/"):
        return f"{ns}/{node_name}/{name[2:]}"
    return f"{ns}/{name}"


@dataclass(frozen=True)
class ReplayTopics:
    """The node's topics, resolved in the replay's namespace (pose and joint_states are empty when not
    read; extra_cameras follow the primary camera in the checkpoint's camera order; chunk: the ActionChunk
    topic between the halves, split.chunk_topic)."""

    camera: str
    instruction: str
    estop: str
    pose: str
    command: str
    status: str
    extra_cameras: tuple[str, ...] = ()
    joint_states: str = ""
    chunk: str = ""

    @property
    def cameras(self) -> tuple[str, ...]:
        """Every camera topic, primary first."""
        return (self.camera, *self.extra_cameras)

    @staticmethod
    def resolve(config: NodeConfig, namespace: str, status_topic: str) -> ReplayTopics:
        t = config.topics
        reads_joints = config.policy.proprio_source != "none"  # both proprio sources read joint positions
        return ReplayTopics(resolve_topic(t.camera, namespace), resolve_topic(t.instruction, namespace),
                            resolve_topic(t.estop, namespace),
                            resolve_topic(t.pose, namespace) if t.pose else "",
                            resolve_topic(t.command, namespace), resolve_topic(status_topic, namespace),
                            tuple(resolve_topic(c, namespace) for c in t.extra_cameras),
                            resolve_topic(t.joint_states, namespace) if reads_joints else "",
                            resolve_topic(config.split.chunk_topic, namespace))


def input_topics(bag: BagReader, topics: ReplayTopics, require_pose: bool, fixed_instruction: bool,
                 proprio_source: str = "none", cameras_required: bool = True,
                 read_chunks: bool = False) -> dict[str, str]:
    """topic -> type of every bag topic the replay reads; BagError when a needed one is missing.

    Every camera is needed (unless not `cameras_required`: then read when present), and the joint states
    for a proprio source; the instruction unless one is given on the command line; the pose when
    safety.require_pose is set or the proprio source is pose_gripper; the chunk topic with `read_chunks`
    (a control-only replay). The e-stop (and the pose otherwise) are read when present.
    """
    wanted = []
    for index, camera in enumerate(topics.cameras):
        if cameras_required or camera in bag.topics:
            role = f"camera (topics.extra_cameras[{index - 1}])" if index else "camera"
            bag.require(camera, (IMAGE, COMPRESSED_IMAGE), role=role)
            wanted.append(camera)
    if read_chunks:
        bag.require(topics.chunk, (ACTION_CHUNK,), role="action chunk (split.chunk_topic)")
        wanted.append(topics.chunk)
    if topics.joint_states:
        bag.require(topics.joint_states, (JOINT_STATE,),
                    role=f"joint states (policy.proprio_source is {proprio_source})")
        wanted.append(topics.joint_states)
    if topics.instruction in bag.topics or not fixed_instruction:
        bag.require(topics.instruction, (STRING,), role="instruction")
        wanted.append(topics.instruction)
    if topics.estop in bag.topics:
        bag.require(topics.estop, (BOOL,), role="e-stop")
        wanted.append(topics.estop)
    if topics.pose:
        if topics.pose in bag.topics:
            bag.require(topics.pose, (POSE_STAMPED,), role="pose")
            wanted.append(topics.pose)
        elif proprio_source == "pose_gripper":
            bag.require(topics.pose, (POSE_STAMPED,), role="pose (policy.proprio_source is pose_gripper)")
        elif require_pose:
            bag.require(topics.pose, (POSE_STAMPED,), role="pose (safety.require_pose is set)")
    return {t: bag.topics[t].msgtype for t in wanted}


def decode_image(raw: bytes, msgtype: str, min_size: tuple[int, int] | None = None) -> tuple[Any, np.ndarray]:
    """(message, RGB uint8 [H, W, 3]) of a camera frame; ImageError for an encoding we do not decode."""
    msg = deserialize(raw, msgtype)
    check_image_format(msg, msgtype)
    return msg, image_rgb(msg, msgtype, min_size)


def image_encoding(msg: Any) -> str:
    """The encoding of an Image or the format of a CompressedImage (for the summary)."""
    return str(getattr(msg, "encoding", "") or getattr(msg, "format", ""))


def decode_estop(raw: bytes, msgtype: str) -> bool:
    """Whether a std_msgs/Bool e-stop message asks to stop."""
    return bool(deserialize(raw, msgtype).data)


def decode_pose(raw: bytes, msgtype: str, log_ns: int) -> Pose:
    """The node's pose conversion (unit quaternion check), stamped with the receipt (log) time."""
    msg = deserialize(raw, msgtype)
    p, q = msg.pose.position, msg.pose.orientation
    return pose_from_fields((p.x, p.y, p.z), (q.x, q.y, q.z, q.w), log_ns / NS_PER_S)


def decode_joint_positions(raw: bytes, msgtype: str, joints: tuple[str, ...]) -> np.ndarray:
    """The positions of `joints`, by name, from a sensor_msgs/JointState (ProprioError when one lacks)."""
    msg = deserialize(raw, msgtype)
    return pick_joint_positions(list(msg.name), np.asarray(msg.position, dtype=np.float64), joints)
