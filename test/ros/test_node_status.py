"""vla_node's status, diagnostics and logs over real rclpy + Fast DDS (issue 15): instructions checked
once on arrival against the model, rates over a full window, no false WARN, quiet escaped logs."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from vla_harness import NodeHarness, harnesses, wait_for  # noqa: E402
from vla_ros.msg import VlaStatus  # noqa: E402

from vla_ros.control.status import NO_RATE  # noqa: E402
from vla_ros.core.config import PolicyConfig  # noqa: E402
from vla_ros.model.tiny import cached_tiny_checkpoint  # noqa: E402
from vla_ros.runtime.factory import make_policy  # noqa: E402
from vla_ros.runtime.synthetic import SyntheticPolicy  # noqa: E402

RATE = 10.0
BASE = {"control.control_rate_hz": RATE, "control.action_period_s": 0.2, "control.status_rate_hz": 4.0,
        "safety.max_image_age_s": 0.5, "policy.max_inference_s": 2.0}
LONG = "x " * 2000  # 4000 bytes (under the 4096-byte limit), ~4000 tokens: more than the model's 2048


@pytest.fixture
def harness():
    with harnesses(BASE) as make:
        yield make


def moving(m) -> bool:
    return not m.hold and np.linalg.norm([m.translation.x, m.translation.y, m.translation.z]) > 0


def control_entries(h: NodeHarness) -> list[DiagnosticStatus]:
    return [st for arr in list(h.diagnostics) for st in arr.status if st.name.endswith("control loop")]


def node_lines(h: NodeHarness, word: str, level: int | None = None) -> list[str]:
    return [m.msg for m in list(h.logs) if word in m.msg and (level is None or m.level == level)]


def test_over_long_instruction_holds_with_a_reason_then_a_valid_one_moves(harness):
    policy = make_policy(PolicyConfig(checkpoint=str(cached_tiny_checkpoint()), warmup_runs=1))
    h = harness(policy)
    h.start_camera(15.0)
    h.say("pick up the red block")
    assert h.arm(True).success
    assert h.wait_commands(moving, 10.0) is not None, h.node.last_error
    errors0 = h.node.status().policy_errors
    for _ in range(3):  # the same message again: counted, logged once
        h.say(LONG)
    assert wait_for(lambda: h.node.rejected["instruction"] == 3, 5.0), h.node.rejected
    n = len(h.commands)
    time.sleep(1.5)  # camera frames keep arriving: nothing may re-raise per frame
    s = h.node.status()
    assert s.state == VlaStatus.HOLDING and h.node.core.state != "FAULT", s.state_name
    assert s.instruction == "" and s.policy_errors == errors0
    assert "prompt too long" in s.last_error and "2048" in s.last_error and "(at " in s.last_error
    tail = h.commands[n + 3:]  # the previous instruction does not keep running either
    assert tail and all(m.hold for m in tail)
    assert len(node_lines(h, "prompt too long")) == 1, node_lines(h, "rejected")
    h.say("pick up the red block")
    assert h.wait_commands(moving, 10.0) is not None, h.node.last_error
    s = h.node.status()
    assert s.state == VlaStatus.ARMED and s.last_error == "" and s.policy_errors == errors0


def test_first_status_has_no_rate_and_no_warn_then_a_true_rate(harness):
    h = harness(SyntheticPolicy(latency_s=0.02), wait_first_command=False)
    h.start_camera(15.0)
    h.say("pick up the cup")
    assert wait_for(lambda: len(h.statuses) > 0 and len(control_entries(h)) > 0, 3.0)
    first, first_diag = h.statuses[0], control_entries(h)[0]
    assert first.control_rate_hz == NO_RATE and first.model_rate_hz == NO_RATE
    assert first_diag.level == DiagnosticStatus.OK, first_diag.message
    assert wait_for(lambda: any(s.control_rate_hz >= 0 for s in h.statuses), 4.0)
    time.sleep(2.5)
    # a window that holds a tick the timer really skipped (a loaded machine) reports it: judge the others
    missed = {(a.header.stamp.sec, a.header.stamp.nanosec): kv.value for a in list(h.diagnostics)
              for st in a.status if st.name.endswith("control loop")
              for kv in st.values if kv.key == "missed_ticks_in_window"}
    rated = [s for s in list(h.statuses) if s.control_rate_hz >= 0
             and missed.get((s.header.stamp.sec, s.header.stamp.nanosec)) == "0"]
    assert len(rated) >= 6
    assert all(abs(s.control_rate_hz - RATE) <= 0.3 for s in rated), [s.control_rate_hz for s in rated]
    early = [d for d in control_entries(h) if "measuring" in d.message]
    assert early and all(d.level == DiagnosticStatus.OK for d in early)
    values = {kv.key: kv.value for kv in control_entries(h)[-1].values}
    assert "missed_ticks_in_window" in values and "rate_window_s" in values


def test_instruction_burst_is_logged_once_escaped_and_the_last_one_is_reported(harness):
    h = harness(SyntheticPolicy(latency_s=0.02))
    h.node._log_gate.interval_s = 2.0  # shorter than LOG_THROTTLE_S so that the test stays short
    time.sleep(0.3)
    n0 = len(h.logs)
    for i in range(50):  # a burst: the node's keep-last queue may drop some, the last one arrives
        h.say(f"pick up cup {i}\n[ERROR] [vla_node]: forged line \u202e")
        time.sleep(0.002)
    last = "pick up cup 49\n[ERROR] [vla_node]: forged line \u202e"
    assert wait_for(lambda: h.node.core.instruction == last.strip(), 5.0)
    for i in range(20):
        h.say(f"{LONG}{i}\x01")  # a control character: rejected by the input rules
        time.sleep(0.005)
    assert wait_for(lambda: h.node.rejected["instruction"] >= 10, 5.0), h.node.rejected
    # the instruction in force after the burst is logged once the throttle period is over
    assert wait_for(lambda: any("cleared: HOLD" in m for m in node_lines(h, "instruction")), 4.0), \
        node_lines(h, "instruction")
    time.sleep(0.5)
    lines = [m.msg for m in list(h.logs)[n0:]]
    about = [m for m in lines if "instruction" in m]
    assert 2 <= len(about) <= 5, about  # not one per message
    assert all("\n" not in m and "\u202e" not in m for m in lines)
    assert any("\\n[ERROR]" in m and "\\u202e" in m for m in about)
    assert any("not logged" in m for m in about)  # the held-back ones are counted
    assert all(m.level <= Log.WARN for m in list(h.logs)[n0:])


def test_over_long_instruction_holds_with_the_policy_in_a_child_process(harness):
    cfg = PolicyConfig(checkpoint=str(cached_tiny_checkpoint()), warmup_runs=1)
    h = harness(None, policy_factory=functools.partial(make_policy, cfg), inference_process=True)
    assert h.node.policy is None  # the policy lives in the child; its check came back from it
    h.start_camera(15.0)
    h.say("pick up the red block")
    assert h.arm(True).success
    assert h.wait_commands(moving, 15.0) is not None, h.node.last_error
    h.say(LONG)
    assert wait_for(lambda: h.node.rejected["instruction"] == 1, 5.0)
    assert wait_for(lambda: h.node.status().state == VlaStatus.HOLDING, 3.0)
    s = h.node.status()
    assert s.policy_errors == 0 and "prompt too long" in s.last_error
