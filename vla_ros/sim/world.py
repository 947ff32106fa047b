"""Tabletop world, physics-lite: a parallel gripper (position, yaw, opening) and a few objects.

Frame: the robot base frame, x forward, y left, z up [m]; the table top is z = 0. The gripper's
position is the point between its fingertips. Commands are per-tick deltas (translation [m],
rotation roll/pitch/yaw [rad]; only yaw turns the top-down gripper) and an absolute opening
(1 open .. 0 closed). An object is grasped when closing fingers pass its width while it sits between
them at low height; a grasped object follows the gripper until the fingers open again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from vla_ros.core.types import Pose

# Name -> RGB. Distinct hues so that a small vision tower tells them apart at 112 px.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 60),
    "blue": (40, 85, 225),
    "yellow": (235, 200, 25),
    "purple": (145, 55, 195),
}
SHAPES: tuple[str, ...] = ("cube", "ball", "cylinder")

STATE_OBJECT_FIELDS = 7  # colour index, shape index, x, y, z, yaw, size
STATE_GRIPPER_FIELDS = 6  # x, y, z, yaw, opening, held index (-1 = none)


@dataclass
class WorldSpec:
    """Geometry and ranges of the tabletop world (metres, radians)."""

    spawn_min_xy: tuple[float, float] = (0.33, -0.13)  # object centres are drawn in this box
    spawn_max_xy: tuple[float, float] = (0.57, 0.13)
    min_object_separation_m: float = 0.085  # centre-to-centre, so one object fits between fingers
    object_size_range_m: tuple[float, float] = (0.038, 0.046)  # width (and height) of an object
    n_objects_range: tuple[int, int] = (3, 5)  # inclusive
    gripper_start_min: tuple[float, float, float] = (0.40, -0.06, 0.13)
    gripper_start_max: tuple[float, float, float] = (0.50, 0.06, 0.17)
    gripper_min_m: tuple[float, float, float] = (0.22, -0.25, 0.0)  # reachable box of the fingertips
    gripper_max_m: tuple[float, float, float] = (0.70, 0.25, 0.22)
    max_finger_gap_m: float = 0.085  # fingertip gap when fully open
    gripper_speed_per_s: float = 5.0  # opening change per second of the fingers themselves
    grasp_tolerance_m: float = 0.02  # largest horizontal offset of an object that still gets grasped
    grasp_max_height_frac: float = 0.8  # fingertips must be below this fraction of the object height
    lift_success_m: float = 0.05  # a held target whose bottom is this high counts as lifted


@dataclass
class SceneObject:
    """One object on the table: colour and shape names, bottom-centre position, yaw, width."""

    colour: str
    shape: str
    position: np.ndarray  # float64 [3], bottom centre [m]
    yaw: float = 0.0
    size: float = 0.042  # width = height [m]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class WorldState:
    """Everything the renderer and the expert need; copyable and serialisable to one flat array."""

    objects: list[SceneObject]
    gripper_position: np.ndarray  # float64 [3] fingertip centre [m]
    gripper_yaw: float = 0.0
    gripper_opening: float = 1.0  # 1 open .. 0 closed
    held: int = -1  # index into objects, -1 = nothing held
    grasp_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # held object - gripper

    def copy(self) -> WorldState:
        objects = [replace(o, position=o.position.copy()) for o in self.objects]
        return replace(self, objects=objects, gripper_position=self.gripper_position.copy(),
                       grasp_offset=self.grasp_offset.copy())

    def to_array(self, max_objects: int = 5) -> np.ndarray:
        """Flat float32 [6 + 7 * max_objects]; unused object rows have colour index -1."""
        out = np.full(STATE_GRIPPER_FIELDS + STATE_OBJECT_FIELDS * max_objects, -1.0, np.float32)
        out[:6] = (*self.gripper_position, self.gripper_yaw, self.gripper_opening, self.held)
        colours, shapes = list(COLOURS), list(SHAPES)
        for i, o in enumerate(self.objects[:max_objects]):
            row = STATE_GRIPPER_FIELDS + STATE_OBJECT_FIELDS * i
            out[row:row + STATE_OBJECT_FIELDS] = (colours.index(o.colour), shapes.index(o.shape),
                                                  *o.position, o.yaw, o.size)
        return out

    @staticmethod
    def from_array(values: np.ndarray) -> WorldState:
        """Inverse of `to_array` (the grasp offset is recomputed from the positions)."""
        v = np.asarray(values, dtype=np.float64)
        colours, shapes = list(COLOURS), list(SHAPES)
        objects = []
        for row in range(STATE_GRIPPER_FIELDS, v.size, STATE_OBJECT_FIELDS):
            c, s, x, y, z, yaw, size = v[row:row + STATE_OBJECT_FIELDS]
            if c < 0:
                break
            objects.append(SceneObject(colours[int(c)], shapes[int(s)], np.array([x, y, z]), yaw, size))
        state = WorldState(objects, v[0:3].copy(), float(v[3]), float(v[4]), int(v[5]))
        if 0 <= state.held < len(objects):
            state.grasp_offset = objects[state.held].position - state.gripper_position
        else:
            state.held = -1
        return state


class TabletopWorld:
    """The simulator core: reset to a random scene, step with per-tick commands, report the pose."""

    def __init__(self, spec: WorldSpec | None = None) -> None:
        self.spec = spec or WorldSpec()
        self.state = WorldState([], np.array([0.45, 0.0, 0.15]))

    # ----------------------------------------------------------------------------- scene
    def reset(self, seed: int | None = None, n_objects: int | None = None) -> WorldState:
        """A new random scene (distinct colours, random shapes and poses) and gripper start."""
        rng = np.random.default_rng(seed)
        cfg = self.spec
        lo, hi = cfg.n_objects_range
        count = int(n_objects if n_objects is not None else rng.integers(lo, hi + 1))
        count = max(1, min(count, len(COLOURS)))
        colours = rng.choice(list(COLOURS), size=count, replace=False)
        centres = self._sample_centres(rng, count)
        objects = [
            SceneObject(str(colour), str(rng.choice(SHAPES)), np.array([x, y, 0.0]),
                        float(rng.uniform(-math.pi / 4, math.pi / 4)),
                        float(rng.uniform(*cfg.object_size_range_m)))
            for colour, (x, y) in zip(colours, centres)
        ]
        start = rng.uniform(cfg.gripper_start_min, cfg.gripper_start_max)
        self.state = WorldState(objects, start.astype(np.float64), 0.0, 1.0)
        return self.state

    def set_state(self, state: WorldState) -> None:
        """Replace the whole state (tests, replays)."""
        self.state = state.copy()

    def _sample_centres(self, rng: np.random.Generator, count: int) -> list[tuple[float, float]]:
        cfg = self.spec
        for _ in range(1000):
            centres: list[tuple[float, float]] = []
            for _ in range(200):
                x, y = rng.uniform(cfg.spawn_min_xy, cfg.spawn_max_xy)
                if all(math.hypot(x - cx, y - cy) >= cfg.min_object_separation_m for cx, cy in centres):
                    centres.append((float(x), float(y)))
                    if len(centres) == count:
                        return centres
        raise RuntimeError(f"cannot place {count} objects {cfg.min_object_separation_m} m apart")

    # ----------------------------------------------------------------------------- dynamics
    def finger_gap(self, opening: float | None = None) -> float:
        """Fingertip gap [m] for an opening in [0, 1]."""
        value = self.state.gripper_opening if opening is None else opening
        return float(value) * self.spec.max_finger_gap_m

    def step(self, translation: np.ndarray, rotation: np.ndarray, gripper: float, dt: float) -> None:
        """Execute one tick: move by `translation` [m], turn by rotation[2] [rad], drive the fingers
        toward the absolute `gripper` opening at the finger speed for `dt` seconds."""
        s, cfg = self.state, self.spec
        translation = np.nan_to_num(np.asarray(translation, dtype=np.float64)[:3])
        d_yaw = float(np.nan_to_num(np.asarray(rotation, dtype=np.float64)[2]))
        target = float(np.clip(np.nan_to_num(gripper, nan=s.gripper_opening), 0.0, 1.0))

        low = np.array(cfg.gripper_min_m)
        if s.held >= 0:  # the carried object cannot go through the table
            low[2] = max(low[2], -s.grasp_offset[2])
        s.gripper_position = np.clip(s.gripper_position + translation, low, cfg.gripper_max_m)
        s.gripper_yaw = _wrap(s.gripper_yaw + d_yaw)

        previous_gap = self.finger_gap()
        max_change = cfg.gripper_speed_per_s * max(dt, 0.0)
        s.gripper_opening = float(s.gripper_opening + np.clip(target - s.gripper_opening,
                                                              -max_change, max_change))
        if s.held >= 0:
            self._carry(d_yaw)
        else:
            self._maybe_grasp(previous_gap)

    def _carry(self, d_yaw: float) -> None:
        """Keep the held object between the fingers, or drop it when the fingers open."""
        s, cfg = self.state, self.spec
        obj = s.objects[s.held]
        blocked = obj.size / cfg.max_finger_gap_m  # fingers rest on the object
        if s.gripper_opening > blocked + 0.08:
            obj.position = np.array([obj.position[0], obj.position[1], 0.0])  # falls to the table
            s.held = -1
            return
        s.gripper_opening = max(s.gripper_opening, blocked)
        c, si = math.cos(d_yaw), math.sin(d_yaw)
        ox, oy, oz = s.grasp_offset
        s.grasp_offset = np.array([c * ox - si * oy, si * ox + c * oy, oz])
        obj.position = s.gripper_position + s.grasp_offset
        obj.yaw = _wrap(obj.yaw + d_yaw)

    def _maybe_grasp(self, previous_gap: float) -> None:
        """Closing fingers that pass an object's width while it sits between them grasp it."""
        s, cfg = self.state, self.spec
        gap = self.finger_gap()
        index = self.object_between_fingers()
        if index < 0:
            return
        obj = s.objects[index]
        if gap <= obj.size <= previous_gap:
            s.held = index
            s.grasp_offset = obj.position - s.gripper_position
            s.gripper_opening = obj.size / cfg.max_finger_gap_m

    def object_between_fingers(self) -> int:
        """Index of the object that closing fingers would grasp now, or -1."""
        s, cfg = self.state, self.spec
        best, best_distance = -1, cfg.grasp_tolerance_m
        tip_z = s.gripper_position[2]
        for i, obj in enumerate(s.objects):
            distance = math.hypot(*(obj.position[:2] - s.gripper_position[:2]))
            low_enough = obj.position[2] - 0.01 <= tip_z <= obj.position[2] + cfg.grasp_max_height_frac \
                * obj.size
            if low_enough and distance <= best_distance:
                best, best_distance = i, distance
        return best

    # ----------------------------------------------------------------------------- readouts
    def pose(self, stamp: float) -> Pose:
        """End-effector pose: fingertip centre and a yaw-only orientation quaternion (x, y, z, w)."""
        half = 0.5 * self.state.gripper_yaw
        return Pose(self.state.gripper_position.copy(),
                    np.array([0.0, 0.0, math.sin(half), math.cos(half)]), stamp)

    def lifted(self, index: int) -> bool:
        """True when object `index` is held and its bottom is at least lift_success_m high."""
        s = self.state
        return bool(s.held == index and s.objects[index].position[2] >= self.spec.lift_success_m)


def _wrap(angle: float) -> float:
    """Angle wrapped to (-pi, pi]."""
    return float(math.atan2(math.sin(angle), math.cos(angle)))
