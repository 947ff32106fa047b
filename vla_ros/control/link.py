"""The chunk link seen from the control half: sequence numbers (lost, duplicated, reordered chunks, a
restarted policy) and the clocks of the two computers (chunks stamped in the future or steadily late).

Pure and time passed in: the control node, the split replay and the tests feed it the same way.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

CLOCK_WINDOW = 10  # chunks over which "steadily late" is judged
REMEDY = ("synchronize the clocks of the policy and robot computers (chrony or PTP; see the README, "
          "'Policy on another computer')")


@dataclass(frozen=True)
class LinkReport:
    """Counts since start and the clock verdict, for status."""

    received: int  # chunk messages that arrived (duplicates included)
    lost: int  # sequence numbers skipped and never seen since
    duplicates: int  # a sequence number seen before (dropped)
    reordered: int  # arrived after a newer one
    restarts: int  # the policy's sequence started over (policy restarted)
    clock_offset_s: float  # smallest (arrival - stamp - inference) over the last CLOCK_WINDOW chunks; or nan
    clock_problem: str  # '' when the clocks look consistent, else what is wrong and the remedy


class ChunkLink:
    """Tracks the chunks' sequence numbers and what their stamps say about the clocks. Not thread-safe."""

    def __init__(self, future_tolerance_s: float = 0.05, late_after_s: float = 1.0,
                 window: int = CLOCK_WINDOW) -> None:
        """`future_tolerance_s`: how far in the future a stamp may be (clock noise); `late_after_s`: a
        transport delay (arrival - stamp - inference) above this on every one of the last `window` chunks
        means the clocks disagree (or the link is far too slow)."""
        if not (future_tolerance_s >= 0.0 and late_after_s > 0.0 and window >= 1):
            raise ValueError("future_tolerance_s must be >= 0, late_after_s > 0 and window >= 1")
        self.future_tolerance_s = float(future_tolerance_s)
        self.late_after_s = float(late_after_s)
        self._delays: deque[float] = deque(maxlen=int(window))
        self._highest: int | None = None
        self._newest_stamp = -math.inf
        self._missing: set[int] = set()  # sequence numbers skipped and not seen (bounded below)
        self._seen: deque[int] = deque(maxlen=64)
        self.received = self.lost = self.duplicates = self.reordered = self.restarts = 0
        self._future_s = 0.0  # how far in the future the last chunk was stamped (0: not)

    def on_chunk(self, sequence: int, stamp: float, inference_s: float, now: float) -> str:
        """Record one arrival; the verdict: 'new', 'duplicate' (drop it) or 'reordered' (older than one
        already seen; the scheduler rejects it as stale)."""
        self.received += 1
        self._clock(stamp, inference_s, now)
        highest = self._highest
        if highest is not None and sequence <= highest and stamp > self._newest_stamp:
            self.restarts += 1  # a number seen already with a newer stamp: the policy started over
            self._missing.clear()
            self._seen.clear()
            highest = None
        if sequence in self._seen:
            self.duplicates += 1
            return "duplicate"
        self._seen.append(sequence)
        self._newest_stamp = max(self._newest_stamp, stamp)
        if highest is None or sequence == highest + 1:
            self._highest = sequence
            return "new"
        if sequence > highest:
            gap = range(highest + 1, sequence)
            self.lost += len(gap)
            self._missing.update(gap if len(gap) <= 1000 else ())
            self._highest = sequence
            return "new"
        if sequence in self._missing:  # counted lost when skipped: it was only late
            self._missing.discard(sequence)
            self.lost -= 1
        self.reordered += 1
        return "reordered"

    def _clock(self, stamp: float, inference_s: float, now: float) -> None:
        inference = inference_s if math.isfinite(inference_s) and inference_s >= 0.0 else 0.0
        delay = now - stamp - inference
        if not math.isfinite(delay):
            return
        self._delays.append(delay)
        self._future_s = stamp - now if stamp - now > self.future_tolerance_s else 0.0

    def report(self) -> LinkReport:
        """The counts and the clock verdict now."""
        return LinkReport(self.received, self.lost, self.duplicates, self.reordered, self.restarts,
                          self.clock_offset_s, self.clock_problem())

    @property
    def clock_offset_s(self) -> float:
        """The apparent offset: the smallest transport delay over the window (the network's own delay
        when the clocks agree; negative: stamps from the future); nan before the first chunk."""
        return min(self._delays) if self._delays else math.nan

    def clock_problem(self) -> str:
        """'' when the clocks look consistent; else what the stamps show and the remedy."""
        if self._future_s > 0.0:
            return (f"clock disagreement: action chunks are stamped {self._future_s:.3f} s in the future "
                    f"(the policy computer's clock is ahead): {REMEDY}")
        delays = self._delays
        if len(delays) == delays.maxlen and min(delays) > self.late_after_s:
            return (f"clock disagreement or a slow link: each of the last {len(delays)} action chunks "
                    f"arrived at least {min(delays):.3f} s after its stamp plus inference time (the policy "
                    f"computer's clock may be behind): {REMEDY}, and check the network")
        return ""
