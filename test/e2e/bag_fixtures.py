"""Bags for the replay tests, generated at test time from the tabletop simulator's renderer."""

from __future__ import annotations

import hashlib
from pathlib import Path

from vla_ros.bag.make_bag import write_camera_bag
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
