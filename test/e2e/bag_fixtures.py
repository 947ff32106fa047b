"""Bags for the replay tests, generated at test time from the tabletop simulator's renderer."""

from __future__ import annotations

import hashlib
from pathlib import Path

from vla_ros.bag.make_bag import wrist_frames, write_camera_bag
from vla_ros.sim.frames import sim_frames

DURATION_S = 4.0
CAMERA_HZ = 30.0
INSTRUCTIONS = ((0.0, "pick up the red cube"), (0.5, "put the blue ball in the bowl"))  # change mid-bag
IMAGE_SIDE = 112  # small frames keep the suite fast; the renderer is the demo's


def make_sim_bag(path: Path, storage: str = "mcap", duration_s: float = DURATION_S, **kwargs) -> Path:
    """A simulator camera bag (30 Hz rgb8) with an instruction that changes at half the duration."""
    kwargs.setdefault("instructions", INSTRUCTIONS)
    return write_camera_bag(path, sim_frames(seed=3, width=IMAGE_SIDE, height=IMAGE_SIDE), duration_s,
                            CAMERA_HZ, storage=storage, **kwargs)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----- OpenVLA-OFT (LIBERO form): two cameras, joint states and pose, a tiny converted checkpoint -----

WRIST_TOPIC = "/wrist/image_raw"
STATE_HZ = 50.0  # joint states and end-effector pose
OFT_SETTINGS = (  # --set values: the bag's wrist camera, LIBERO's proprio (pose + fingers), 20 Hz actions
    "topics.extra_cameras=[/wrist/image_raw]", "topics.pose=/arm/pose", "policy.proprio_source=pose_gripper",
    "policy.proprio_gripper_joints=[panda_finger_joint1, panda_finger_joint2]",
    "control.action_period_s=0.05", "control.control_rate_hz=20",
    "policy.action_scale=[0.05, 0.05, 0.05, 0.5, 0.5, 0.5]")


def make_oft_bag(path: Path, duration_s: float = DURATION_S, wrist: bool = True, robot_state: bool = True,
                 **kwargs) -> Path:
    """A simulator bag for the LIBERO form: the primary camera, a wrist view of it (magnified, mirrored),
    a Panda's joint states and end-effector pose at STATE_HZ, the instruction changing mid-bag."""
    primary = sim_frames(seed=3, width=IMAGE_SIDE, height=IMAGE_SIDE)
    kwargs.setdefault("instructions", INSTRUCTIONS)
    return write_camera_bag(path, primary, duration_s, CAMERA_HZ,
                            extra_cameras=[(WRIST_TOPIC, wrist_frames(primary))] if wrist else (),
                            robot_state_hz=STATE_HZ if robot_state else 0.0, **kwargs)


def make_oft_checkpoint(path: Path) -> Path:
    """A tiny random OpenVLA-OFT LIBERO release (2 cameras, proprio 8, chunk 8) converted into `path`."""
    from vla_ros.model.convert import main as convert_main
    from vla_ros.model.tiny_oft import write_tiny_oft_release

    release = write_tiny_oft_release(path.parent / f"{path.name}_release", form="libero")
    if convert_main([str(release), str(path), "--preset", "libero"]) != 0:
        raise RuntimeError("converting the tiny OFT LIBERO release failed")
    return path
