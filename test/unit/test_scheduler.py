"""ActionScheduler: exact sums over jittered ticks, replacement, late dropping, HOLD when exhausted."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.control.scheduler import ActionScheduler
from vla_ros.core.types import ActionChunk

P = 0.2  # action period [s]


def chunk(n=5, stamp=0.0, seed=0) -> ActionChunk:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-0.05, 0.05, size=(n, 7))
    actions[:, 6] = np.linspace(0.0, 1.0, n)  # distinct gripper per action
    return ActionChunk(actions, stamp, "pick")


def play(sched: ActionScheduler, times) -> tuple[np.ndarray, list]:
    """Sum of the 6 deltas over ticks at `times`, and the steps."""
    total, steps = np.zeros(6), []
    for t in times:
        s = sched.next(t)
        steps.append(s)
        if s is not None:
            total += np.concatenate([s.translation, s.rotation])
    return total, steps


@pytest.mark.parametrize("start", [0.0, 1.7e9])  # seconds since 1970 must not cost precision
@pytest.mark.parametrize("tick", [0.001, 0.01, 0.033, 0.1])
def test_sum_over_jittered_ticks_equals_the_actions(start, tick):
    rng = np.random.default_rng(42)
    sched = ActionScheduler(P, max_tick_gap_s=2.5 * tick)
    c = chunk(n=5)
    assert sched.push(c, start)
    times = start + np.cumsum(rng.uniform(0.3, 1.7, size=int(1.3 / tick)) * tick)  # +-70 % jitter
    total, steps = play(sched, times)
    np.testing.assert_allclose(total, c.actions[:, :6].sum(axis=0), rtol=0, atol=1e-12)
    assert steps[-1] is None  # HOLD once the chunk is played out
    assert sched.remaining == 0


@settings(max_examples=200, deadline=None)
@given(tick=st.floats(0.002, 0.5), jitter=st.lists(st.floats(0.0, 1.9), min_size=1, max_size=200),
       n=st.integers(1, 10), start=st.floats(-1e3, 1e9))
def test_property_sum_is_exact_whatever_the_jitter(tick, jitter, n, start):
    """Windows up to max_tick_gap_s long: nothing dropped, nothing played twice."""
    sched = ActionScheduler(P, max_tick_gap_s=2.0 * tick)
    c = chunk(n=n)
    assert sched.push(c, start)
    times = start + np.cumsum(np.asarray(jitter) * tick)
    times = np.append(times, times[-1] + np.arange(1, int(n * P / tick) + 3) * tick)  # play to the end
    total, _ = play(sched, times)
    np.testing.assert_allclose(total, c.actions[:, :6].sum(axis=0), rtol=0, atol=1e-12)


def test_each_tick_gets_its_share_and_the_gripper_of_the_current_action():
    sched = ActionScheduler(P)
    c = chunk(n=3)
    sched.push(c, 10.0)
    s = sched.next(10.05)
    np.testing.assert_allclose(s.translation, c.actions[0, :3] * 0.25)
    np.testing.assert_allclose(s.rotation, c.actions[0, 3:6] * 0.25)
    assert s.gripper == c.actions[0, 6] and s.source_stamp == c.stamp
    s = sched.next(10.25)  # window (10.05, 10.25]: 0.15 of action 0, 0.05 of action 1
    np.testing.assert_allclose(s.translation, c.actions[0, :3] * 0.75 + c.actions[1, :3] * 0.25)
    assert s.gripper == c.actions[1, 6]


def test_remaining_counts_actions_not_started():
    sched = ActionScheduler(P)
    assert sched.remaining == 0
    sched.push(chunk(n=4), 0.0)
    assert sched.remaining == 4
    sched.next(0.1)
    assert sched.remaining == 3
    sched.next(0.3)
    assert sched.remaining == 2
    sched.clear()
    assert sched.remaining == 0 and sched.next(0.4) is None


def test_nothing_to_play_is_none():
    sched = ActionScheduler(P)
    assert sched.next(0.0) is None
    sched.push(chunk(n=1), 0.0)
    assert sched.next(0.1) is not None
    assert sched.next(0.2) is not None  # the tail of the last action
    assert sched.next(0.21) is None
    assert sched.next(5.0) is None


def test_newer_chunk_replaces_what_is_left():
    sched = ActionScheduler(P)
    old, new = chunk(n=5, stamp=1.0, seed=1), chunk(n=2, stamp=2.0, seed=2)
    sched.push(old, 0.0)
    sched.next(0.1)
    sched.next(0.3)
    assert sched.push(new, 0.3)
    total, steps = play(sched, np.arange(1, 60) * 0.01 + 0.3)
    np.testing.assert_allclose(total, new.actions[:, :6].sum(axis=0), atol=1e-12)
    assert {s.source_stamp for s in steps if s is not None} == {2.0}


def test_older_or_same_chunk_is_ignored():
    sched = ActionScheduler(P)
    assert sched.push(chunk(stamp=5.0), 0.0)
    assert not sched.push(chunk(stamp=4.0), 0.1)
    assert not sched.push(chunk(stamp=5.0), 0.1)  # the same observation would replay motion
    assert sched.current_stamp == 5.0
    sched.clear()
    assert sched.push(chunk(stamp=4.0), 0.2)  # after clear() any chunk is welcome


def test_malformed_chunks_are_refused():
    sched = ActionScheduler(P)
    assert not sched.push(ActionChunk(np.zeros((3, 6)), 1.0), 0.0)
    assert not sched.push(ActionChunk(np.zeros((0, 7)), 1.0), 0.0)
    assert not sched.push(ActionChunk(np.zeros((1, 7)), math.nan), 0.0)
    assert not sched.push(ActionChunk(np.zeros((1, 7)), 1.0), math.inf)
    assert sched.next(0.1) is None


def test_late_actions_are_dropped_not_replayed_in_a_burst():
    tick = 0.01
    sched = ActionScheduler(P, max_tick_gap_s=2.5 * tick)
    c = chunk(n=5)
    sched.push(c, 0.0)
    sched.next(0.01)
    s = sched.next(0.65)  # the loop stalled for 0.64 s: actions 0-2 fully passed
    np.testing.assert_allclose(s.translation, c.actions[3, :3] * (0.025 / P))  # only the last 2.5 ticks
    assert s.gripper == c.actions[3, 6]
    total, _ = play(sched, 0.65 + np.arange(1, 40) * tick)
    np.testing.assert_allclose(total[:3], c.actions[3, :3] * (0.15 / P) + c.actions[4, :3], atol=1e-12)


def test_stall_past_the_whole_chunk_plays_nothing():
    sched = ActionScheduler(P, max_tick_gap_s=0.02)
    sched.push(chunk(n=2), 0.0)
    sched.next(0.01)
    assert sched.next(1.0) is None and sched.remaining == 0


def test_chunk_pushed_with_an_earlier_clock_reading_starts_at_the_last_tick():
    sched = ActionScheduler(P)
    c = chunk(n=2)
    sched.next(1.0)
    sched.push(c, 0.99)  # worker read the clock a little before the timer did
    total, _ = play(sched, 1.0 + np.arange(1, 50) * 0.01)
    np.testing.assert_allclose(total, c.actions[:, :6].sum(axis=0), atol=1e-12)


def test_push_time_later_than_the_tick_waits():
    sched = ActionScheduler(P)
    sched.next(1.0)
    sched.push(chunk(n=1), 1.02)
    assert sched.next(1.01) is None
    assert sched.next(1.12) is not None


def test_clock_running_backwards_clears():
    sched = ActionScheduler(P)
    sched.push(chunk(n=5), 10.0)
    assert sched.next(10.1) is not None
    assert sched.next(3.0) is None
    assert sched.next(10.2) is None and sched.remaining == 0


def test_repeated_tick_time_is_a_zero_step():
    sched = ActionScheduler(P)
    c = chunk(n=2)
    sched.push(c, 0.0)
    sched.next(0.05)
    s = sched.next(0.05)
    assert s is not None and not s.translation.any() and s.gripper == c.actions[0, 6]


def test_tick_slower_than_the_action_period():
    sched = ActionScheduler(0.05, max_tick_gap_s=0.25)  # 10 Hz ticks, 20 Hz actions
    c = chunk(n=4)
    sched.push(c, 0.0)
    total, steps = play(sched, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(total, c.actions[:, :6].sum(axis=0), atol=1e-12)
    assert steps[0].gripper == c.actions[2, 6] and steps[-1] is None  # action 2 starts at 0.1


def test_the_chunk_is_copied():
    sched = ActionScheduler(P)
    c = chunk(n=1)
    expected = c.actions[0, :3] * 0.5
    sched.push(c, 0.0)
    c.actions[:] = 99.0  # the caller reuses its buffer
    np.testing.assert_allclose(sched.next(0.1).translation, expected)


@pytest.mark.parametrize("period, gap", [(0.0, None), (-1.0, None), (math.nan, None), (0.2, 0.0)])
def test_invalid_periods_raise(period, gap):
    with pytest.raises(ValueError):
        ActionScheduler(period, max_tick_gap_s=gap)


@pytest.mark.parametrize("replan_s", [0.0, 0.01, 0.05])
def test_fast_replanning_keeps_the_commanded_velocity(replan_s):
    """A model faster than the control tick replaces chunks between ticks: no motion may be lost."""
    period, tick = 0.2, 0.1
    velocity = np.array([0.05, -0.02, 0.01, 0.0, 0.0, 0.1])  # per second
    action = np.append(velocity * period, 1.0)[None, :]  # one action = velocity * period
    sched = ActionScheduler(period)
    total, t, stamp = np.zeros(6), 0.0, 0.0
    for i in range(1, 41):
        t_tick = i * tick
        # Several chunks arrive between two ticks, each from a newer observation.
        for j in range(3):
            stamp += 1.0
            sched.push(ActionChunk(action, stamp=stamp), now=t + replan_s * (j + 1) / 3)
        step = sched.next(t_tick)
        assert step is not None
        total += np.concatenate([step.translation, step.rotation])
        t = t_tick
    moving_s = 40 * tick - replan_s / 3  # motion starts with the first chunk
    np.testing.assert_allclose(total, velocity * moving_s, rtol=1e-9, atol=1e-12)
