"""A faulty link between the policy and control halves, on a clock passed in: latency with jitter, loss,
duplication and reordering, drawn from a seeded generator. The relay (`vla-ros bench-split`), the
simulator's split evaluation and the tests use the same model, so their figures compare."""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

Item = TypeVar("Item")


@dataclass(frozen=True)
class LinkFaults:
    """What the link does to each message: delay = latency + uniform(-jitter, +jitter) (never < 0), lost
    with probability `loss`, sent twice with `duplicate`, held back `reorder_s` more with `reorder`."""

    latency_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_s: float = 0.05

    def check(self) -> None:
        """ValueError for a negative or non-finite time, or a probability outside 0..1."""
        for name in ("latency_s", "jitter_s", "reorder_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a number >= 0 [s], got {value!r}")
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a probability in 0..1, got {value!r}")

    @property
    def perfect(self) -> bool:
        """No delay and no fault: every message arrives at once, once, in order."""
        return not (self.latency_s or self.jitter_s or self.loss or self.duplicate or self.reorder)


class FaultyLink(Generic[Item]):
    """Messages in at send time, out at their delivery time. Not thread-safe."""

    def __init__(self, faults: LinkFaults, seed: int = 0) -> None:
        faults.check()
        self.faults = faults
        self._rng = np.random.default_rng(seed)
        self._queue: list[tuple[float, int, Item]] = []
        self._order = itertools.count()  # ties leave in send order
        self.sent = self.lost = self.duplicated = self.reordered = 0

    def send(self, item: Item, now: float) -> None:
        """Put `item` on the link at `now` [s]."""
        self.sent += 1
        f, rng = self.faults, self._rng
        if f.loss and rng.random() < f.loss:
            self.lost += 1
            return
        copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            delay = f.latency_s + (rng.uniform(-f.jitter_s, f.jitter_s) if f.jitter_s else 0.0)
            if f.reorder and rng.random() < f.reorder:
                self.reordered += 1
                delay += f.reorder_s
            heapq.heappush(self._queue, (now + max(0.0, delay), next(self._order), item))

    def due(self, now: float) -> list[Item]:
        """The items whose delivery time is at or before `now`, in delivery order."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        return out

    @property
    def next_delivery(self) -> float | None:
        """When the next item is due, or None when the link is empty."""
        return self._queue[0][0] if self._queue else None

    def clear(self) -> None:
        """Drop everything in flight (the link was cut)."""
        self._queue.clear()
