"""vla_node's /diagnostics: four entries (control loop, policy, inputs, safety) built from its status."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from vla_ros.core.config import NodeConfig
from vla_ros.msg import VlaStatus
from vla_ros.runtime.worker import WorkerStats

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
MIN_RATE_SHARE = 0.9  # an achieved control rate below this share of the target is a warning


def diagnostic_array(name: str, s: VlaStatus, cfg: NodeConfig, *, active: bool, worker: WorkerStats | None,
                     tick_errors: int, skipped_no_pose: int, rejected: dict[str, int],
                     safety_counters: dict[str, int]) -> DiagnosticArray:
    """The DiagnosticArray of node `name` (fully qualified) for status `s` and the node's counters."""
    arr = DiagnosticArray()
    arr.header.stamp = s.header.stamp

    def add(title: str, level: int, message: str, values: dict) -> None:
        arr.status.append(DiagnosticStatus(
            level=level, name=f"{name}: {title}", message=message, hardware_id=name,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()]))

    target = cfg.control.control_rate_hz
    rate_ok = s.control_rate_hz >= MIN_RATE_SHARE * target or not active
    add("control loop", OK if rate_ok else WARN,
        f"{s.control_rate_hz:.1f} Hz of {target:g} Hz" if active else "inactive",
        {"target_rate_hz": target, "achieved_rate_hz": round(s.control_rate_hz, 2),
         "commands_published": s.commands_published, "tick_errors": tick_errors,
         "skipped_no_pose": skipped_no_pose, "output_mode": cfg.topics.output_mode})
    fault = s.state == VlaStatus.FAULT
    add("policy", ERROR if fault else OK, "FAULT: " + s.last_error if fault else "ok",
        {"backend": s.backend, "inference_latency_s": round(s.inference_latency_s, 4),
         "model_rate_hz": round(s.model_rate_hz, 2), "policy_errors": s.policy_errors,
         "timeouts": worker.timeouts if worker else 0,
         "dropped_observations": worker.dropped if worker else 0})
    image_stale = s.image_age_s < 0 or s.image_age_s > cfg.safety.max_image_age_s
    add("inputs", WARN if image_stale and active else OK, "no fresh camera image" if image_stale else "ok",
        {"image_age_s": round(s.image_age_s, 3), "instruction_age_s": round(s.instruction_age_s, 3),
         "action_age_s": round(s.action_age_s, 3), "instruction": s.instruction[:200],
         **{f"rejected_{k}": v for k, v in rejected.items()}})
    level = {VlaStatus.FAULT: ERROR, VlaStatus.ESTOPPED: WARN}.get(s.state, OK)
    add("safety", level, s.state_name,
        {"state": s.state_name, "safety_interventions": s.safety_interventions, **safety_counters})
    return arr
