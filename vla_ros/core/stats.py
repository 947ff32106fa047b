"""Summaries of measured values (latencies, periods, ages) shared by every report."""

from __future__ import annotations

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
