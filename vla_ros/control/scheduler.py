"""Spreads model actions over control ticks: each action is a delta over `action_period_s`.

Timeline of a chunk pushed at time t0 (the push time, or the last tick if that is later):
action k spans [t0 + k*P, t0 + (k+1)*P). A call `next(now)` hands out the share of the deltas
for the window (t_prev, now], t_prev being the previous call (or t0 for the first call after a
push): sum over k of overlap(window, span_k) / P * delta_k. The windows tile time, so the deltas
handed out add up to the actions exactly whatever the tick jitter. The gripper is absolute: the
value of the action in force at `now`.

A window longer than `max_tick_gap_s` (a stalled loop) is cut to its last `max_tick_gap_s`: what
fell before is dropped, never replayed in a burst; actions whose span lies entirely in the dropped
part are skipped. A newer chunk replaces whatever is left of the older one; the old chunk's share between the
last tick and the push is still owed and is handed out with the next tick, so re-planning often
(a fast model) never loses motion. Times are kept relative to t0, so
large clock values (seconds since 1970) do not cost precision in the sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vla_ros.core.types import ACTION_DIM, ActionChunk


@dataclass(frozen=True)
class ScheduledStep:
    """The raw (unfiltered) command for one control tick."""

    translation: np.ndarray  # float64 [3], metres for this tick (share of the actions' deltas)
    rotation: np.ndarray  # float64 [3], roll/pitch/yaw radians for this tick
    gripper: float  # absolute, 0 closed .. 1 open
    source_stamp: float  # chunk.stamp: when the observation behind it was taken


class ActionScheduler:
    """Plays action chunks in real time on a clock passed in by the caller. Not thread-safe."""

    def __init__(self, action_period_s: float, max_tick_gap_s: float | None = None) -> None:
        """`max_tick_gap_s` (default: one action period) bounds the time one `next` call covers."""
        if not (math.isfinite(action_period_s) and action_period_s > 0.0):
            raise ValueError(f"action_period_s must be a positive number, got {action_period_s!r}")
        gap = action_period_s if max_tick_gap_s is None else max_tick_gap_s
        if not (math.isfinite(gap) and gap > 0.0):
            raise ValueError(f"max_tick_gap_s must be a positive number, got {max_tick_gap_s!r}")
        self._period = float(action_period_s)
        self._max_gap = float(gap)
        self._actions: np.ndarray | None = None  # float64 [T, 7] of the current chunk
        self._stamp: float | None = None  # stamp of the current chunk
        self._start = 0.0  # t0 of the current chunk on the caller's clock [s]
        self._cursor = 0.0  # time (relative to t0) up to which deltas have been handed out [s]
        self._last_tick: float | None = None
        self._carry: np.ndarray | None = None  # [6] old chunk's share owed at the next tick

    @property
    def action_period_s(self) -> float:
        return self._period

    @property
    def max_tick_gap_s(self) -> float:
        return self._max_gap

    @property
    def current_stamp(self) -> float | None:
        """Stamp of the chunk being played (None when there is none)."""
        return self._stamp if self._actions is not None else None

    @property
    def remaining(self) -> int:
        """Actions of the current chunk not yet started."""
        if self._actions is None:
            return 0
        started = math.ceil(self._cursor / self._period) if self._cursor > 0.0 else 0
        return max(0, len(self._actions) - started)

    def push(self, chunk: ActionChunk, now: float) -> bool:
        """Start playing `chunk` at `now`; False (ignored) when malformed or not newer than the current."""
        actions = chunk.actions
        if (not isinstance(actions, np.ndarray) or actions.ndim != 2 or actions.shape[1] != ACTION_DIM
                or actions.shape[0] < 1):
            return False
        try:
            stamp, now = float(chunk.stamp), float(now)
        except (TypeError, ValueError):
            return False
        if not (math.isfinite(stamp) and math.isfinite(now)):
            return False
        if self._stamp is not None and stamp <= self._stamp:
            return False  # the same observation again would replay motion already made
        start = now if self._last_tick is None else max(now, self._last_tick)
        if self._actions is not None and now >= start and now >= self._start:
            owed, _, _ = self._share(now - self._start)  # old chunk up to the push
            self._carry = owed if self._carry is None else self._carry + owed
        self._actions = np.array(actions, dtype=np.float64)  # own copy: the caller may reuse its array
        self._stamp = stamp
        self._start = start
        self._cursor = 0.0
        return True

    def next(self, now: float) -> ScheduledStep | None:
        """The share of the actions for the time since the previous call; None = nothing valid (HOLD)."""
        if not math.isfinite(now):
            return None
        if self._last_tick is not None and now < self._last_tick:
            self.clear()  # the clock ran backwards (sim reset, bag loop): the timeline is void
        self._last_tick = now
        carry, self._carry = self._carry, None
        if self._actions is None:
            return None
        b = now - self._start
        if b < 0.0:
            return None  # pushed with a clock reading later than this tick's: not started yet
        delta, last, played_out = self._share(b)
        if carry is not None:
            delta = delta + carry
        gripper = float(self._actions[last, 6]) if last >= 0 else None
        stamp = self._stamp
        if played_out:
            self._actions = None  # played out (or skipped entirely after a stall)
        if gripper is None:
            return None
        return ScheduledStep(delta[:3], delta[3:6], gripper, stamp)  # type: ignore[arg-type]

    def _share(self, b: float) -> tuple[np.ndarray, int, bool]:
        """Deltas [6] for the window (cursor, b] relative to t0 (cut to max_tick_gap_s), the index of
        the action in force at b (-1 when the window lies past the end) and whether the chunk is done.
        Advances the cursor."""
        actions = self._actions
        assert actions is not None
        period = self._period
        count = len(actions)
        end = count * period
        a = max(self._cursor, b - self._max_gap)
        if a >= end:
            return np.zeros(6), -1, True
        first = min(int(a // period), count - 1)
        last = min(int(b // period), count - 1)  # the action in force at b
        weights = []
        for k in range(first, last + 1):
            overlap = min(b, (k + 1) * period) - max(a, k * period)
            weights.append(overlap / period if overlap > 0.0 else 0.0)
        delta = np.asarray(weights) @ actions[first:last + 1, :6]  # [6]
        if b > self._cursor:
            self._cursor = b
        return delta, last, b >= end

    def clear(self) -> None:
        """Drop the current chunk (and forget its stamp, so any chunk is accepted next)."""
        self._actions = None
        self._stamp = None
        self._cursor = 0.0
        self._carry = None
