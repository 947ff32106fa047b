"""The safety filter: a pure function from (raw step or HOLD, state, inputs, limits, now) to a command.

Every command the package publishes, HOLD included, comes out of `apply_filter`. The rules, in order:

1. Gates, first match wins, each forcing HOLD and setting one bit: non-finite numbers anywhere
   (NON_FINITE), e-stop (ESTOP), policy fault (FAULT), disarmed (DISARMED), image watchdog
   (STALE_IMAGE), action watchdog (STALE_ACTION), no instruction (NO_INSTRUCTION), pose required
   but not fresh (STALE_POSE). A stamp counts as stale when |now - stamp| exceeds its limit, so a
   stamp far in the future (clocks that disagree) cannot keep a watchdog open.
2. Motion limits on the translation and, separately, the rotation vector (roll/pitch/yaw deltas):
   the per-tick step limit and the velocity limit (|delta| <= v_max * tick_period_s) SCALE the
   whole vector, keeping its direction (as MoveIt Servo does); the acceleration limit bounds the
   change of velocity between consecutive ticks, |v - v_prev| <= a_max * tick_period_s, by moving
   from v_prev towards the request as far as allowed. The nominal tick period is used throughout,
   never the measured one, so a stalled loop never yields a bigger step. After a gap of more than
   `STALL_TICKS` tick periods (or when time runs backwards) the previous velocity is taken as zero:
   the robot has most likely stopped, so motion ramps up again from rest.
3. Workspace, when a fresh, finite pose is known (whether or not `require_pose` is set), per axis
   of the translation (so the command may slide along a wall):
   - braking curve: the velocity towards a wall is capped so that, after this tick's step s, the
     robot can still stop at the wall decelerating at max_linear_acceleration_mps2:
     s^2 / (2 a dt^2) + s <= d, i.e. s <= 2 d / (1 + sqrt(1 + 2 d / (a dt^2))). If the pose follows
     the commands this cap never asks for more than a * dt of deceleration in one tick, so
     approaching a wall is a smooth, acceleration-limited stop;
   - the same cap is a hard cut: s <= d, so the commanded position never leaves the box;
   - d is measured from the pose pushed forward by the previous velocity times the pose's age
     (only when that brings it closer to the wall), which covers commands still in flight;
   - on an axis where the pose is already outside the box, only motion back towards it is allowed.
4. Gripper: clipped to [gripper_min, gripper_max], then slew-limited to
   max_gripper_speed_per_s * tick_period_s per tick.

Stops are exempt from the deceleration limit: a HOLD (zero delta) and a cut at the workspace
boundary may change the velocity by more than a_max * dt. A HOLD means the data behind the motion
can no longer be trusted, and continuing on it to respect a deceleration ramp would be worse than
stopping; a wall cut is the last line that keeps the arm in its box. With the conservative
defaults the largest such jump is 0.25 m/s. Drivers that abort on velocity discontinuities
(libfranka's reflexes at 1 kHz) need their own rate limiter or a smoothing stage downstream
(libfranka's limit_rate, MoveIt Servo's smoothing plugin). Every rule that changed the command sets
its bit in `Command.interventions`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vla_ros.core.limits import SafetyLimits
from vla_ros.core.types import Pose

if TYPE_CHECKING:  # only for annotations: the scheduler imports nothing from here
    from vla_ros.control.scheduler import ScheduledStep

STALL_TICKS = 2.5  # a longer tick gap is a stall: velocity forgotten, actions in it dropped (ControlCore)


class Intervention(enum.IntFlag):
    """Bits of `Command.interventions`; the values are the constants of msg/EndEffectorCommand.msg."""

    NON_FINITE = 1
    DISARMED = 2
    ESTOP = 4
    STALE_IMAGE = 8
    STALE_ACTION = 16
    NO_INSTRUCTION = 32
    TRANSLATION_STEP = 64
    ROTATION_STEP = 128
    LINEAR_VELOCITY = 256
    LINEAR_ACCELERATION = 512
    ANGULAR_VELOCITY = 1024
    ANGULAR_ACCELERATION = 2048
    WORKSPACE = 4096
    GRIPPER_RANGE = 8192
    GRIPPER_SLEW = 16384
    STALE_POSE = 32768
    FAULT = 65536


# Plain ints for the hot path (IntFlag arithmetic is slow).
_NON_FINITE = int(Intervention.NON_FINITE)
_DISARMED = int(Intervention.DISARMED)
_ESTOP = int(Intervention.ESTOP)
_STALE_IMAGE = int(Intervention.STALE_IMAGE)
_STALE_ACTION = int(Intervention.STALE_ACTION)
_NO_INSTRUCTION = int(Intervention.NO_INSTRUCTION)
_TRANSLATION_STEP = int(Intervention.TRANSLATION_STEP)
_ROTATION_STEP = int(Intervention.ROTATION_STEP)
_LINEAR_VELOCITY = int(Intervention.LINEAR_VELOCITY)
_LINEAR_ACCELERATION = int(Intervention.LINEAR_ACCELERATION)
_ANGULAR_VELOCITY = int(Intervention.ANGULAR_VELOCITY)
_ANGULAR_ACCELERATION = int(Intervention.ANGULAR_ACCELERATION)
_WORKSPACE = int(Intervention.WORKSPACE)
_GRIPPER_RANGE = int(Intervention.GRIPPER_RANGE)
_GRIPPER_SLEW = int(Intervention.GRIPPER_SLEW)
_STALE_POSE = int(Intervention.STALE_POSE)
_FAULT = int(Intervention.FAULT)

# The gates: any of these bits means the command is a HOLD forced by a closed gate.
GATE_BITS = (_NON_FINITE | _DISARMED | _ESTOP | _STALE_IMAGE | _STALE_ACTION | _NO_INSTRUCTION
             | _STALE_POSE | _FAULT)
_ALL_BITS = sum(int(f) for f in Intervention)
_NAMED_BITS = tuple((int(f), f.name) for f in Intervention)


def intervention_names(mask: int) -> list[str]:
    """Names of the bits set in `mask`, in bit order; unknown bits as 'UNKNOWN_0x...'."""
    mask = int(mask)
    names = [name for bit, name in _NAMED_BITS if mask & bit]
    unknown = mask & ~_ALL_BITS
    if unknown:
        names.append(f"UNKNOWN_0x{unknown:x}")
    return names


def _read_only(values: tuple[float, float, float]) -> np.ndarray:
    arr = np.array(values, dtype=np.float64)
    arr.setflags(write=False)
    return arr


_ZERO3 = _read_only((0.0, 0.0, 0.0))  # shared by every HOLD; read-only so nobody can alter it


@dataclass(frozen=True)
class Command:
    """One filtered command for one control tick."""

    stamp: float  # tick time [s]
    translation: np.ndarray  # float64 [3], metres this tick (read-only array)
    rotation: np.ndarray  # float64 [3], roll/pitch/yaw radians this tick (read-only array)
    gripper: float  # absolute, 0 closed .. 1 open
    hold: bool
    interventions: int  # Intervention bits
    source_stamp: float | None  # stamp of the observation the action came from (None for HOLD)


@dataclass(frozen=True)
class FilterInputs:
    """Everything the gates need, gathered by the caller at tick time."""

    armed: bool
    estopped: bool
    fault: bool
    image_stamp: float | None  # newest image time [s] on the control clock
    instruction_active: bool  # a non-empty instruction is in force
    pose: Pose | None  # latest end-effector pose, or None


@dataclass(frozen=True)
class FilterState:
    """What the filter remembers between ticks: velocities of the last command [m/s, rad/s]."""

    last_stamp: float | None
    linear_velocity: np.ndarray  # float64 [3], m/s
    angular_velocity: np.ndarray  # float64 [3], rad/s
    gripper: float  # last commanded gripper

    @staticmethod
    def initial(gripper: float = 1.0) -> FilterState:
        """At rest, no tick yet, the gripper at `gripper` (finite, 0..1)."""
        gripper = float(gripper)
        if not (math.isfinite(gripper) and 0.0 <= gripper <= 1.0):
            raise ValueError(f"initial gripper must be a number in [0, 1], got {gripper!r}")
        return FilterState(None, _ZERO3, _ZERO3, gripper)


def _vec3(value: object) -> tuple[float, float, float] | None:
    """Three finite floats from a length-3 sequence, or None when it is anything else."""
    try:
        if isinstance(value, np.ndarray):
            if value.shape != (3,):
                return None
            x, y, z = (float(v) for v in value.tolist())  # tolist: fast, and plain floats
        else:
            if len(value) != 3:  # type: ignore[arg-type]
                return None
            x, y, z = float(value[0]), float(value[1]), float(value[2])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return None
    if math.isfinite(x) and math.isfinite(y) and math.isfinite(z):
        return x, y, z
    return None


def _finite(value: object) -> bool:
    try:
        return math.isfinite(value)  # type: ignore[arg-type]
    except TypeError:
        return False


def _pose_position(pose: Pose) -> tuple[float, float, float] | None:
    """The pose's position when the whole pose (position, orientation, stamp) is finite and well formed."""
    position = _vec3(pose.position)
    if position is None or not _finite(pose.stamp):
        return None
    try:
        quat = pose.orientation
        orientation = [float(v) for v in (quat.tolist() if isinstance(quat, np.ndarray) else quat)]
    except (TypeError, ValueError):
        return None
    if len(orientation) != 4 or not all(math.isfinite(v) for v in orientation):
        return None
    return position


def _limit_norm(x: float, y: float, z: float, limit: float) -> tuple[float, float, float, bool]:
    """Scale (x, y, z) down to length `limit` if longer; direction kept. Returns the flag too."""
    norm = math.sqrt(x * x + y * y + z * z)
    if norm <= limit:
        return x, y, z, False
    scale = limit / norm if norm > 0.0 else 0.0  # norm is inf only for values ~1e154+: scale 0
    return x * scale, y * scale, z * scale, True


def _limit_change(x: float, y: float, z: float, px: float, py: float, pz: float,
                  limit: float) -> tuple[float, float, float, bool]:
    """Move from (px, py, pz) towards (x, y, z) by at most `limit` (vector change limit)."""
    dx, dy, dz = x - px, y - py, z - pz
    change = math.sqrt(dx * dx + dy * dy + dz * dz)
    if change <= limit:
        return x, y, z, False
    scale = limit / change
    return px + dx * scale, py + dy * scale, pz + dz * scale, True


def braking_step(distance: float, accel: float, dt: float) -> float:
    """Largest step towards a wall `distance` away after which the robot can still stop in time.

    Solves s^2 / (2 accel dt^2) + s = distance for s >= 0 (continuous stopping distance of the
    velocity s / dt, which bounds the discrete one), in the cancellation-free form.
    """
    if distance <= 0.0:
        return 0.0
    k = accel * dt * dt
    if k <= 0.0:
        return 0.0
    return 2.0 * distance / (1.0 + math.sqrt(1.0 + 2.0 * distance / k))


def _hold(state: FilterState, limits: SafetyLimits, stamp: float, bits: int) -> tuple[Command, FilterState]:
    """HOLD: zero delta, gripper kept (clipped into range if the range moved)."""
    gripper = state.gripper
    if not math.isfinite(gripper):
        gripper = limits.gripper_max  # only reachable with a hand-made state; flagged below
        bits |= _NON_FINITE
    if gripper < limits.gripper_min or gripper > limits.gripper_max:
        gripper = min(max(gripper, limits.gripper_min), limits.gripper_max)
        bits |= _GRIPPER_RANGE
    command = Command(stamp, _ZERO3, _ZERO3, gripper, True, bits, None)
    return command, FilterState(stamp, _ZERO3, _ZERO3, gripper)


def _stale(now: float, stamp: float, max_age: float) -> bool:
    return abs(now - stamp) > max_age


def _limit_motion(delta, previous, max_step: float, max_speed_step: float, max_change: float,
                  rule_bits: tuple[int, int, int]) -> tuple[float, float, float, int]:
    """Per-tick step, velocity and acceleration limits on one 3-vector (translation or rotation):
    (x, y, z, bits of the rules that changed it). Norms are scaled, so the direction is kept."""
    step_bit, speed_bit, change_bit = rule_bits
    x, y, z = delta
    bits = 0
    x, y, z, hit = _limit_norm(x, y, z, max_step)
    bits |= step_bit if hit else 0
    x, y, z, hit = _limit_norm(x, y, z, max_speed_step)
    bits |= speed_bit if hit else 0
    x, y, z, hit = _limit_change(x, y, z, *previous, max_change)
    bits |= change_bit if hit else 0
    # Guard: with a state that did not come from this filter (other limits, hand-made) the
    # acceleration step could leave the speed ball; scale back in (a no-op otherwise).
    x, y, z, hit = _limit_norm(x, y, z, min(max_step, max_speed_step))
    bits |= speed_bit if hit else 0
    return x, y, z, bits


def apply_filter(step: ScheduledStep | None, state: FilterState, inputs: FilterInputs,
                 limits: SafetyLimits, tick_period_s: float, now: float) -> tuple[Command, FilterState]:
    """Filter one raw step (None = HOLD) into the command for the tick at `now`; see the module doc."""
    dt = tick_period_s
    clock_ok = _finite(now)
    stamp = float(now) if clock_ok else (state.last_stamp if state.last_stamp is not None else 0.0)

    # --- gates --------------------------------------------------------------------------------
    translation = rotation = None
    gripper = 0.0
    source_stamp = 0.0
    finite = clock_ok and _finite(dt) and dt > 0.0
    if finite and step is not None:
        translation = _vec3(step.translation)
        rotation = _vec3(step.rotation)
        gripper, source_stamp = step.gripper, step.source_stamp
        finite = (translation is not None and rotation is not None and _finite(gripper)
                  and _finite(source_stamp))
    position = None
    pose = inputs.pose
    if finite and pose is not None:
        position = _pose_position(pose)
        finite = position is not None
    if finite and inputs.image_stamp is not None:
        finite = _finite(inputs.image_stamp)
    if not finite:
        return _hold(state, limits, stamp, _NON_FINITE)
    if inputs.estopped:
        return _hold(state, limits, stamp, _ESTOP)
    if inputs.fault:
        return _hold(state, limits, stamp, _FAULT)
    if not inputs.armed:
        return _hold(state, limits, stamp, _DISARMED)
    if inputs.image_stamp is None or _stale(now, inputs.image_stamp, limits.max_image_age_s):
        return _hold(state, limits, stamp, _STALE_IMAGE)
    if step is not None and _stale(now, source_stamp, limits.max_action_age_s):
        return _hold(state, limits, stamp, _STALE_ACTION)
    if not inputs.instruction_active:
        return _hold(state, limits, stamp, _NO_INSTRUCTION)
    pose_fresh = position is not None and not _stale(now, pose.stamp, limits.max_pose_age_s)
    if limits.require_pose and not pose_fresh:
        return _hold(state, limits, stamp, _STALE_POSE)
    if step is None:
        return _hold(state, limits, stamp, 0)
    assert translation is not None and rotation is not None  # for type checkers: finite above

    # --- motion limits --------------------------------------------------------------------------
    bits = 0
    previous = state.last_stamp
    elapsed = (now - previous) if previous is not None else math.inf
    if 0.0 <= elapsed <= STALL_TICKS * dt:
        vx, vy, vz = state.linear_velocity.tolist()
        wx, wy, wz = state.angular_velocity.tolist()
        ptx, pty, ptz = vx * dt, vy * dt, vz * dt  # previous per-tick deltas
        prx, pry, prz = wx * dt, wy * dt, wz * dt
        if not all(map(math.isfinite, (ptx, pty, ptz, prx, pry, prz))):  # a hand-made state only
            ptx = pty = ptz = prx = pry = prz = 0.0
    else:  # first tick, a stall or time running backwards: start again from rest
        ptx = pty = ptz = prx = pry = prz = 0.0

    tx, ty, tz, hit_bits = _limit_motion(
        translation, (ptx, pty, ptz), limits.max_translation_step_m, limits.max_linear_velocity_mps * dt,
        limits.max_linear_acceleration_mps2 * dt * dt,
        (_TRANSLATION_STEP, _LINEAR_VELOCITY, _LINEAR_ACCELERATION))
    bits |= hit_bits
    rx, ry, rz, hit_bits = _limit_motion(
        rotation, (prx, pry, prz), limits.max_rotation_step_rad, limits.max_angular_velocity_radps * dt,
        limits.max_angular_acceleration_radps2 * dt * dt,
        (_ROTATION_STEP, _ANGULAR_VELOCITY, _ANGULAR_ACCELERATION))
    bits |= hit_bits

    # --- workspace --------------------------------------------------------------------------------
    if pose_fresh:
        assert position is not None
        age = max(0.0, now - pose.stamp)
        accel = limits.max_linear_acceleration_mps2
        lo, hi = limits.workspace_min_m, limits.workspace_max_m
        deltas = [tx, ty, tz]
        previous_deltas = (ptx, pty, ptz)
        for axis in range(3):
            delta = deltas[axis]
            if delta == 0.0:
                continue
            p = position[axis]
            drift = previous_deltas[axis] / dt * age  # travel of the commands since the pose
            if delta > 0.0:
                distance = hi[axis] - max(p, p + drift)
                allowed = braking_step(distance, accel, dt)
                if delta > allowed:
                    deltas[axis] = allowed
                    bits |= _WORKSPACE
            else:
                distance = min(p, p + drift) - lo[axis]
                allowed = braking_step(distance, accel, dt)
                if -delta > allowed:
                    deltas[axis] = -allowed
                    bits |= _WORKSPACE
        tx, ty, tz = deltas

    # --- gripper ------------------------------------------------------------------------------------
    g = float(gripper)
    if g < limits.gripper_min or g > limits.gripper_max:
        g = min(max(g, limits.gripper_min), limits.gripper_max)
        bits |= _GRIPPER_RANGE
    held = state.gripper if math.isfinite(state.gripper) else g
    slew = limits.max_gripper_speed_per_s * dt
    if g > held + slew:
        g = held + slew
        bits |= _GRIPPER_SLEW
    elif g < held - slew:
        g = held - slew
        bits |= _GRIPPER_SLEW
    if g < limits.gripper_min or g > limits.gripper_max:  # held value outside a moved range
        g = min(max(g, limits.gripper_min), limits.gripper_max)
        bits |= _GRIPPER_RANGE

    translation_out = np.array((tx, ty, tz))
    rotation_out = np.array((rx, ry, rz))
    translation_out.setflags(write=False)  # a Command is immutable, like the shared HOLD zeros
    rotation_out.setflags(write=False)
    command = Command(stamp, translation_out, rotation_out, g, False, bits, float(source_stamp))
    new_state = FilterState(stamp, translation_out / dt, rotation_out / dt, g)
    return command, new_state
