"""ControlCore: the control logic shared by the ROS node, the offline bag replay and the simulator.

It owns the arm/e-stop/fault state, the instruction in force, the watchdog stamps (one image age
gate per camera), the action scheduler (chunk alignment and combining, see `chunks.py`), the command
jump at chunk switches and the safety filter's state. Callers feed it events with times on their own clock
(node clock, sim time or a bag's timeline) and call `tick(now)` at the control rate; every command
it returns went through `apply_filter`. All methods are thread-safe (one lock, held briefly), so a
worker thread may call `on_chunk` while a timer calls `tick`.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from vla_ros.control.chunks import ChunkSettings
from vla_ros.control.safety import (
    STALL_TICKS,
    Command,
    FilterInputs,
    FilterState,
    Intervention,
    apply_filter,
    intervention_names,
)
from vla_ros.control.scheduler import ActionScheduler
from vla_ros.control.switches import ChunkReport, SwitchMonitor
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.schema import validate
from vla_ros.core.types import ActionChunk, Pose, validate_chunk


class ControlCore:
    """Events in, one filtered command per tick out. Starts DISARMED with no instruction."""

    def __init__(self, limits: SafetyLimits, tick_period_s: float, action_period_s: float,
                 initial_gripper: float = 1.0, chunking: ChunkSettings | None = None,
                 cameras: dict[str, float] | None = None, future_tolerance_s: float = 0.05) -> None:
        """`chunking`: how chunks are aligned and combined (default: the `control.chunk_*` defaults);
        `cameras`: name -> max image age [s] (default: one camera "camera" with limits.max_image_age_s);
        `future_tolerance_s`: how far in the future a chunk's stamp may lie (clocks of two computers).
        Raises ConfigError for invalid limits and ValueError for invalid periods, gripper or cameras."""
        validate(limits)
        if not (math.isfinite(tick_period_s) and tick_period_s > 0.0):
            raise ValueError(f"tick_period_s must be a positive number, got {tick_period_s!r}")
        self._limits = limits
        self._tick = float(tick_period_s)
        self._future_tolerance_s = float(future_tolerance_s)
        # After a stall the scheduler drops what fell in between instead of replaying it in a burst.
        self._scheduler = ActionScheduler(action_period_s, max_tick_gap_s=STALL_TICKS * self._tick,
                                          settings=chunking or ChunkSettings())
        self._camera_limits = _camera_limits(cameras, limits.max_image_age_s)
        # Every camera has the filter's own limit: the oldest stamp trips the filter's check exactly.
        self._uniform_image_age = all(age == limits.max_image_age_s for age in self._camera_limits.values())
        self._image_stamps: dict[str, float] = {}
        self._switches = SwitchMonitor()
        self._chunk_delay_s = -1.0
        self._chunk_skipped = 0
        gripper = float(initial_gripper)
        if math.isfinite(gripper):
            gripper = min(max(gripper, limits.gripper_min), limits.gripper_max)
        self._filter_state = FilterState.initial(gripper)  # raises ValueError on NaN / out of 0..1
        self._lock = threading.Lock()
        self._armed = False
        self._estopped = False
        self._fault: str | None = None
        self._instruction = ""
        self._instruction_active = False
        self._instruction_stamp: float | None = None
        self._pose: Pose | None = None
        self._last_chunk_stamp: float | None = None
        self._last_command: Command | None = None
        self._last_error = ""
        self._counters: dict[str, int] = {
            "commands": 0, "interventions": 0, "holds": 0, "rejected_chunks": 0,
            "rejected_chunks_instruction": 0, "rejected_chunks_invalid": 0, "rejected_chunks_stale": 0,
            "rejected_poses": 0, "rejected_images": 0,
            "rejected_chunks_late": 0, "rejected_chunks_old": 0, "rejected_chunks_future": 0,
            "dropped_actions": 0,
        }
        self._counters.update({flag.name: 0 for flag in Intervention})

    # ----- inputs ------------------------------------------------------------------------------------
    def on_image(self, stamp: float, camera: str = "camera") -> bool:
        """An image of `camera` taken at `stamp` arrived (feeds its age gate); False (rejected, counted)
        for a bad stamp or an unknown camera."""
        with self._lock:
            if camera not in self._camera_limits:
                self._counters["rejected_images"] += 1
                self._last_error = (f"image from unknown camera {camera!r} "
                                    f"(cameras: {', '.join(self._camera_limits)})")
                return False
            if not _is_finite_number(stamp):
                self._counters["rejected_images"] += 1
                self._last_error = f"image stamp must be a finite number, got {stamp!r}"
                return False
            self._image_stamps[camera] = float(stamp)
            return True

    def on_instruction(self, text: str, now: float) -> bool:
        """Put `text` in force; True when it changed. A change drops the scheduled actions at once."""
        with self._lock:
            if text == self._instruction:
                return False
            self._instruction = text
            self._instruction_active = bool(text.strip())
            self._instruction_stamp = float(now)
            self._scheduler.clear()
            return True

    def on_pose(self, pose: Pose) -> bool:
        """The latest end-effector pose; False (rejected, counted) when it is not finite or malformed."""
        with self._lock:
            try:
                position = np.asarray(pose.position, dtype=np.float64)
                orientation = np.asarray(pose.orientation, dtype=np.float64)
                ok = (position.shape == (3,) and orientation.shape == (4,)
                      and bool(np.isfinite(position).all() and np.isfinite(orientation).all())
                      and math.isfinite(float(pose.stamp)))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                self._counters["rejected_poses"] += 1
                self._last_error = "end-effector pose is malformed or not finite"
                return False
            self._pose = pose
            return True

    def on_chunk(self, chunk: ActionChunk, now: float) -> bool:
        """Schedule `chunk`; False (rejected, counted) for another instruction, an invalid chunk, one older
        than safety.max_action_age_s or stamped in the future, or one not newer than the one playing."""
        with self._lock:
            if chunk.instruction != self._instruction or not self._instruction_active:
                return self._reject("instruction", "action chunk computed for instruction "
                                    f"{chunk.instruction[:60]!r}, in force: {self._instruction[:60]!r}")
            problem = validate_chunk(chunk)
            if problem is None and not _is_finite_number(chunk.stamp):
                problem = f"action chunk stamp must be a finite number, got {chunk.stamp!r}"
            if problem is not None:
                return self._reject("invalid", problem)
            age = now - float(chunk.stamp)
            if age > self._limits.max_action_age_s:
                return self._reject("old", f"action chunk arrived {age:.3f} s after its observation, more "
                                    f"than safety.max_action_age_s = {self._limits.max_action_age_s:g} s")
            if -age > self._future_tolerance_s:
                return self._reject("future", f"action chunk stamped {-age:.3f} s in the future: the clocks "
                                    "of the policy and control halves disagree")
            if not self._scheduler.push(chunk, now):
                arrival = self._scheduler.last_arrival
                if arrival is not None and arrival.late:
                    return self._reject("late", f"action chunk from {arrival.delay_s:.3f} s ago arrived "
                                        f"after all its {len(chunk.actions)} actions had passed")
                return self._reject("stale", f"action chunk stamp {chunk.stamp!r} is not newer than "
                                    f"the one playing ({self._scheduler.current_stamp!r})")
            arrival = self._scheduler.last_arrival
            assert arrival is not None  # set by every accepted push
            self._counters["dropped_actions"] += arrival.skipped
            self._chunk_delay_s, self._chunk_skipped = arrival.delay_s, arrival.skipped
            self._switches.on_switch(arrival.takeover)
            self._last_chunk_stamp = float(chunk.stamp)
            return True

    def reject_chunk(self, why: str, message: str) -> None:
        """Count a chunk the caller rejected before on_chunk (why: instruction, invalid, stale, late,
        old or future) with the reason as last_error."""
        with self._lock:
            self._reject(why, message)

    def _reject(self, why: str, message: str) -> bool:
        if "rejected_chunks_" + why not in self._counters:
            raise ValueError(f"unknown chunk rejection {why!r}")
        self._counters["rejected_chunks"] += 1
        self._counters["rejected_chunks_" + why] += 1
        self._last_error = message
        return False

    def set_armed(self, armed: bool) -> None:
        """Arm (publish filtered actions) or disarm (HOLD only; scheduled actions are dropped)."""
        with self._lock:
            if not armed:
                self._scheduler.clear()
            self._armed = bool(armed)

    def estop(self) -> None:
        """Latch the e-stop: HOLD until reset_estop(); scheduled actions are dropped."""
        with self._lock:
            self._estopped = True
            self._scheduler.clear()

    def reset_estop(self) -> None:
        """Release the e-stop latch (actions scheduled before it are gone)."""
        with self._lock:
            self._estopped = False
            self._scheduler.clear()

    def set_fault(self, reason: str | None) -> None:
        """Enter FAULT with a reason (HOLD, actions dropped), or leave it with None."""
        with self._lock:
            if reason is not None:
                self._fault = str(reason) or "fault"
                self._last_error = self._fault
                self._scheduler.clear()
            else:
                self._fault = None

    # ----- the control tick ------------------------------------------------------------------------
    def tick(self, now: float) -> Command:
        """The command for the tick at `now`: scheduler step (or HOLD) through the safety filter."""
        with self._lock:
            step = self._scheduler.next(now)
            self._switches.observe(now, step)
            inputs = FilterInputs(
                armed=self._armed, estopped=self._estopped, fault=self._fault is not None,
                image_stamp=self._gate_image_stamp(now), instruction_active=self._instruction_active,
                pose=self._pose)
            command, self._filter_state = apply_filter(step, self._filter_state, inputs, self._limits,
                                                       self._tick, now)
            counters = self._counters
            counters["commands"] += 1
            bits = command.interventions
            if command.hold:
                counters["holds"] += 1
            if bits:
                counters["interventions"] += 1
                for name in intervention_names(bits):
                    counters[name] += 1
            self._last_command = command
            return command

    def wants_inference(self, now: float) -> bool:
        """Whether a new inference should start at `now`: no chunk in force, a one-action chunk, or at
        least `replan_fraction` of the current chunk's duration played."""
        with self._lock:
            return self._scheduler.wants_chunk(now)

    def stale_camera(self, now: float) -> str | None:
        """The first camera (in the configured order) without an image or whose newest image is older
        than its limit at `now`; None when every camera is fresh."""
        with self._lock:
            return self._stale_camera(now)

    def _stale_camera(self, now: float) -> str | None:
        for name, max_age in self._camera_limits.items():
            stamp = self._image_stamps.get(name)
            if stamp is None or abs(now - stamp) > max_age:
                return name
        return None

    def _gate_image_stamp(self, now: float) -> float | None:
        """The image stamp for apply_filter: its check (|now - stamp| > limits.max_image_age_s) trips
        exactly when some camera is missing or older than its own limit."""
        stamps = self._image_stamps
        if len(stamps) < len(self._camera_limits):
            return None
        if not self._uniform_image_age:
            return now - 2.0 * self._limits.max_image_age_s if self._stale_camera(now) is not None else now
        if len(stamps) == 1:
            return next(iter(stamps.values()))
        return max(stamps.values(), key=lambda stamp: abs(now - stamp))  # the one most out of date

    # ----- read-only status --------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """DISARMED, ARMED, HOLDING (armed but the last command was a HOLD), ESTOPPED or FAULT."""
        if self._estopped:
            return "ESTOPPED"
        if self._fault is not None:
            return "FAULT"
        if not self._armed:
            return "DISARMED"
        last = self._last_command
        if last is None:
            return "ARMED" if self._instruction_active else "HOLDING"
        return "HOLDING" if last.hold else "ARMED"

    @property
    def instruction(self) -> str:
        return self._instruction

    @property
    def instruction_stamp(self) -> float | None:
        """When the instruction in force was received (None before the first)."""
        return self._instruction_stamp

    @property
    def image_stamp(self) -> float | None:
        """The oldest of the cameras' newest image stamps (None until every camera has sent one)."""
        stamps = self._image_stamps
        return min(stamps.values()) if len(stamps) == len(self._camera_limits) else None

    @property
    def image_stamps(self) -> dict[str, float]:
        """Each camera's newest image stamp (cameras without an image yet are absent)."""
        with self._lock:
            return dict(self._image_stamps)

    @property
    def cameras(self) -> dict[str, float]:
        """Camera name -> max image age [s], in the configured order."""
        return dict(self._camera_limits)

    @property
    def chunk_report(self) -> ChunkReport:
        """Chunk switches with their command jumps; the last accepted chunk's delay and skipped actions."""
        with self._lock:
            monitor = self._switches
            return ChunkReport(monitor.switches, monitor.jump_last, monitor.jump_max, self._chunk_delay_s,
                               self._chunk_skipped)

    @property
    def future_tolerance_s(self) -> float:
        """How far in the future a chunk's stamp may lie [s] (split.clock_tolerance_s)."""
        return self._future_tolerance_s

    @property
    def max_action_age_s(self) -> float:
        """The safety limit on a chunk's age [s] (safety.max_action_age_s)."""
        return self._limits.max_action_age_s

    @property
    def last_chunk_stamp(self) -> float | None:
        """Stamp (source observation) of the last accepted chunk."""
        return self._last_chunk_stamp

    @property
    def pose(self) -> Pose | None:
        return self._pose

    @property
    def armed(self) -> bool:
        return self._armed

    @property
    def estopped(self) -> bool:
        return self._estopped

    @property
    def fault(self) -> str | None:
        """The fault reason, or None."""
        return self._fault

    @property
    def last_error(self) -> str:
        """The last rejection or fault, human readable ('' when none)."""
        return self._last_error

    @property
    def remaining_actions(self) -> int:
        """Actions of the current chunk not yet started."""
        return self._scheduler.remaining

    @property
    def counters(self) -> dict[str, int]:
        """A copy of the counters: commands, holds, interventions (commands with any bit), one per rule
        (Intervention names), rejected_chunks (+ _instruction/_invalid/_stale/_late/_old/_future),
        rejected_poses/_images, dropped_actions (of accepted chunks, passed on arrival)."""
        with self._lock:
            return dict(self._counters)


def _camera_limits(cameras: dict[str, float] | None, default_age_s: float) -> dict[str, float]:
    """Validated camera name -> max image age [s]; one camera "camera" when None."""
    if cameras is None:
        return {"camera": float(default_age_s)}
    if not cameras:
        raise ValueError("cameras must name at least one camera")
    limits: dict[str, float] = {}
    for name, age in cameras.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"camera names must be non-empty strings, got {name!r}")
        if isinstance(age, bool) or not isinstance(age, (int, float)) or not (math.isfinite(age) and age > 0):
            raise ValueError(f"max image age of camera {name!r} must be a positive number [s], got {age!r}")
        limits[name] = float(age)
    return limits


def _is_finite_number(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
