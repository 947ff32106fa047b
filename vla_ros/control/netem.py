"""A faulty link between the policy and control halves, on a clock passed in: latency with jitter, loss,
duplication and reordering, drawn from a seeded generator. The relay (`vla-ros bench-split`), the
simulator's split evaluation and the tests use the same model, so their figures compare."""

from __future__ import annotations

import argparse
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


def add_fault_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                        latency_default: float | None = 0.0) -> None:
    """The link's flags (--latency-ms, --jitter-ms, --loss, --duplicate, --reorder, --reorder-ms), shared
    by the relay, `vla-ros bench-split` and `vla-ros eval-demo` (latency_default None: not given)."""
    add = parser.add_argument
    reorder_ms = LinkFaults().reorder_s * 1e3
    add("--latency-ms", type=float, default=latency_default, help="mean delay of the link [ms]")
    add("--jitter-ms", type=float, default=0.0, help="delay spread: uniform +- this [ms]")
    add("--loss", type=float, default=0.0, help="probability that a chunk is lost (0..1)")
    add("--duplicate", type=float, default=0.0, help="probability that a chunk arrives twice")
    add("--reorder", type=float, default=0.0,
        help="probability that a chunk is held back --reorder-ms more (overtaken by the next)")
    add("--reorder-ms", type=float, default=reorder_ms,
        help=f"extra delay of a reordered chunk [ms] (default {reorder_ms:g})")


def faults_from_arguments(a: argparse.Namespace) -> LinkFaults:
    """LinkFaults of the parsed link flags (a latency not given counts as 0); ValueError when one is out of
    range."""
    faults = LinkFaults(latency_s=(a.latency_ms or 0.0) * 1e-3, jitter_s=a.jitter_ms * 1e-3, loss=a.loss,
                        duplicate=a.duplicate, reorder=a.reorder, reorder_s=a.reorder_ms * 1e-3)
    faults.check()
    return faults


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
