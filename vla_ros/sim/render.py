"""OpenCV rendering of the tabletop from a fixed oblique camera (RGB uint8).

The gripper's height shows three ways: it rises in the image, its straight-down shadow stays on
the table beneath it, and perspective makes it larger when it is nearer the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from vla_ros.sim.world import COLOURS, SceneObject, WorldState

TABLE_RGB = np.array([196, 186, 165], np.float64)
FLOOR_RGB = (70, 72, 82)
FINGER_RGB = np.array([55, 55, 60], np.float64)
PALM_RGB = np.array([95, 95, 105], np.float64)
STEM_RGB = np.array([165, 168, 178], np.float64)
LIGHT = np.array([0.35, -0.25, 0.9]) / np.linalg.norm([0.35, -0.25, 0.9])
TABLE_CORNERS = np.array([[0.24, -0.22, 0.0], [0.24, 0.22, 0.0], [0.68, 0.22, 0.0], [0.68, -0.22, 0.0]])


@dataclass
class CameraSpec:
    """A pinhole camera looking at the table from in front of it (robot at the far side)."""

    width: int = 224
    height: int = 224
    position_m: tuple[float, float, float] = (0.80, 0.0, 0.70)
    look_at_m: tuple[float, float, float] = (0.445, 0.0, 0.045)
    vertical_fov_deg: float = 33.0


class Camera:
    """Projects base-frame points to pixels."""

    def __init__(self, spec: CameraSpec | None = None) -> None:
        self.spec = c = spec or CameraSpec()
        self.position = np.array(c.position_m, np.float64)
        forward = np.array(c.look_at_m) - self.position
        self.forward = forward / np.linalg.norm(forward)
        right = np.cross(self.forward, [0.0, 0.0, 1.0])
        self.right = right / np.linalg.norm(right)
        self.down = np.cross(self.forward, self.right)
        self.focal_px = 0.5 * c.height / math.tan(math.radians(c.vertical_fov_deg) / 2)
        self.centre = np.array([c.width / 2, c.height / 2])

    def depth(self, points: np.ndarray) -> np.ndarray:
        """Distance along the optical axis [m] of points [N, 3]."""
        return (np.asarray(points) - self.position) @ self.forward

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixel coordinates (u right, v down) [N, 2] of points [N, 3] in front of the camera."""
        rel = np.asarray(points, np.float64).reshape(-1, 3) - self.position
        z = np.maximum(rel @ self.forward, 1e-6)
        return self.centre + self.focal_px * np.stack([rel @ self.right, rel @ self.down], 1) / z[:, None]


class Renderer:
    """Draws a WorldState; one instance per camera, reusable across frames."""

    def __init__(self, camera: CameraSpec | None = None) -> None:
        self.camera = Camera(camera)
        c = self.camera.spec
        self._background = np.empty((c.height, c.width, 3), np.uint8)
        self._background[:] = FLOOR_RGB
        self._fill(self._background, self.camera.project(TABLE_CORNERS), TABLE_RGB)

    def render(self, state: WorldState) -> np.ndarray:
        """RGB uint8 [H, W, 3] image of the state."""
        image = self._background.copy()
        for obj in state.objects:
            self._shadow_disc(image, obj.position[:2], 0.62 * obj.size, 0.72)
        self._gripper_shadow(image, state)
        # Painter's order: far things first. The gripper counts at its fingertip centre.
        items: list[tuple[float, object]] = [(float(self.camera.depth(o.position)), o) for o in state.objects]
        items.append((float(self.camera.depth(state.gripper_position)) - 1e-3, state))
        for _, item in sorted(items, key=lambda pair: -pair[0]):
            if isinstance(item, SceneObject):
                self._object(image, item)
            else:
                self._gripper(image, state)
        return image

    # ----------------------------------------------------------------------------- primitives
    def _fill(self, image: np.ndarray, uv: np.ndarray, rgb: np.ndarray) -> None:
        pts = np.round(uv * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(image, [pts], tuple(int(v) for v in np.clip(rgb, 0, 255)), cv2.LINE_AA, shift=4)

    def _prism(self, image: np.ndarray, footprint: np.ndarray, bottom: float, height: float,
               rgb: np.ndarray) -> None:
        """A convex prism over footprint [N, 2] (either winding), drawn face by visible face."""
        n = len(footprint)
        cam = self.camera
        vertices = np.concatenate([np.column_stack([footprint, np.full(n, bottom)]),
                                   np.column_stack([footprint, np.full(n, bottom + height)])])  # [2N, 3]
        uv = cam.project(vertices)  # [2N, 2]
        nxt = (np.arange(n) + 1) % n
        mids = 0.5 * (footprint + footprint[nxt])  # [N, 2]
        normals = mids - footprint.mean(0)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
        centres = np.column_stack([mids, np.full(n, bottom + height / 2)])  # [N, 3]
        to_camera = cam.position - centres
        facing = np.einsum("ij,ij->i", normals, to_camera[:, :2]) > 0
        depths = cam.depth(centres)
        light = 0.55 + 0.45 * np.maximum(0.0, normals @ LIGHT[:2])
        for i in sorted(np.flatnonzero(facing), key=lambda k: -depths[k]):
            j = nxt[i]
            self._fill(image, uv[[i, j, n + j, n + i]], rgb * light[i])
        if cam.position[2] > bottom + height:
            self._fill(image, uv[n:], rgb * (0.55 + 0.45 * LIGHT[2]))

    def _object(self, image: np.ndarray, obj: SceneObject) -> None:
        rgb = np.array(COLOURS[obj.colour], np.float64)
        half = obj.size / 2
        if obj.shape == "ball":
            centre = obj.position + [0.0, 0.0, half]
            uv = self.camera.project(centre[None])[0]
            radius = self.camera.focal_px * half / float(self.camera.depth(centre[None])[0])
            self._circle(image, uv, radius, rgb * 0.8)
            self._circle(image, uv - [0.18 * radius, 0.22 * radius], 0.62 * radius, rgb)
            self._circle(image, uv - [0.35 * radius, 0.4 * radius], 0.2 * radius,
                         np.minimum(rgb * 0.5 + 140, 255))
            return
        sides = 4 if obj.shape == "cube" else 12
        angles = obj.yaw + np.pi / 4 + np.arange(sides) * 2 * np.pi / sides
        radius = half * (math.sqrt(2.0) if sides == 4 else 1.0)
        footprint = obj.position[:2] + radius * np.column_stack([np.cos(angles), np.sin(angles)])
        self._prism(image, footprint, float(obj.position[2]), obj.size, rgb)

    def _circle(self, image: np.ndarray, uv: np.ndarray, radius: float, rgb: np.ndarray) -> None:
        colour = tuple(int(v) for v in np.clip(rgb, 0, 255))
        cv2.circle(image, tuple(int(v) for v in np.round(uv * 16)), max(1, int(round(radius * 16))),
                   colour, -1, cv2.LINE_AA, shift=4)

    def _shadow_disc(self, image: np.ndarray, xy: np.ndarray, radius: float, darkness: float) -> None:
        angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        ring = np.column_stack([xy[0] + radius * np.cos(angles), xy[1] + radius * np.sin(angles),
                                np.zeros_like(angles)])
        self._fill(image, self.camera.project(ring), TABLE_RGB * darkness)

    def _gripper_boxes(self, state: WorldState) -> list[tuple[np.ndarray, float, float, np.ndarray]]:
        """(footprint [4, 2], bottom z, height, colour) of the two fingers, the palm and the stem."""
        x, y, z = state.gripper_position
        yaw = state.gripper_yaw
        across = np.array([-math.sin(yaw), math.cos(yaw)])  # the direction the fingers close along
        along = np.array([math.cos(yaw), math.sin(yaw)])
        gap = state.gripper_opening * 0.085
        finger_t, finger_w, finger_h = 0.012, 0.022, 0.05

        def box(centre: np.ndarray, half_across: float, half_along: float) -> np.ndarray:
            corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
            return np.array([centre + a * half_across * across + b * half_along * along for a, b in corners])

        centre = np.array([x, y])
        boxes = []
        for side in (-1.0, 1.0):
            finger_centre = centre + side * (gap / 2 + finger_t / 2) * across
            boxes.append((box(finger_centre, finger_t / 2, finger_w / 2), z, finger_h, FINGER_RGB))
        palm_half = 0.085 / 2 + finger_t
        boxes.append((box(centre, palm_half, 0.016), z + finger_h, 0.018, PALM_RGB))
        boxes.append((box(centre, 0.014, 0.014), z + finger_h + 0.018, 0.30, STEM_RGB))
        return boxes

    def _gripper(self, image: np.ndarray, state: WorldState) -> None:
        boxes = self._gripper_boxes(state)
        boxes.sort(key=lambda b: -float(self.camera.depth(np.append(b[0].mean(0), b[1])[None])[0]))
        for footprint, bottom, height, rgb in boxes:
            self._prism(image, footprint, bottom, height, rgb)

    def _gripper_shadow(self, image: np.ndarray, state: WorldState) -> None:
        """Straight-down shadow of fingers and palm; fainter as the gripper rises."""
        height = float(state.gripper_position[2])
        darkness = min(0.8, 0.45 + 1.2 * height)
        for footprint, _, _, _ in self._gripper_boxes(state)[:3]:
            self._fill(image, self.camera.project(np.column_stack([footprint, np.zeros(4)])),
                       TABLE_RGB * darkness)

