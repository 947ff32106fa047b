"""The command jump at chunk switches, measured on the scheduler's output (before the safety filter)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vla_ros.control.scheduler import ScheduledStep


@dataclass(frozen=True)
class ChunkReport:
    """Chunk switches and arrivals for status: jumps in m/s or rad/s (the largest over the 6 axes)."""

    switches: int
    jump_last: float  # -1 before the first switch
    jump_max: float  # -1 before the first switch
    delay_last_s: float  # arrival - observation stamp of the last accepted chunk; -1 before the first
    skipped_last: int  # actions of the last accepted chunk that had passed when it arrived


class SwitchMonitor:
    """The command jump at each chunk switch, from the scheduler's output (before the safety filter).

    A switch is a newer chunk taking over at time T while the last tick moved. Its jump is max over the 6
    motion axes of |v_after - v_before|: v_before the velocity of the last tick before T, v_after that of
    the first tick that starts at or after T (the tick spanning T still carries the older chunk's share);
    velocity = tick delta / tick duration. A HOLD tick in between leaves the switch unmeasured."""

    def __init__(self) -> None:
        self.switches = 0
        self.jump_last = -1.0
        self.jump_max = -1.0
        self._time: float | None = None  # the last tick
        self._velocity: np.ndarray | None = None  # [6] of the last tick, None after a HOLD
        self._before: np.ndarray | None = None  # [6] velocity before the pending switch
        self._takeover: float | None = None  # time of the pending switch

    def on_switch(self, takeover: float) -> None:
        """A chunk was accepted to take over at `takeover` [s]: a switch when the last tick moved."""
        if self._takeover is None:
            if self._velocity is None:
                return  # the first chunk, or one after a HOLD: nothing to switch from
            self._before = self._velocity
        self._takeover = takeover

    def observe(self, now: float, step: ScheduledStep | None) -> float | None:
        """One tick's raw step (None = none); the jump when this tick completes a switch, else None."""
        start, self._time = self._time, now
        dt = now - start if start is not None else math.nan
        velocity = None
        if step is not None and dt > 0.0:
            velocity = np.concatenate([step.translation, step.rotation]) / dt
        self._velocity = velocity
        takeover, before = self._takeover, self._before
        if takeover is None:
            return None
        if velocity is None or before is None:
            self._takeover = self._before = None  # a HOLD next to the switch: nothing to compare
            return None
        assert start is not None  # a velocity needs a previous tick
        if start < takeover:
            return None  # this tick spans the takeover: the next one shows the new chunk alone
        jump = float(np.max(np.abs(velocity - before)))
        self.switches += 1
        self.jump_last = jump
        self.jump_max = max(self.jump_max, jump)
        self._takeover = self._before = None
        return jump
