"""vla_node's /diagnostics: four entries (control loop, policy, inputs, safety) built from its status, and
in role control a fifth, the chunk link (WARN with the clock remedy when the chunk stamps disagree)."""

from __future__ import annotations

from collections.abc import Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from vla_ros.control.status import RATE_WINDOW_S, STALL_PERIODS
from vla_ros.core.config import NodeConfig
from vla_ros.msg import VlaStatus
from vla_ros.ros.camera import CameraLinkStats
from vla_ros.runtime.worker import WorkerStats

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def diagnostic_array(name: str, s: VlaStatus, cfg: NodeConfig, *, active: bool, worker: WorkerStats | None,
                     tick_errors: int, skipped_no_pose: int, rejected: dict[str, int],
                     safety_counters: dict[str, int], missed_ticks: int = 0, stalled_s: float = 0.0,
                     camera: CameraLinkStats | None = None,
                     extra_cameras: Sequence[tuple[str, CameraLinkStats]] = ()) -> DiagnosticArray:
    """The DiagnosticArray of node `name` (fully qualified) for status `s` and the node's counters.

    `missed_ticks`: ticks that never happened in the rate window; `stalled_s`: time without a tick when
    that is a stall (control.status.LoopMonitor); the thresholds live in control/status.py.
    `extra_cameras`: (topic, link stats) of the cameras after the primary.
    """
    arr = DiagnosticArray()
    arr.header.stamp = s.header.stamp

    def add(title: str, level: int, message: str, values: dict) -> None:
        arr.status.append(DiagnosticStatus(
            level=level, name=f"{name}: {title}", message=message, hardware_id=name,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()]))

    add("control loop", *_control_loop(s, cfg, active, missed_ticks, stalled_s),
        {"target_rate_hz": cfg.control.control_rate_hz, "achieved_rate_hz": round(s.control_rate_hz, 2),
         "rate_window_s": RATE_WINDOW_S, "missed_ticks_in_window": missed_ticks,
         "commands_published": s.commands_published, "tick_errors": tick_errors,
         "skipped_no_pose": skipped_no_pose, "output_mode": cfg.topics.output_mode})
    fault = s.state == VlaStatus.FAULT
    add("policy", ERROR if fault else OK, "FAULT: " + s.last_error if fault else "ok",
        {"backend": s.backend, "inference_latency_s": round(s.inference_latency_s, 4),
         "model_rate_hz": round(s.model_rate_hz, 2), "policy_errors": s.policy_errors,
         "timeouts": worker.timeouts if worker else 0,
         "dropped_observations": worker.dropped if worker else 0})
    image_stale = bool(s.stale_camera) or s.image_age_s < 0 or s.image_age_s > cfg.safety.max_image_age_s
    hints = {topic: stats.hint for topic, stats in extra_cameras}
    hint = hints.get(s.stale_camera) or (camera.hint if camera is not None else "")
    stale = f"no fresh image from camera '{s.stale_camera}'" if s.stale_camera else "no fresh camera image"
    extra = {}
    for i, (topic, stats) in enumerate(extra_cameras, start=2):
        extra.update({f"camera{i}_topic": topic, **_camera_values(stats, f"camera{i}")})
    add("inputs", WARN if image_stale and active else OK,
        (stale + (f": {hint}" if hint else "")) if image_stale else "ok",
        {"image_age_s": round(s.image_age_s, 3), "instruction_age_s": round(s.instruction_age_s, 3),
         "action_age_s": round(s.action_age_s, 3), "instruction": s.instruction[:200],
         **{f"rejected_{k}": v for k, v in rejected.items()}, **_camera_values(camera), **extra})
    if s.role == "control":
        add("chunk link", WARN if s.clock_warning else OK, s.clock_warning or "ok",
            {"chunk_topic": cfg.split.chunk_topic, "chunks_received": s.chunks_received,
             "chunks_lost": s.chunks_lost, "chunks_duplicated": s.chunks_duplicated,
             "chunks_reordered": s.chunks_reordered, "policy_restarts": s.policy_restarts,
             "rejected_chunks_old": s.rejected_chunks_old,
             "rejected_chunks_future": s.rejected_chunks_future,
             "rejected_chunks_late": s.rejected_chunks_late, "clock_offset_s": round(s.clock_offset_s, 4)})
    level = {VlaStatus.FAULT: ERROR, VlaStatus.ESTOPPED: WARN}.get(s.state, OK)
    add("safety", level, s.state_name,
        {"state": s.state_name, "safety_interventions": s.safety_interventions, **safety_counters})
    return arr


def _control_loop(s: VlaStatus, cfg: NodeConfig, active: bool, missed: int,
                  stalled_s: float) -> tuple[int, str]:
    """Level and message of the control-loop entry: WARN only for a stall or ticks that never happened."""
    target = cfg.control.control_rate_hz
    if not active:
        return OK, "inactive"
    if stalled_s > 0:
        return WARN, f"stalled: no control tick for {stalled_s:.2f} s (> {STALL_PERIODS:g} periods)"
    if s.control_rate_hz < 0:  # the first window is not full yet
        return OK, f"measuring the rate (first {RATE_WINDOW_S:g} s), target {target:g} Hz"
    rate = f"{s.control_rate_hz:.2f} Hz of {target:g} Hz"
    if missed > 0:
        return WARN, f"{rate}: {missed} tick(s) missed in the last {RATE_WINDOW_S:g} s"
    return OK, rate


def _camera_values(camera: CameraLinkStats | None, prefix: str = "camera") -> dict:
    """The camera subscription's QoS in use, transport losses and the likely cause (README section)."""
    if camera is None:
        return {}
    return {f"{prefix}_reliability": f"{camera.reliability} ({camera.mode})",
            f"{prefix}_publishers": camera.publishers, f"{prefix}_frames_lost": camera.frames_lost,
            f"{prefix}_incompatible_qos": camera.incompatible_qos, f"{prefix}_qos_switches": camera.switches,
            f"{prefix}_hint": camera.hint}
