"""Generate camera + instruction bags (tests, benchmarks, trying replay without a robot).

Frames come from any callable `frames(index, t_s) -> RGB uint8 [H, W, 3]`: `gradient_frames()` here,
or the tabletop simulator's (`vla_ros.sim.frames.sim_frames`), which callers that may import both
bag/ and sim/ (the CLI, tests) pass in. For multi-camera policies (OpenVLA-OFT) further cameras show a
wrist-like view (`wrist_frames`: the centre magnified and mirrored), and the robot state (a Panda's
JointState and end-effector PoseStamped, `arm_state`) follows a slow smooth motion. Times are fixed
(not the wall clock), so the same arguments give byte-identical bags.

    vla-ros make-bag OUT [--seconds 60] [--rate 30] [--storage mcap|sqlite3]
        [--extra-camera /wrist/image_raw] [--robot-state-rate 50]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from vla_ros.bag.io import (
    BOOL,
    COMPRESSED_IMAGE,
    IMAGE,
    JOINT_STATE,
    NS_PER_S,
    POSE_STAMPED,
    STRING,
    BagError,
    header_msg,
    msg_class,
    qos_profile,
    serialize,
)
from vla_ros.bag.writer import BagWriter
from vla_ros.core.images import encode_raw

FrameSource = Callable[[int, float], np.ndarray]  # frames(index, t_s) -> RGB uint8 [H, W, 3]
FrameFactory = Callable[[int, int, int], FrameSource]  # (seed, width, height) -> a FrameSource

DEFAULT_START_NS = 1_700_000_000 * NS_PER_S  # 2023-11-14, a fixed epoch for reproducible bags
DEFAULT_INSTRUCTIONS: tuple[tuple[float, str], ...] = (
    (0.0, "pick up the red cube"),
    (0.5, "put the blue ball in the bowl"),  # changes mid-bag (at half the duration)
)
ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")  # LIBERO's proprio ends with these two
JOINT_STATES_TOPIC = "/joint_states"
POSE_TOPIC = "/arm/pose"


def gradient_frames(width: int = 64, height: int = 48) -> FrameSource:
    """Cheap moving-gradient frames (no simulator)."""
    yy, xx = np.mgrid[0:height, 0:width]

    def frame(index: int, t_s: float) -> np.ndarray:
        r = (xx * 255 // max(width - 1, 1) + index) % 256
        g = (yy * 255 // max(height - 1, 1)) % 256
        b = np.full_like(r, (index * 7) % 256)
        return np.stack([r, g, b], -1).astype(np.uint8)

    return frame


def wrist_frames(frames: FrameSource, zoom: float = 2.0) -> FrameSource:
    """A second camera: the centre of `frames`' picture magnified `zoom` times and mirrored, same size."""

    def frame(index: int, t_s: float) -> np.ndarray:
        rgb = frames(index, t_s)
        height, width = rgb.shape[:2]
        crop_h, crop_w = max(1, int(height / zoom)), max(1, int(width / zoom))
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        mirrored = np.ascontiguousarray(rgb[top:top + crop_h, left:left + crop_w][:, ::-1])
        return cv2.resize(mirrored, (width, height), interpolation=cv2.INTER_LINEAR)

    return frame


def arm_state(t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A slow smooth arm motion at t_s: (positions of ARM_JOINTS then FINGER_JOINTS [9], end-effector
    position [3] m, orientation quaternion (x, y, z, w): pointing down, turning about the vertical)."""
    arm = 0.3 * np.sin(0.5 * t_s + np.arange(len(ARM_JOINTS)))
    fingers = np.full(len(FINGER_JOINTS), 0.02 + 0.015 * np.sin(0.8 * t_s))
    position = np.array([0.4 + 0.05 * np.sin(0.5 * t_s), 0.05 * np.cos(0.4 * t_s),
                         0.3 + 0.02 * np.sin(0.3 * t_s)])
    yaw = 0.3 * np.sin(0.25 * t_s)
    orientation = np.array([np.cos(yaw / 2), -np.sin(yaw / 2), 0.0, 0.0])  # (1, 0, 0, 0) turned by yaw
    return np.concatenate([arm, fingers]), position, orientation


def joint_state_message(names: Sequence[str], positions: np.ndarray, t_ns: int) -> bytes:
    """CDR bytes of a sensor_msgs/JointState with positions only."""
    empty = np.zeros(0, np.float64)
    return serialize(msg_class(JOINT_STATE)(header=header_msg(t_ns), name=list(names),
                                            position=np.asarray(positions, np.float64), velocity=empty,
                                            effort=empty))


def pose_message(position: np.ndarray, orientation: np.ndarray, t_ns: int,
                 frame_id: str = "base_link") -> bytes:
    """CDR bytes of a geometry_msgs/PoseStamped; orientation is (x, y, z, w)."""
    point, quat = msg_class("geometry_msgs/msg/Point"), msg_class("geometry_msgs/msg/Quaternion")
    x, y, z = (float(v) for v in position)
    qx, qy, qz, qw = (float(v) for v in orientation)
    pose = msg_class("geometry_msgs/msg/Pose")(position=point(x=x, y=y, z=z),
                                               orientation=quat(x=qx, y=qy, z=qz, w=qw))
    return serialize(msg_class(POSE_STAMPED)(header=header_msg(t_ns, frame_id), pose=pose))


def robot_state_events(start_ns: int, duration_s: float, rate_hz: float
                       ) -> list[tuple[int, int, str, str, bytes]]:
    """(t_ns, order, topic, msgtype, raw) of arm_state's JointState and PoseStamped at `rate_hz`, each
    0.5 ms after its tick (after a frame at the same time)."""
    period_ns = int(round(NS_PER_S / rate_hz))
    events = []
    for i in range(max(1, int(round(duration_s * rate_hz)))):
        t_ns = start_ns + i * period_ns + 500_000
        joints, position, orientation = arm_state(i * period_ns / NS_PER_S)
        events.append((t_ns, 3, JOINT_STATES_TOPIC, JOINT_STATE,
                       joint_state_message(ARM_JOINTS + FINGER_JOINTS, joints, t_ns)))
        events.append((t_ns, 4, POSE_TOPIC, POSE_STAMPED, pose_message(position, orientation, t_ns)))
    return events


def image_message(rgb: np.ndarray, t_ns: int, frame_id: str = "camera", encoding: str = "rgb8",
                  compressed: str = "") -> tuple[str, bytes]:
    """(msgtype, CDR bytes) of an Image in `encoding`, or a CompressedImage when compressed='jpeg'|'png'."""
    if compressed:
        ok, buf = cv2.imencode(".jpg" if compressed == "jpeg" else ".png",
                               cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        if not ok:
            raise BagError(f"cannot encode a frame as {compressed}")
        msg = msg_class(COMPRESSED_IMAGE)(header=header_msg(t_ns, frame_id), format=compressed,
                                          data=np.asarray(buf, np.uint8).reshape(-1))
        return COMPRESSED_IMAGE, serialize(msg)
    try:
        height, width, step, data = encode_raw(rgb, encoding)
    except ValueError:  # an encoding the encoder does not know: keep the pixels, label them as asked
        height, width = rgb.shape[:2]
        step, data = width * 3, np.ascontiguousarray(rgb).tobytes()
    msg = msg_class(IMAGE)(header=header_msg(t_ns, frame_id), height=height, width=width, encoding=encoding,
                           is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))
    return IMAGE, serialize(msg)


def write_camera_bag(path: str | Path, frames: FrameSource, duration_s: float = 4.0, rate_hz: float = 30.0,
                     instructions: Sequence[tuple[float, str]] = DEFAULT_INSTRUCTIONS,
                     instruction_times_are_fractions: bool = True,
                     camera_topic: str = "/camera/image_raw", instruction_topic: str = "/vla/instruction",
                     encoding: str = "rgb8", compressed: str = "", storage: str = "mcap",
                     start_ns: int = DEFAULT_START_NS, estop_at_s: float | None = None,
                     estop_topic: str = "/vla/estop", extra: Callable[[BagWriter], None] | None = None,
                     overwrite: bool = False, extra_cameras: Sequence[tuple[str, FrameSource]] = (),
                     robot_state_hz: float = 0.0) -> Path:
    """Write a bag with a camera at `rate_hz` for `duration_s` and the given instructions.

    Instruction times are fractions of the duration by default (0.5 = mid-bag), else seconds.
    `extra_cameras` (topic, frames) are written with the same encoding and log times as the primary,
    just before it (the primary, which paces inference, pairs with them); `robot_state_hz` > 0 adds
    arm_state's JointState and PoseStamped (JOINT_STATES_TOPIC, POSE_TOPIC). `extra(writer)` may add
    more topics before the bag is closed. An empty instruction_topic leaves the instructions out.
    Returns the bag path.
    """
    path = Path(path)
    n_frames = max(1, int(round(duration_s * rate_hz)))
    period_ns = int(round(NS_PER_S / rate_hz))
    string_cls = msg_class(STRING)
    events: list[tuple[int, int, str, str, bytes]] = []  # (t_ns, order, topic, msgtype, raw)
    for when, text in instructions if instruction_topic else ():
        t_s = when * duration_s if instruction_times_are_fractions else when
        # instructions land 1 ms after a frame so that the order is unambiguous
        events.append((start_ns + int(round(t_s * NS_PER_S)) + 1_000_000, 1, instruction_topic, STRING,
                       serialize(string_cls(data=text))))
    if estop_at_s is not None:
        events.append((start_ns + int(round(estop_at_s * NS_PER_S)) + 2_000_000, 2, estop_topic, BOOL,
                       serialize(msg_class(BOOL)(data=True))))
    if robot_state_hz > 0:
        events.extend(robot_state_events(start_ns, duration_s, robot_state_hz))
    events.sort()
    with BagWriter(path, storage=storage, overwrite=overwrite,
                   custom_data={"generator": "vla_ros.bag.make_bag"}) as writer:
        cam_type = COMPRESSED_IMAGE if compressed else IMAGE
        cameras = [(camera_topic, frames), *extra_cameras]
        for topic, _ in cameras:
            writer.add_topic(topic, cam_type, qos=[qos_profile(reliable=False, depth=5)])
        if instruction_topic:
            writer.add_topic(instruction_topic, STRING, qos=[qos_profile()])
        if estop_at_s is not None:
            writer.add_topic(estop_topic, BOOL, qos=[qos_profile()])
        if robot_state_hz > 0:
            writer.add_topic(JOINT_STATES_TOPIC, JOINT_STATE, qos=[qos_profile(reliable=False)])
            writer.add_topic(POSE_TOPIC, POSE_STAMPED, qos=[qos_profile()])
        pending = iter(events)
        nxt = next(pending, None)
        for i in range(n_frames):
            t_ns = start_ns + i * period_ns
            while nxt is not None and nxt[0] <= t_ns:
                writer.write(nxt[2], nxt[0], nxt[4])
                nxt = next(pending, None)
            for topic, source in cameras[1:] + cameras[:1]:  # the primary last: it pairs with these
                _, raw = image_message(source(i, i * period_ns / NS_PER_S), t_ns, encoding=encoding,
                                       compressed=compressed)
                writer.write(topic, t_ns, raw)
        while nxt is not None:
            writer.write(nxt[2], nxt[0], nxt[4])
            nxt = next(pending, None)
        if extra is not None:
            extra(writer)
    return path


def gradient_factory(seed: int, width: int, height: int) -> FrameSource:
    """gradient_frames as a FrameFactory (the seed does not matter)."""
    return gradient_frames(width, height)


def main(argv: list[str] | None = None, frames: FrameFactory = gradient_factory) -> int:
    """CLI: write a camera bag for trying `vla-ros replay`, its pictures from `frames`.

    The simulator's pictures (vla_ros.sim.frames.sim_frames) come from a caller that may import sim/.
    """
    ap = argparse.ArgumentParser(prog="vla-ros make-bag", description=__doc__.splitlines()[0])
    ap.add_argument("out", help="bag directory to create")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration [s]")
    ap.add_argument("--rate", type=float, default=30.0, help="camera rate [Hz]")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--size", type=int, default=224, help="square image side [px]")
    ap.add_argument("--compressed", choices=("", "jpeg", "png"), default="", help="CompressedImage format")
    ap.add_argument("--seed", type=int, default=0, help="simulator scene seed")
    ap.add_argument("--extra-camera", action="append", default=[], metavar="TOPIC",
                    help="a further camera (repeatable): the primary's centre magnified 2x, 3x, ... and "
                    "mirrored, for multi-camera policies (OpenVLA-OFT's wrist camera)")
    ap.add_argument("--robot-state-rate", type=float, default=0.0, metavar="HZ",
                    help=f"also write a Panda's {JOINT_STATES_TOPIC} and end-effector {POSE_TOPIC} at HZ "
                    "(proprio for OpenVLA-OFT; default 0 = none)")
    args = ap.parse_args(argv)
    try:
        primary = frames(args.seed, args.size, args.size)
        extra = [(topic, wrist_frames(primary, zoom=2.0 + i)) for i, topic in enumerate(args.extra_camera)]
        path = write_camera_bag(args.out, primary, args.seconds, args.rate, storage=args.storage,
                                compressed=args.compressed, extra_cameras=extra,
                                robot_state_hz=args.robot_state_rate)
    except BagError as exc:
        print(f"make_bag: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
