"""Status helpers without ROS: rate windows, missed ticks, last_error with its time, log throttling,
instruction escaping, the instruction check on arrival, and the status fields (order, chunk fields)."""

import struct
from pathlib import Path

import numpy as np
import pytest

from vla_ros.control.core import ControlCore
from vla_ros.control.status import (
    NO_RATE,
    RATE_WINDOW_S,
    STALL_PERIODS,
    Counters,
    LastError,
    LoopMonitor,
    status_fields,
)
from vla_ros.core.inputs import InputError, decode_instruction, loggable
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.stats import RateWindow, Throttle
from vla_ros.core.types import ActionChunk, instruction_check


def cdr(text: str) -> bytes:
    data = text.encode() + b"\0"
    return b"\x00\x01\x00\x00" + struct.pack("<I", len(data)) + data


def test_rate_window_none_before_full_window_then_exact_under_jitter():
    rng = np.random.default_rng(0)
    w = RateWindow(2.0)
    t = 100.0
    assert w.rate(t) is None
    rates = []
    for i in range(200):  # 10 Hz with +-20 ms jitter on every tick
        w.add(t + 0.1 * i + rng.uniform(-0.02, 0.02))
        now = t + 0.1 * i + 0.05
        r = w.rate(now)
        if i < 19:
            assert r is None, i
        elif r is not None:
            rates.append(r)
    assert len(rates) > 150 and max(abs(r - 10.0) for r in rates) < 0.3, (min(rates), max(rates))


def test_rate_window_decays_after_a_stall_and_counts_slow_events():
    w = RateWindow(2.0)
    for i in range(50):
        w.add(0.1 * i)
    assert w.rate(4.95) == pytest.approx(10.0, abs=0.05)
    assert w.rate(6.0) < 5.0  # 1.1 s without an event: no longer 10 Hz
    assert w.rate(10.0) == 0.0
    slow = RateWindow(2.0, start=0.0)
    assert slow.rate(1.0) is None and slow.rate(2.5) == 0.0
    for t in (3.0, 5.5, 8.0):  # one event every 2.5 s: the window reaches back to the previous one
        slow.add(t)
    assert slow.rate(8.1) == pytest.approx(0.4, abs=0.02)


def test_loop_monitor_counts_missed_ticks_not_late_ones():
    m = LoopMonitor(0.1, start=0.0)
    times = [0.1 * i for i in range(40)]
    times[25] += 0.07  # late by 70 % of a period: jitter, the count is kept
    for t in times:
        m.tick(t)
    assert m.missed() == 0 and m.stalled_s(3.95) == 0.0
    assert m.rate(3.95) == pytest.approx(10.0, abs=0.05)
    for t in (4.2, 4.3):  # 4.0 and 4.1 never happened
        m.tick(t)
    assert m.missed() == 2
    assert m.stalled_s(4.3 + STALL_PERIODS * 0.1 + 0.05) > 0
    assert NO_RATE < 0 and RATE_WINDOW_S >= 2.0


def test_last_error_has_its_time_and_is_resolved_by_its_own_cause():
    e = LastError()
    text = e.set("instruction", "rejected instruction: too long", 12.25)
    assert text == e.text == "rejected instruction: too long (at 12.250 s)"
    e.resolve("image")
    assert e.text  # another cause does not clear it
    e.resolve("instruction")
    assert e.text == ""
    e.set("image", "rejected image: bad jpeg", 5.0)
    e.resolve("image", since=4.0)  # an image accepted before the error
    assert e.text
    e.resolve("image", since=5.5)
    assert e.text == ""


def test_throttle_passes_one_per_period_and_counts_the_rest():
    th = Throttle(2.0)
    assert th.allow("a", 0.0) == 0
    assert [th.allow("a", 0.1 * i) for i in range(1, 6)] == [None] * 5
    assert th.allow("b", 0.5) == 0  # keys are independent
    assert th.held("a") == 5
    assert th.allow("a", 2.1) == 5 and th.held("a") == 0


def test_loggable_escapes_and_truncates():
    assert loggable("pick up the cup") == "'pick up the cup'"
    assert loggable("a\nb\x1b[31m\u202e") == "'a\\nb\\x1b[31m\\u202e'"
    long = loggable("x" * 500, limit=80)
    assert long.startswith("'" + "x" * 80 + "'") and "500 characters" in long and len(long) < 120


def test_decode_instruction_applies_the_policy_check():
    def check(text):
        return "prompt too long" if len(text) > 10 else None

    assert decode_instruction(cdr("pick up"), check) == "pick up"
    assert decode_instruction(cdr(""), check) == ""  # empty = HOLD, never checked
    with pytest.raises(InputError, match="not usable by the model: prompt too long"):
        decode_instruction(cdr("pick up the red cube"), check)

    def broken(text):
        raise RuntimeError("tokenizer crashed")

    with pytest.raises(InputError, match="check failed: RuntimeError: tokenizer crashed"):
        decode_instruction(cdr("pick up"), broken)
    assert decode_instruction(cdr("x" * 4000), None) == "x" * 4000


def test_instruction_check_is_optional():
    class Plain:
        def predict(self, observation, instruction): ...

    class Checked(Plain):
        def check_instruction(self, text):
            return None if text else "empty"

    assert instruction_check(Plain()) is None
    assert instruction_check(Checked())("x") is None


def test_status_fields_keep_the_message_order_and_append_the_chunk_and_link_fields():
    msg = Path(__file__).resolve().parents[2] / "msg" / "VlaStatus.msg"
    lines = [line.split("#")[0].split() for line in msg.read_text().splitlines()]
    declared = [w[1] for w in lines if len(w) == 2 and "=" not in w[1]][1:]  # no constants, no header
    core = ControlCore(SafetyLimits(), 0.02, 0.05, cameras={"front": 0.5, "wrist": 0.2})
    core.set_armed(True)
    core.on_instruction("pick", 0.0)
    core.on_image(0.0, "front")
    assert not core.on_chunk(ActionChunk(np.zeros((8, 7)), 0.0, "pick"), 1.0)  # late
    counters = Counters("torch cpu fp32", 0.1, 2.0, 50.0, 10, 0, 0, None)
    fields = status_fields(core, 0.1, counters)
    chunk_keys = ["chunk_switches", "chunk_jump_last", "chunk_jump_max", "chunk_delay_last_s",
                  "dropped_actions", "rejected_chunks_late", "stale_camera"]
    assert list(fields)[:15] == declared[:15]  # the original fields, in the message's order
    link_keys = ["role", "chunks_received", "chunks_lost", "chunks_duplicated", "chunks_reordered",
                 "policy_restarts", "rejected_chunks_old", "rejected_chunks_future", "clock_offset_s",
                 "clock_warning"]
    assert list(fields)[15:] == chunk_keys + link_keys
    assert list(fields) == declared  # nothing else: every declared field is filled
    assert fields["rejected_chunks_late"] == 1 and fields["stale_camera"] == "wrist"
    assert fields["chunk_switches"] == 0 and fields["chunk_jump_max"] == -1.0
    assert fields["chunk_delay_last_s"] == -1.0 and fields["dropped_actions"] == 0
    assert core.on_chunk(ActionChunk(np.zeros((8, 7)), 0.88, "pick"), 1.0)
    later = status_fields(core, 1.0, counters)
    assert later["chunk_delay_last_s"] == pytest.approx(0.12) and later["dropped_actions"] == 2
