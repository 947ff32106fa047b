"""Summaries of measured values (latencies, periods, ages) shared by every report."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

import numpy as np


def distribution(values: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """count, mean, p50, p90, p99, max, min of `values` ({"count": 0} when empty)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"count": 0}
    return {"count": int(a.size), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "min": float(a.min())}


def rate(count: int, seconds: float) -> float:
    """Events per second, 0 for an empty span."""
    return count / seconds if seconds > 0 else 0.0


class RateWindow:
    """Event rate over a sliding window of at least `window_s` seconds, from event times (monotonic).

    The rate is the least-squares slope of the event count over the event times from the reference
    (the newest event at least `window_s` old, or the first one) to the last event, so the jitter of
    single events hardly moves it. When no event came for longer than the mean interval (a stall),
    it is at most (events) / (time from the reference to now, less one interval): it decays instead
    of freezing. `rate` is None until `window_s` has passed since the first event (or since `start`).
    Thread-safe.
    """

    def __init__(self, window_s: float, start: float | None = None) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s!r}")
        self.window_s = float(window_s)
        self._start = start
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def add(self, t: float) -> None:
        """Record one event at time `t` [s]."""
        with self._lock:
            if self._start is None:
                self._start = t
            self._times.append(t)
            self._prune(t)

    def rate(self, now: float) -> float | None:
        """Events per second over the last >= window_s at time `now`; None before the first full window."""
        with self._lock:
            if self._start is None or now - self._start < self.window_s:
                return None
            self._prune(now)
            times = self._times
            if len(times) < 2:  # one event in the window, or none since the last one (a window ago)
                return 1.0 / self.window_s if times and times[0] > now - self.window_s else 0.0
            ref, last, k = times[0], times[-1], len(times) - 1
            t = np.fromiter(times, dtype=np.float64, count=k + 1) - ref
            if t[-1] <= 0:
                return 0.0
            # slope of the event count over time (least squares): one late event moves it little
            dt, di = t - t.mean(), np.arange(k + 1) - k / 2
            fit = float((dt * di).sum() / (dt * dt).sum())
            mean_interval = t[-1] / k
            if now - last > mean_interval:  # a stall: no event for longer than usual
                fit = min(fit, k / (now - ref - mean_interval))
            return fit

    def missing(self, period_s: float) -> int:
        """Events that should have come every `period_s` between the window's first and last but did not."""
        with self._lock:
            if len(self._times) < 2:
                return 0
            span = self._times[-1] - self._times[0]
            return max(0, round(span / period_s) + 1 - len(self._times))

    def _prune(self, now: float) -> None:
        # keep one event at least window_s old: the reference the rate is measured from
        times, edge = self._times, now - self.window_s
        while len(times) >= 2 and times[1] <= edge:
            times.popleft()


class Throttle:
    """Lets one event per `interval_s` through for each key and counts the others (log lines). Thread-safe."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = float(interval_s)
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now: float) -> int | None:
        """When the event of `key` at `now` [s] may pass: how many were held back before it; else None."""
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)

    def held(self, key: str) -> int:
        """Events of `key` held back since the last one that passed."""
        with self._lock:
            return self._held.get(key, 0)
