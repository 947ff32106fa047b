"""TickRecorder: start times of the last control ticks, for timing benchmarks and tests (ROS-free)."""

from __future__ import annotations

import numpy as np


class TickRecorder:
    """Start times (time.perf_counter) of the last `capacity` control ticks; 0 records only the count."""

    def __init__(self, capacity: int) -> None:
        self.times = np.zeros(max(capacity, 1))
        self.count = 0
        self.capacity = capacity

    def add(self, t: float) -> None:
        """Record one tick that started at `t` [s]."""
        if self.capacity:
            self.times[self.count % self.capacity] = t
        self.count += 1

    def recent(self) -> np.ndarray:
        """Recorded tick times in order (at most `capacity`)."""
        n = min(self.count, self.capacity)
        if self.count <= self.capacity:
            return self.times[:n].copy()
        i = self.count % self.capacity
        return np.concatenate([self.times[i:], self.times[:i]])
