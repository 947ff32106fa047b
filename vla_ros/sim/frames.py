"""Camera frames of the tabletop with a scripted gripper motion, for generated bags (no expert needed)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from vla_ros.sim.render import CameraSpec, Renderer
from vla_ros.sim.world import TabletopWorld


def sim_frames(seed: int = 0, width: int = 224, height: int = 224) -> Callable[[int, float], np.ndarray]:
    """`frames(index, t_s) -> RGB uint8 [H, W, 3]`: the gripper circles over the table of scene `seed`."""
    world = TabletopWorld()
    base = world.reset(seed=seed)
    renderer = Renderer(CameraSpec(width=width, height=height))
    centre = base.gripper_position.copy()

    def frame(index: int, t_s: float) -> np.ndarray:
        state = base.copy()
        state.gripper_position = centre + np.array([0.05 * math.cos(0.8 * t_s), 0.05 * math.sin(0.8 * t_s),
                                                    0.02 * math.sin(0.5 * t_s)])
        state.gripper_yaw = 0.3 * math.sin(0.4 * t_s)
        state.gripper_opening = 0.5 + 0.5 * math.cos(0.6 * t_s)
        return renderer.render(state)

    return frame
