"""Exact conversions between float seconds and integer nanoseconds (message stamps, bag times)."""

from __future__ import annotations

import math
from fractions import Fraction

NS_PER_S = 1_000_000_000


def seconds_to_ns(seconds: float) -> int:
    """The integer nanoseconds nearest to `seconds`, computed exactly: `round(seconds * 1e9)` rounds the
    product first and misses by up to 128 ns at epoch times. ValueError for a non-finite value."""
    if not math.isfinite(seconds):
        raise ValueError(f"time must be a finite number of seconds, got {seconds!r}")
    return round(Fraction(seconds) * NS_PER_S)


def ns_to_seconds(t_ns: int) -> float:
    """Seconds of integer nanoseconds, correctly rounded (int / int): for every float s made this way,
    ns_to_seconds(seconds_to_ns(s)) == s, bit for bit."""
    return int(t_ns) / NS_PER_S
