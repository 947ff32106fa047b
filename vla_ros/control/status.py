"""The VlaStatus fields, assembled from ControlCore and counters: one rule for the node and replay."""

from __future__ import annotations

from dataclasses import dataclass

from vla_ros.control.core import ControlCore
from vla_ros.control.link import LinkReport
from vla_ros.control.safety import STALL_TICKS
from vla_ros.core.stats import RateWindow

# ControlCore.state -> VlaStatus.state (the constants of msg/VlaStatus.msg).
STATE_CODES = {"DISARMED": 0, "ARMED": 1, "HOLDING": 2, "ESTOPPED": 3, "FAULT": 4}

# Thresholds of vla_node's status and /diagnostics, in one place (replay counts exactly on the bag clock).
RATE_WINDOW_S = 2.0  # control_rate_hz / model_rate_hz are measured over the last >= 2 s of tick/call times
NO_RATE = -1.0  # the rate fields before the first full window (VlaStatus's -1 = "none yet"); no WARN then
STALL_PERIODS = STALL_TICKS  # no tick for longer than this many periods: the control loop is stalled (WARN)
# The control-loop WARN is raised only for ticks that never happened within the rate window (span / period
# + 1 - count, as vla-ros bench-control counts them) or for a stall; a late tick that keeps the count is
# jitter, not a warning, and the achieved rate itself is never compared to the target.


@dataclass(frozen=True)
class Counters:
    """What the caller counts outside ControlCore since start, and its rates over the last period."""

    backend: str
    inference_latency_s: float
    model_rate_hz: float
    control_rate_hz: float
    commands_published: int
    rejected_inputs: int
    policy_errors: int
    last_error: str | None


def age(now: float, stamp: float | None) -> float:
    """Seconds since `stamp`, or -1 when there is none yet (VlaStatus's convention)."""
    return max(0.0, now - stamp) if stamp is not None else -1.0


def status_fields(core: ControlCore, now: float, counters: Counters, link: LinkReport | None = None,
                  role: str = "both") -> dict[str, object]:
    """Keyword arguments for VlaStatus (all fields but the header) at time `now` [s]; `link`: the chunk
    link's report where chunks arrive as messages (role control)."""
    state = core.state
    return {
        "state": STATE_CODES[state], "state_name": state, "instruction": core.instruction,
        "backend": counters.backend, "inference_latency_s": float(counters.inference_latency_s),
        "model_rate_hz": float(counters.model_rate_hz),
        "image_age_s": age(now, core.image_stamp), "instruction_age_s": age(now, core.instruction_stamp),
        "action_age_s": age(now, core.last_chunk_stamp), "control_rate_hz": float(counters.control_rate_hz),
        "commands_published": int(counters.commands_published),
        "safety_interventions": int(core.counters.get("interventions", 0)),
        "rejected_inputs": int(counters.rejected_inputs), "policy_errors": int(counters.policy_errors),
        "last_error": counters.last_error or core.fault or "",
        **chunk_fields(core, now),
        **link_fields(core, link, role),
    }


def link_fields(core: ControlCore, link: LinkReport | None, role: str) -> dict[str, object]:
    """The chunk-link fields of VlaStatus: counts of the link (zero without one), chunks rejected for
    their age or a stamp in the future, the apparent clock offset (NaN without chunks) and its warning."""
    counters = core.counters
    return {
        "role": role,
        "chunks_received": link.received if link else 0, "chunks_lost": link.lost if link else 0,
        "chunks_duplicated": link.duplicates if link else 0,
        "chunks_reordered": link.reordered if link else 0,
        "policy_restarts": link.restarts if link else 0,
        "rejected_chunks_old": counters["rejected_chunks_old"],
        "rejected_chunks_future": counters["rejected_chunks_future"],
        "clock_offset_s": link.clock_offset_s if link else float("nan"),
        "clock_warning": link.clock_problem if link else "",
    }


def chunk_fields(core: ControlCore, now: float) -> dict[str, object]:
    """The chunk-execution fields appended to VlaStatus: switches and their command jumps [m/s or rad/s,
    the largest over the 6 axes; -1 before the first], the last chunk's delay [s; -1 before the first],
    actions dropped on arrival, chunks rejected as late, and the camera holding the image gate ('' none)."""
    report, counters = core.chunk_report, core.counters
    return {
        "chunk_switches": report.switches, "chunk_jump_last": report.jump_last,
        "chunk_jump_max": report.jump_max, "chunk_delay_last_s": report.delay_last_s,
        "dropped_actions": counters["dropped_actions"],
        "rejected_chunks_late": counters["rejected_chunks_late"],
        "stale_camera": core.stale_camera(now) or "",
    }


class LoopMonitor:
    """Control-loop health from tick start times (monotonic): rate, missed ticks, stall. Thread-safe."""

    def __init__(self, period_s: float, window_s: float = RATE_WINDOW_S, start: float | None = None) -> None:
        """`start`: when the loop started (the first full window ends window_s later); default: first tick."""
        self.period_s = float(period_s)
        self.window = RateWindow(window_s, start)
        self.last_tick: float | None = None

    def tick(self, t: float) -> None:
        """One control tick started at `t` [s]."""
        self.window.add(t)
        self.last_tick = t

    def rate(self, now: float) -> float | None:
        """Achieved ticks per second over the last >= window_s; None before the first full window."""
        return self.window.rate(now)

    def missed(self) -> int:
        """Ticks that never happened within the rate window (0 when too few ticks to tell)."""
        return self.window.missing(self.period_s)

    def stalled_s(self, now: float) -> float:
        """How long the loop has been without a tick when that exceeds STALL_PERIODS periods, else 0."""
        last = self.last_tick
        if last is None:
            return 0.0
        gap = now - last
        return gap if gap > STALL_PERIODS * self.period_s else 0.0


class LastError:
    """The last error, with the time it happened; cleared when its cause is gone (see `resolve`)."""

    def __init__(self) -> None:
        self._slot: tuple[str, str, float] | None = None  # (kind, text with its time, when) - one reference

    def set(self, kind: str, text: str, now: float) -> str:
        """Record `text` of cause `kind` ("instruction", "image", "pose", "policy", ...) at `now` [s]."""
        slot = (kind, f"{text} (at {now:.3f} s)", float(now))
        self._slot = slot
        return slot[1]

    def resolve(self, kind: str, since: float | None = None) -> None:
        """Clear the error when it is of `kind` (and, given `since`, happened before it: a newer good
        input of that kind arrived)."""
        slot = self._slot
        if slot is not None and slot[0] == kind and (since is None or since > slot[2]):
            self._slot = None

    def clear(self) -> None:
        self._slot = None

    @property
    def text(self) -> str:
        """The error with its time, or '' when there is none."""
        slot = self._slot
        return slot[1] if slot is not None else ""
