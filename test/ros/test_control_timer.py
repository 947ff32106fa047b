"""ros/control_timer.py: SCHED_FIFO where permitted; one clear warning and normal scheduling where not."""

from __future__ import annotations

import os
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from vla_ros.ros import control_timer  # noqa: E402
from vla_ros.ros.control_timer import ControlTimer  # noqa: E402


class RecordingLogger:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.debug_lines: list[str] = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def debug(self, message: str) -> None:
        self.debug_lines.append(message)


@pytest.fixture
def owner():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("timer_owner", namespace=f"/ct_{os.getpid()}", context=ctx)
    logger = RecordingLogger()
    node.get_logger = lambda: logger  # the timer logs through its owner
    yield node, logger
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def run_timer(node, priority: int, seconds: float = 0.3) -> tuple[int, ControlTimer, list[int]]:
    ticks, policies = [0], []

    def tick() -> None:
        if ticks[0] == 0:
            policies.append(os.sched_getscheduler(0))
        ticks[0] += 1

    timer = ControlTimer(node, 0.01, tick, priority)
    timer.start()
    time.sleep(seconds)
    timer.stop()
    return ticks[0], timer, policies


def test_refused_priority_warns_once_and_keeps_ticking(owner, monkeypatch):
    node, logger = owner

    def refuse(pid, policy, param):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    monkeypatch.setattr(control_timer, "_priority_warned", False)
    first, timer, policies = run_timer(node, 50)
    assert first >= 10 and not timer.realtime  # still running, on normal scheduling
    assert policies == [os.SCHED_OTHER]
    second, _, _ = run_timer(node, 50)  # activated again: no second warning
    assert second >= 10
    assert len(logger.warnings) == 1, logger.warnings
    text = logger.warnings[0]
    assert "SCHED_FIFO 50" in text and "Operation not permitted" in text
    assert "ulimit -r" in text and "CAP_SYS_NICE" in text and "control_priority: 0" in text
    assert len(logger.debug_lines) == 1


def test_priority_zero_asks_for_nothing(owner, monkeypatch):
    node, logger = owner
    monkeypatch.setattr(os, "sched_setscheduler", lambda *a: pytest.fail("must not be called"))
    ticks, timer, _ = run_timer(node, 0)
    assert ticks >= 10 and not timer.realtime and not logger.warnings


def test_granted_priority_runs_the_thread_fifo(owner):
    node, logger = owner
    if control_timer.realtime_refusal(10) is not None:
        pytest.skip("this machine does not grant SCHED_FIFO")
    ticks, timer, policies = run_timer(node, 10)
    assert ticks >= 10 and timer.realtime and policies == [os.SCHED_FIFO] and not logger.warnings
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # only the timer's own thread changed
