"""Spreads model actions over control ticks: each action is a delta over `action_period_s`.

Timeline of a chunk: action k spans [t0 + k*P, t0 + (k+1)*P), t0 being its observation's stamp or its
arrival (see `control.chunks`: alignment); the chunk takes over at its arrival (or the last tick if
that is later), and actions whose span had fully passed then are dropped. A call `next(now)` hands out
the share of the deltas for the window (t_prev, now], t_prev being the previous call: the integral of
the per-period values in force (combined over the chunks in force by the chunk rule) divided by P;
each piece between two breakpoints is integrated exactly (Gauss-Legendre where fades overlap). The
windows tile time, so the deltas handed out add up exactly to that integral (for one chunk: to its
actions) whatever the tick jitter.
The gripper is absolute: the value in force at `now`.

A window longer than `max_tick_gap_s` (a stalled loop) is cut to its last `max_tick_gap_s`: what
fell before is dropped, never replayed in a burst; actions whose span lies entirely in the dropped
part are skipped. The share of what was in force between the last tick and a push is still owed and
is handed out with the next tick, so re-planning often (a fast model) never loses motion. Times are
kept relative to the newest chunk's t0, so large clock values (seconds since 1970) do not cost
precision in the sums. At most MAX_CHUNKS_IN_FORCE[rule] chunks are in force at once (the oldest
is dropped).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from vla_ros.control.chunks import PLAIN, Arrival, ChunkSettings, chain_gripper, chain_weights
from vla_ros.core.types import ACTION_DIM, ActionChunk

# Chunks in force at once per rule; a newer one beyond (replans faster than a fade, or than the chunks'
# overlap) drops the oldest. Bounds the work of one tick: the fades' weights multiply.
MAX_CHUNKS_IN_FORCE = {"replace": 1, "crossfade": 4, "blend": 32, "ensemble": 32}
TIME_ROUNDING_S = 1e-6  # epoch-sized clock values resolve ~0.24 us: a span this close to its end has passed


@dataclass(frozen=True)
class ScheduledStep:
    """The raw (unfiltered) command for one control tick."""

    translation: np.ndarray  # float64 [3], metres for this tick (share of the actions' deltas)
    rotation: np.ndarray  # float64 [3], roll/pitch/yaw radians for this tick
    gripper: float  # absolute, 0 closed .. 1 open
    source_stamp: float  # stamp of the newest chunk in force: when its observation was taken


@dataclass
class _Layer:
    """One chunk in force; times relative to the newest chunk's t0 (the scheduler's origin)."""

    actions: np.ndarray  # float64 [K, 7], own copy
    stamp: float
    start: float  # absolute t0 [s]
    since: float  # absolute takeover time [s]
    offset: float = 0.0  # t0 - origin [s]
    since_rel: float = 0.0  # takeover - origin [s]

    @property
    def count(self) -> int:
        return len(self.actions)


class ActionScheduler:
    """Plays action chunks in real time on a clock passed in by the caller. Not thread-safe."""

    def __init__(self, action_period_s: float, max_tick_gap_s: float | None = None,
                 settings: ChunkSettings = PLAIN) -> None:
        """`max_tick_gap_s` (default: one action period) bounds the time one `next` call covers;
        `settings` (default: every chunk from its arrival, replacing the last) place and combine chunks."""
        if not (math.isfinite(action_period_s) and action_period_s > 0.0):
            raise ValueError(f"action_period_s must be a positive number, got {action_period_s!r}")
        gap = action_period_s if max_tick_gap_s is None else max_tick_gap_s
        if not (math.isfinite(gap) and gap > 0.0):
            raise ValueError(f"max_tick_gap_s must be a positive number, got {max_tick_gap_s!r}")
        self._period = float(action_period_s)
        self._max_gap = float(gap)
        self._settings = settings
        self._rule = "replace"  # the rule of the newest chunk
        self._layers: list[_Layer] = []  # chunks in force, oldest first; empty = nothing to play
        self._stamp: float | None = None  # stamp of the newest accepted chunk
        self._origin = 0.0  # t0 of the newest chunk on the caller's clock [s]
        self._cursor = 0.0  # time (relative to the origin) up to which deltas have been handed out [s]
        self._last_tick: float | None = None
        self._carry: np.ndarray | None = None  # [6] share owed at the next tick
        self.last_arrival: Arrival | None = None  # the last chunk offered, when it got as far as timing

    @property
    def action_period_s(self) -> float:
        return self._period

    @property
    def max_tick_gap_s(self) -> float:
        return self._max_gap

    @property
    def settings(self) -> ChunkSettings:
        return self._settings

    @property
    def current_stamp(self) -> float | None:
        """Stamp of the chunk being played (None when there is none)."""
        return self._stamp if self._layers else None

    @property
    def remaining(self) -> int:
        """Actions of the current chunk not yet started."""
        if not self._layers:
            return 0
        started = math.ceil(self._cursor / self._period) if self._cursor > 0.0 else 0
        return max(0, self._layers[-1].count - started)

    def wants_chunk(self, now: float) -> bool:
        """Whether a new inference is due at `now`: nothing in force, a one-action chunk, or at least
        `replan_fraction` of the current chunk's duration played."""
        if not self._layers or self._layers[-1].count == 1:
            return True
        duration = self._layers[-1].count * self._period
        return now - self._origin >= self._settings.replan_fraction * duration

    def push(self, chunk: ActionChunk, now: float) -> bool:
        """Take `chunk` on at `now`; False (ignored) when malformed, not newer than the current, or late
        (every action already passed; `last_arrival.late`)."""
        self.last_arrival = None
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
        count = len(actions)
        takeover = now if self._last_tick is None else max(now, self._last_tick)
        start = min(stamp, takeover) if self._settings.aligns_to_observation(count) else takeover
        # epoch-sized stamps lose ~1e-7 s in the difference: an action ending exactly now counts as passed
        skipped = min(count, math.floor((takeover - start + TIME_ROUNDING_S) / self._period))
        self.last_arrival = Arrival(stamp, now - stamp, skipped, skipped >= count, takeover)
        if skipped >= count:
            return False
        if self._layers and now >= takeover and now >= self._origin:
            owed, _, _ = self._share(now - self._origin)  # what was in force up to the push
            self._carry = owed if self._carry is None else self._carry + owed
        rule = self._settings.rule_for(count)
        older = self._layers[len(self._layers) + 1 - MAX_CHUNKS_IN_FORCE[rule]:]
        # own copy: the caller may reuse its array
        self._layers = [*older, _Layer(np.array(actions, dtype=np.float64), stamp, start, takeover)]
        self._rule = rule
        self._stamp = stamp
        self._origin = start
        for layer in self._layers:
            layer.offset = layer.start - start
            layer.since_rel = layer.since - start
        self._cursor = takeover - start
        self._prune()
        return True

    def next(self, now: float) -> ScheduledStep | None:
        """The share of the actions for the time since the previous call; None = nothing valid (HOLD)."""
        if not math.isfinite(now):
            return None
        if self._last_tick is not None and now < self._last_tick:
            self.clear()  # the clock ran backwards (sim reset, bag loop): the timeline is void
        self._last_tick = now
        carry, self._carry = self._carry, None
        if not self._layers:
            return None
        b = now - self._origin
        if b < 0.0:
            return None  # pushed with a clock reading later than this tick's: not started yet
        delta, gripper, played_out = self._share(b)
        if carry is not None:
            delta = delta + carry
        stamp = self._layers[-1].stamp
        if played_out:
            self._layers = []  # played out (or skipped entirely after a stall)
        else:
            self._prune()
        if gripper is None:
            return None
        return ScheduledStep(delta[:3], delta[3:6], gripper, stamp)

    def clear(self) -> None:
        """Drop every chunk (and forget the stamp, so any chunk is accepted next)."""
        self._layers = []
        self._stamp = None
        self._cursor = 0.0
        self._carry = None

    # ----- the timeline ------------------------------------------------------------------------------
    def _share(self, b: float) -> tuple[np.ndarray, float | None, bool]:
        """Deltas [6] for the window (cursor, b] relative to the origin (cut to max_tick_gap_s), the
        gripper in force at b (None when the window lies past the end) and whether the newest chunk is
        done. Advances the cursor."""
        newest = self._layers[-1]
        end = newest.count * self._period
        a = max(self._cursor, b - self._max_gap)
        if a >= end:
            return np.zeros(6), None, True
        if len(self._layers) == 1:
            delta, gripper = self._single_share(newest, a, b)
        else:
            delta, gripper = self._mixed_share(a, b), self._gripper_at(b)
        if b > self._cursor:
            self._cursor = b
        return delta, gripper, b >= end

    def _single_share(self, layer: _Layer, a: float, b: float) -> tuple[np.ndarray, float]:
        """One chunk in force: sum over its actions of overlap((a, b], span_k) / P * delta_k, and the
        gripper of the action in force at b."""
        period = self._period
        first = min(int(a // period), layer.count - 1)
        last = min(int(b // period), layer.count - 1)
        weights = []
        for k in range(first, last + 1):
            overlap = min(b, (k + 1) * period) - max(a, k * period)
            weights.append(overlap / period if overlap > 0.0 else 0.0)
        return np.asarray(weights) @ layer.actions[first:last + 1, :6], float(layer.actions[last, 6])

    def _mixed_share(self, a: float, b: float) -> np.ndarray:
        """Several chunks in force: the integral over (a, b] of the chain's weighted actions / P, piece by
        piece between breakpoints."""
        coefficients = [np.zeros(layer.count) for layer in self._layers]
        touched = [(layer.count, -1) for layer in self._layers]  # (lowest, highest) action index used
        points = self._breakpoints(a, b)
        for x, y in zip(points, points[1:]):
            chain = self._chain(0.5 * (x + y))  # the same all through the piece
            if y <= x or not chain:
                continue  # empty, or past the newest chunk's end
            since = [self._layers[j].since_rel for j, _ in chain]
            for node, weight in self._quadrature(x, y, since):
                weights = chain_weights(self._settings, self._rule, since, node)
                for (j, k), w in zip(chain, weights):
                    coefficients[j][k] += (y - x) * weight / self._period * w
                    lo, hi = touched[j]
                    touched[j] = (min(lo, k), max(hi, k))
        delta = np.zeros(6)
        for layer, coefficient, (lo, hi) in zip(self._layers, coefficients, touched):
            if lo <= hi:
                delta = delta + coefficient[lo:hi + 1] @ layer.actions[lo:hi + 1, :6]
        return delta

    def _breakpoints(self, a: float, b: float) -> list[float]:
        """a, b and every time in between where a chunk's action or a fade starts or ends (sorted)."""
        period = self._period
        points = {a, b}
        for index, layer in enumerate(self._layers):
            k_lo = max(0, int((a - layer.offset) // period))
            k_hi = min(layer.count, int((b - layer.offset) // period) + 1)
            points.update(layer.offset + k * period for k in range(k_lo, k_hi + 1))
            if self._rule == "crossfade" and index > 0:  # the oldest chunk in force fades in no more
                points.update((layer.since_rel, layer.since_rel + self._settings.crossfade_s))
        return sorted(p for p in points if a <= p <= b)

    def _quadrature(self, x: float, y: float, since: list[float]) -> list[tuple[float, float]]:
        """Nodes and weights (summing to 1) that integrate the piece (x, y) of a chain whose chunks took
        over at `since` exactly: the midpoint, or Gauss-Legendre where several fades overlap (their
        weights multiply into a polynomial)."""
        mid = 0.5 * (x + y)
        degree = 0
        if self._rule == "crossfade":
            fade = self._settings.crossfade_s
            degree = sum(1 for start in since[1:] if start < mid < start + fade)
        if degree < 2:
            return [(mid, 1.0)]
        half = 0.5 * (y - x)
        return [(mid + half * node, weight) for node, weight in _gauss_legendre(degree // 2 + 1)]

    def _chain(self, t: float, clamp: bool = False) -> list[tuple[int, int]]:
        """(layer, action index) of the chunks in force at t, oldest first: the newest and the older ones
        back to the first that no longer covers t. Crossfade: back to the first whose successor's fade
        is over or that had ended when its successor took over; an older chunk that ends during the
        fade holds its last action until the fade is over.
        `clamp`: the newest chunk's last action stays in force past its end (the gripper at `now`)."""
        period = self._period
        chain: list[tuple[int, int]] = []
        crossfade = self._rule == "crossfade"
        for j in range(len(self._layers) - 1, -1, -1):
            layer = self._layers[j]
            u = t - layer.offset
            if u < 0.0:
                break
            if chain and crossfade:
                successor = self._layers[j + 1]
                if (t >= successor.since_rel + self._settings.crossfade_s
                        or not self._in_force_at(layer, successor.since_rel)):
                    break
            elif u >= layer.count * period and not (clamp and not chain):
                break
            chain.append((j, min(int(u // period), layer.count - 1)))
        return chain[::-1]

    def _in_force_at(self, layer: _Layer, t: float) -> bool:
        """Whether `layer` has an action at t (relative to the origin)."""
        return 0.0 <= t - layer.offset < layer.count * self._period

    def _gripper_at(self, t: float) -> float | None:
        """The gripper value in force at t (the newest chunk's last action past its end)."""
        chain = self._chain(t, clamp=True)
        if not chain:
            return None
        grippers = [float(self._layers[j].actions[k, 6]) for j, k in chain]
        return chain_gripper(self._settings, self._rule, [self._layers[j].since_rel for j, _ in chain],
                             grippers, t)

    def _prune(self) -> None:
        """Forget the older chunks that can no longer be in force at or after the cursor."""
        keep_from = 0
        fade = self._settings.crossfade_s
        for j, layer in enumerate(self._layers[:-1]):
            if self._rule == "crossfade":
                successor = self._layers[j + 1]
                dead = (self._cursor >= successor.since_rel + fade
                        or not self._in_force_at(layer, successor.since_rel))
            else:
                dead = self._cursor >= layer.offset + layer.count * self._period
            if dead:
                keep_from = j + 1
        del self._layers[:keep_from]


@functools.cache
def _gauss_legendre(count: int) -> tuple[tuple[float, float], ...]:
    """`count` Gauss-Legendre nodes on [-1, 1] with weights summing to 1 (exact to degree 2*count - 1)."""
    nodes, weights = np.polynomial.legendre.leggauss(count)
    return tuple((float(n), 0.5 * float(w)) for n, w in zip(nodes, weights))
