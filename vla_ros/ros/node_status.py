"""vla_node's status, diagnostics, last error and throttled logs: the StatusReporting mixin of VlaNode."""

from __future__ import annotations

import time

from std_msgs.msg import Header

from vla_ros.control.status import NO_RATE, RATE_WINDOW_S, Counters, LoopMonitor, status_fields
from vla_ros.core.inputs import loggable
from vla_ros.core.stats import RateWindow
from vla_ros.msg import VlaStatus
from vla_ros.ros.conversions import seconds_to_time
from vla_ros.ros.diagnostics import diagnostic_array

LOG_THROTTLE_S = 10.0  # per-message log lines (rejections, instruction changes): one per key and period


class StatusReporting:
    """VlaStatus, /diagnostics, `last_error` and throttled logs from VlaNode's counters (never the
    control path). Mixed into VlaNode, whose attributes it reads."""

    def _reject(self, kind: str, exc: Exception, log: bool = True) -> None:
        """Count a rejected input; last_error says why and when; one WARN per kind and throttle period.
        Called from ROS callbacks and from the inference worker (frames that fail to decode)."""
        with self._reject_lock:
            self.rejected[kind] += 1
            text = self._errors.set(kind, f"rejected {kind}: {exc}", self._now())
            if log:
                self._log_throttled("rejected " + kind, text)

    def _log_throttled(self, key: str, text: str, info: bool = False) -> None:
        """Log `text` unless a line of `key` went out less than LOG_THROTTLE_S ago (then counted)."""
        held = self._log_gate.allow(key, time.monotonic())
        if held is None:
            return
        if held:
            text += f" [{held} more not logged in the last {self._log_gate.interval_s:g} s]"
        if info:  # rclpy wants one severity per call site
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)

    def command_subscription_count(self) -> int:
        """Subscribers matched on the command topic (0 before configure)."""
        pub = getattr(self, "_command_pub", None)
        return pub.get_subscription_count() if pub is not None else 0

    @property
    def last_error(self) -> str:
        """The last error with the node-clock time it happened; '' once its cause is gone (a valid
        instruction, a newer accepted image or pose, the policy's recovery)."""
        return self._errors.text

    @last_error.setter
    def last_error(self, text: str) -> None:
        if text:
            self._errors.set("node", text, self._now())
        else:
            self._errors.clear()

    def _log_instruction(self, text: str) -> None:
        self._log_throttled("instruction", f"instruction: {loggable(text)}" if text else
                            "instruction cleared: HOLD", info=True)

    def _reset_rates(self) -> None:
        """Rate windows start now: no rate (NO_RATE) and no control-loop WARN before they are full."""
        start = time.perf_counter()
        self._loop = LoopMonitor(1.0 / self.config.control.control_rate_hz, start=start)
        self._model_rate = RateWindow(RATE_WINDOW_S, start)

    def status(self) -> VlaStatus:
        """The current VlaStatus (built from counters; also used by tests). Rates are over the last
        >= RATE_WINDOW_S of tick / call times; NO_RATE (-1) before the first full window."""
        core, worker, half, role = self.core, self.worker, self._half, self.config.split.role
        now, perf = self._now(), time.perf_counter()
        header = Header(stamp=seconds_to_time(now), frame_id=self.config.control.frame_id)
        if core is None or (worker is None and half is None):
            return VlaStatus(header=header, state=VlaStatus.DISARMED, state_name="UNCONFIGURED",
                             last_error=self.last_error, control_rate_hz=NO_RATE, model_rate_hz=NO_RATE,
                             role=role, clock_offset_s=float("nan"))
        loop, model = self._loop, self._model_rate
        control_hz = loop.rate(perf) if loop is not None and role != "policy" else None
        model_hz = model.rate(perf) if model is not None else None  # role control: chunks received
        link = half.report() if half is not None else None
        if worker is not None:
            latency, errors = worker.stats.last_latency_s, worker.stats.errors
            policy_error = worker.stats.last_error if worker.faulted else ""
        else:
            latency, errors, policy_error = half.remote_inference_s, 0, ""
        counters = Counters(
            backend=half.remote_backend if half is not None else self._backend, inference_latency_s=latency,
            model_rate_hz=NO_RATE if model_hz is None else model_hz,
            control_rate_hz=NO_RATE if control_hz is None else control_hz,
            commands_published=self.commands_published,
            rejected_inputs=sum(self.rejected.values()), policy_errors=errors,
            last_error=(self._stale_camera_reason(now) or (link.clock_problem if link else "")
                        or self.last_error or policy_error))
        return VlaStatus(header=header, **status_fields(core, now, counters, link, role))

    def _stale_camera_reason(self, now: float) -> str:
        """With several cameras, which one holds the arm (no frame within its max age); '' when none."""
        core = self.core
        if core is None or len(self._cameras) < 2:
            return ""
        name = core.stale_camera(now)
        if name is None:
            return ""
        return f"HOLD: camera '{name}' has no frame in the last {core.cameras[name]:g} s"

    def _on_status(self) -> None:
        try:
            status, core, worker, loop = self.status(), self.core, self.worker, self._loop
            if self._log_gate.held("instruction") and core is not None:
                self._log_instruction(core.instruction)  # the one in force after a burst of changes
            self._status_pub.publish(status)
            self._diag_pub.publish(diagnostic_array(
                self.get_fully_qualified_name(), status, self.config, active=self._active,
                worker=worker.stats if worker is not None else None, tick_errors=self.tick_errors,
                skipped_no_pose=self.skipped_no_pose, rejected=self.rejected,
                safety_counters=core.counters if core is not None else {},
                missed_ticks=loop.missed() if loop is not None else 0,
                stalled_s=loop.stalled_s(time.perf_counter()) if loop is not None else 0.0,
                camera=self.camera_sub.stats() if self.camera_sub is not None else None,
                extra_cameras=[(cam.topic, sub.stats())
                               for cam, sub in zip(self._cameras[1:], self.camera_subs[1:])]))
        except Exception as exc:
            self.get_logger().error(f"status not published: {exc!r}", throttle_duration_sec=LOG_THROTTLE_S)
