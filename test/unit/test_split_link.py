"""The split deployment's ROS-free parts: the link monitor, the link's fault model and the control half."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vla_ros.control.core import ControlCore
from vla_ros.control.link import ChunkLink
from vla_ros.control.netem import FaultyLink, LinkFaults
from vla_ros.control.split import ChunkEnvelope, ChunkSender, ControlHalf
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.types import ActionChunk

PERIOD = 0.05
TEXT = "pick up the cup"


def _chunk(stamp: float, text: str = TEXT, value: float = 0.01, inference_s: float = 0.0) -> ActionChunk:
    actions = np.zeros((8, 7))
    actions[:, 0], actions[:, 6] = value, 1.0
    return ActionChunk(actions, stamp, text, {"inference": inference_s})


def _half(watch_cameras: bool = True, **limits) -> ControlHalf:
    core = ControlCore(SafetyLimits(**limits), 0.02, PERIOD)
    core.set_armed(True)
    core.on_instruction(TEXT, 0.0)
    return ControlHalf(core, PERIOD, watch_cameras)


# ----- ChunkLink ----------------------------------------------------------------------------------------
def test_link_counts_gaps_duplicates_and_late_arrivals_of_skipped_numbers():
    link = ChunkLink()
    assert [link.on_chunk(s, 0.1 * s, 0.0, 0.1 * s + 0.01) for s in (0, 1, 4)] == ["new"] * 3
    assert link.lost == 2
    assert link.on_chunk(4, 0.4, 0.0, 0.42) == "duplicate"
    assert link.on_chunk(2, 0.2, 0.0, 0.43) == "reordered"  # counted lost when skipped: only late
    report = link.report()
    assert (report.received, report.lost, report.duplicates, report.reordered) == (5, 1, 1, 1)


def test_link_sees_a_restarted_policy_as_a_restart_not_as_duplicates():
    link = ChunkLink()
    for s in range(5):
        link.on_chunk(s, float(s), 0.0, s + 0.01)
    assert link.on_chunk(0, 10.0, 0.0, 10.01) == "new"  # number 0 again, newer stamp
    assert link.on_chunk(1, 10.1, 0.0, 10.11) == "new"
    assert (link.restarts, link.duplicates, link.lost) == (1, 0, 0)


def test_link_flags_stamps_from_the_future_with_the_remedy():
    link = ChunkLink(future_tolerance_s=0.05)
    link.on_chunk(0, 12.0, 0.0, 10.0)
    problem = link.clock_problem()
    assert "2.000 s in the future" in problem and "chrony" in problem
    assert link.clock_offset_s == pytest.approx(-2.0)
    link.on_chunk(1, 10.1, 0.0, 10.11)  # the clocks agree again
    assert link.clock_problem() == ""


def test_link_flags_steady_lateness_only_when_every_chunk_of_the_window_is_late():
    link = ChunkLink(late_after_s=1.0, window=10)
    for s in range(9):  # inference time is not lateness: 0.3 s of it + 1.2 s of transport
        link.on_chunk(s, float(s), 0.3, s + 1.5)
    assert link.clock_problem() == ""  # not a full window yet
    link.on_chunk(9, 9.0, 0.3, 10.5)
    assert "at least 1.200 s" in link.clock_problem()
    link.on_chunk(10, 10.0, 0.0, 10.1)  # one chunk in time: not steady
    assert link.clock_problem() == "" and link.clock_offset_s == pytest.approx(0.1)


def test_link_has_no_offset_before_the_first_chunk():
    assert math.isnan(ChunkLink().report().clock_offset_s)


# ----- FaultyLink -----------------------------------------------------------------------------------------
def test_faulty_link_delays_each_message_within_the_jitter_and_keeps_order_without_faults():
    link: FaultyLink[int] = FaultyLink(LinkFaults(latency_s=0.1, jitter_s=0.03), seed=1)
    for i in range(200):
        link.send(i, i * 0.001)
    assert link.sent == 200
    arrived = []
    while link.next_delivery is not None:
        t = link.next_delivery
        arrived += [(i, t) for i in link.due(t)]
    assert sorted(i for i, _ in arrived) == list(range(200))
    lags = np.array([t - i * 0.001 for i, t in arrived])
    assert lags.min() >= 0.07 - 1e-9 and lags.max() <= 0.13 + 1e-9 and lags.std() > 0.01


def test_faulty_link_loses_and_duplicates_at_the_given_rates_and_repeats_with_the_seed():
    def run(seed: int) -> list[int]:
        link: FaultyLink[int] = FaultyLink(LinkFaults(loss=0.1, duplicate=0.05), seed=seed)
        for i in range(5000):
            link.send(i, 0.0)
        return link.due(0.0)

    got = run(3)
    assert got == run(3) and got != run(4)
    assert 0.08 < 1 - len(set(got)) / 5000 < 0.12
    assert 0.03 < (len(got) - len(set(got))) / len(set(got)) < 0.07


def test_faulty_link_reorders_by_holding_messages_back():
    link: FaultyLink[int] = FaultyLink(LinkFaults(reorder=0.3, reorder_s=0.05), seed=0)
    for i in range(100):
        link.send(i, i * 0.01)
    got = link.due(10.0)
    assert sorted(got) == list(range(100)) and got != list(range(100)) and link.reordered > 10


@pytest.mark.parametrize("faults", [LinkFaults(latency_s=-0.1), LinkFaults(loss=1.5),
                                    LinkFaults(jitter_s=math.nan)])
def test_faulty_link_rejects_impossible_settings(faults):
    with pytest.raises(ValueError):
        FaultyLink(faults)


# ----- ControlHalf and ControlCore's age and clock checks ---------------------------------------------------
def test_control_half_plays_a_fresh_chunk_and_drops_its_duplicate():
    half = _half()
    half.core.on_image(1.0)
    sender = ChunkSender(PERIOD)
    envelope = sender.envelope(_chunk(1.0))
    assert half.on_chunk(envelope, 1.05) == "accepted"
    assert half.on_chunk(envelope, 1.06) == "duplicate"
    assert half.core.counters["rejected_chunks"] == 0 and half.link.duplicates == 1
    assert not half.core.tick(1.07).hold
    assert sender.envelope(_chunk(1.1)).sequence == 1


def test_control_core_rejects_chunks_older_than_the_action_age_limit_and_from_the_future():
    half = _half(max_action_age_s=0.5)
    half.core.on_image(10.0)
    assert half.on_chunk(ChunkEnvelope(_chunk(9.4), 0, PERIOD), 10.0) == "rejected"
    assert "safety.max_action_age_s" in half.core.last_error
    assert half.on_chunk(ChunkEnvelope(_chunk(10.2), 1, PERIOD), 10.0) == "rejected"
    assert "in the future" in half.core.last_error
    counters = half.core.counters
    assert (counters["rejected_chunks_old"], counters["rejected_chunks_future"]) == (1, 1)
    assert half.core.tick(10.02).hold
    assert half.on_chunk(ChunkEnvelope(_chunk(9.9), 2, PERIOD), 10.0) == "accepted"
    assert half.on_chunk(ChunkEnvelope(_chunk(10.01), 3, PERIOD), 10.0) == "accepted"  # within tolerance


def test_control_half_rejects_another_action_period_naming_the_parameter():
    half = _half()
    assert half.on_chunk(ChunkEnvelope(_chunk(1.0), 0, 0.2), 1.01) == "rejected"
    assert "control.action_period_s" in half.core.last_error
    assert half.core.counters["rejected_chunks_invalid"] == 1


def test_without_camera_topics_the_chunk_stamp_feeds_the_image_watchdog():
    watching, blind = _half(watch_cameras=True), _half(watch_cameras=False)
    for half in (watching, blind):
        half.on_chunk(ChunkEnvelope(_chunk(1.0), 0, PERIOD), 1.02)
    assert watching.core.tick(1.04).interventions & 8  # STALE_IMAGE: no camera message seen
    assert not blind.core.tick(1.04).hold
    assert blind.core.image_stamp == 1.0


def test_commands_hold_once_the_chunk_in_force_is_older_than_the_action_age_limit():
    half = _half(watch_cameras=False, max_action_age_s=0.2, max_image_age_s=1.0)
    long = ActionChunk(np.tile([0.001, 0, 0, 0, 0, 0, 1.0], (20, 1)), 1.0, TEXT)  # 1 s of actions
    assert half.on_chunk(ChunkEnvelope(long, 0, PERIOD), 1.0) == "accepted"
    holds = [(t, half.core.tick(t).hold) for t in np.arange(1.02, 1.5, 0.02)]
    first_hold = next(t for t, hold in holds if hold)
    assert 1.2 <= first_hold <= 1.2 + 0.021 and all(hold for t, hold in holds if t >= first_hold)
