"""The VlaStatus fields, assembled from ControlCore and counters: one rule for the node and replay."""

from __future__ import annotations

from dataclasses import dataclass

from vla_ros.control.core import ControlCore

# ControlCore.state -> VlaStatus.state (the constants of msg/VlaStatus.msg).
STATE_CODES = {"DISARMED": 0, "ARMED": 1, "HOLDING": 2, "ESTOPPED": 3, "FAULT": 4}


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


def status_fields(core: ControlCore, now: float, counters: Counters) -> dict[str, object]:
    """Keyword arguments for VlaStatus (all fields but the header) at time `now` [s]."""
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
        "last_error": core.fault or counters.last_error or "",
    }
