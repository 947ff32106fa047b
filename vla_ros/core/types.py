"""The data that flows through vla_ros, free of ROS and of any model library."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

ACTION_DIM = 7  # dx, dy, dz [m], droll, dpitch, dyaw [rad], gripper [0 closed .. 1 open]


@dataclass(frozen=True)
class Pose:
    """End-effector pose: position [m] and orientation quaternion (x, y, z, w)."""

    position: np.ndarray  # float64 [3]
    orientation: np.ndarray  # float64 [4], x y z w
    stamp: float  # seconds on the control clock


@dataclass(frozen=True)
class Observation:
    """The primary camera's frame, RGB uint8 [H, W, 3], with the stamp it was taken at (seconds);
    optionally further cameras (in the checkpoint's camera order) and the robot's proprio vector."""

    rgb: np.ndarray
    stamp: float
    pose: Pose | None = None
    extra_images: tuple[np.ndarray, ...] = ()  # e.g. the wrist camera(s), RGB uint8 [H, W, 3] each
    proprio: np.ndarray | None = None  # float64 [P] in the checkpoint's layout (LIBERO: 8), robot units

    @property
    def images(self) -> tuple[np.ndarray, ...]:
        """Every camera's frame, primary first."""
        return (self.rgb, *self.extra_images)


@dataclass(frozen=True)
class Instruction:
    """A natural-language instruction; empty text means hold."""

    text: str
    stamp: float


@dataclass(frozen=True)
class ActionChunk:
    """Actions in robot units computed from one observation.

    `actions` is float64 [T, 7]: per-action-period deltas (m, rad) and an absolute gripper value.
    """

    actions: np.ndarray
    stamp: float  # stamp of the observation the chunk was computed from
    instruction: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


@runtime_checkable
class Policy(Protocol):
    """Anything that turns an observation and an instruction into an action chunk.

    Optional: `check_instruction(text) -> str | None`, why the policy cannot run `text` (None = usable),
    called once when an instruction arrives; without it every instruction is accepted. It must be cheap,
    thread-safe and picklable on its own (the process worker sends it from the child to the node).
    """

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk: ...

    def describe(self) -> str: ...


InstructionCheck = Callable[[str], "str | None"]  # instruction text -> why it is unusable, or None


@dataclass(frozen=True)
class PolicyInputs:
    """What a policy needs in each Observation and gives per call: cameras (primary first), the proprio
    length (0 = none) and the actions per chunk. A policy exposes it as its optional `inputs` attribute."""

    cameras: int = 1
    proprio_dim: int = 0
    chunk: int = 1


def policy_inputs(policy: object) -> PolicyInputs:
    """The policy's `inputs`, or the single-camera, no-proprio, one-action default."""
    inputs = getattr(policy, "inputs", None)
    return inputs if isinstance(inputs, PolicyInputs) else PolicyInputs()


def observation_problem(observation: Observation, inputs: PolicyInputs) -> str | None:
    """Why `observation` does not fit the policy's inputs (camera count, proprio length), or None."""
    n = len(observation.images)
    if n != inputs.cameras:
        return f"the policy takes {inputs.cameras} camera image(s), the observation has {n}"
    proprio = observation.proprio
    if inputs.proprio_dim == 0:
        return None
    if proprio is None:
        return f"the policy needs a proprio vector of {inputs.proprio_dim} values; none was given"
    p = np.asarray(proprio)
    if p.shape != (inputs.proprio_dim,):
        return f"the policy needs a proprio vector of {inputs.proprio_dim} values, got shape {p.shape}"
    if not np.all(np.isfinite(p)):
        return "the proprio vector contains NaN or Inf"
    return None


def instruction_check(policy: object) -> InstructionCheck | None:
    """The policy's optional check_instruction, or None when it has none (every instruction is fine)."""
    check = getattr(policy, "check_instruction", None)
    return check if callable(check) else None


def validate_chunk(chunk: ActionChunk) -> str | None:
    """Return why a chunk is unusable (shape, dtype, non-finite values), or None when it is fine."""
    a = chunk.actions
    if not isinstance(a, np.ndarray) or a.ndim != 2 or a.shape[1] != ACTION_DIM or a.shape[0] < 1:
        shape = getattr(a, "shape", type(a).__name__)
        return f"action chunk must be [T>=1, {ACTION_DIM}], got {shape}"
    if not np.all(np.isfinite(a)):
        return "action chunk contains NaN or Inf"
    return None
