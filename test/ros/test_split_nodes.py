"""The split deployment over real DDS: the control half (split.role control) receiving action chunks from
a probe or a real policy node (split.role policy), and the chunks the policy and both roles publish.

Covered: a stale chunk rejected, lost chunks and HOLD when the chunk in force runs out or ages, duplicated
and reordered chunks, the policy killed and restarted or hung, a clock offset detected (stamps in the future,
steadily late), chunks with the wrong period or instruction or malformed, and what role policy / both
publish.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from split_harness import BASE, INSTRUCTION, SplitHarness, seconds  # noqa: E402
from vla_harness import NodeHarness, wait_for  # noqa: E402
from vla_ros.msg import ActionChunk as ActionChunkMsg  # noqa: E402

from vla_ros.control.safety import Intervention  # noqa: E402
from vla_ros.ros.qos import reliable_qos  # noqa: E402
from vla_ros.runtime.synthetic import SyntheticPolicy, instruction_direction  # noqa: E402

TICK_S = 1.0 / BASE["control.control_rate_hz"]
LATE_TOLERANCE_S = 0.1  # a loaded 2-core machine may start a control tick this late
STALE_ACTION = int(Intervention.STALE_ACTION)


@pytest.fixture
def split():
    """`split(params=None) -> SplitHarness`; every harness made is closed at the end."""
    made: list[SplitHarness] = []

    def make(params: dict | None = None) -> SplitHarness:
        h = SplitHarness(params)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def _counter(h: SplitHarness, name: str) -> int:
    return h.node.core.counters[name]


def test_stale_chunk_is_rejected_and_a_fresh_one_moves_the_arm(split):
    h = split()  # safety.max_action_age_s 1.0
    h.ready()
    start = len(h.commands)
    old_stamp = h.now() - 1.3  # 10 actions of 0.2 s: some still ahead, but older than the limit
    h.send(h.chunk(0, old_stamp))
    s = h.node.status()
    assert (s.chunks_received, s.rejected_chunks_old, s.chunks_lost) == (1, 1, 0)
    assert "max_action_age_s" in h.node.core.last_error
    time.sleep(0.3)
    after = h.commands_since(start)
    assert len(after) >= 10 and all(c.hold for c in after), "a stale chunk moved the arm"
    assert not h.moving(old_stamp)
    fresh = h.now()
    h.send(h.chunk(1, fresh))
    assert wait_for(lambda: h.moving(fresh), 2.0), h.node.core.last_error
    assert not h.moving(old_stamp)
    s = h.node.status()
    assert (s.chunks_received, s.rejected_chunks_old, s.chunks_lost) == (2, 1, 0)
    assert s.state_name == "ARMED" and s.clock_warning == ""


def test_lost_chunks_are_counted_and_hold_comes_when_the_chunk_in_force_runs_out(split):
    max_age = 0.6
    h = split({"safety.max_action_age_s": max_age})
    h.ready()
    # A chunk of 2 actions x 0.2 s played from its stamp: HOLD (no gate, nothing to play) once played.
    t0 = h.now()
    h.send(h.chunk(0, t0, length=2))
    hold = h.hold_after(t0)
    assert hold is not None, "never moved, or never stopped"
    played_out = seconds(hold.header.stamp) - t0
    assert 2 * h.period_s - 0.005 <= played_out <= 2 * h.period_s + LATE_TOLERANCE_S, played_out
    assert hold.interventions == 0, hold.intervention_names
    # Chunks 1 and 2 never arrive; chunk 3 spans 2 s, longer than max_action_age_s: the age gate stops it.
    t3 = h.now()
    h.send(h.chunk(3, t3, direction=(0.0, 1.0, 0.0)))
    assert h.node.status().chunks_lost == 2
    hold = h.hold_after(t3)
    assert hold is not None, "never moved, or never stopped"
    aged_out = seconds(hold.header.stamp) - t3
    assert max_age - 0.005 <= aged_out <= max_age + LATE_TOLERANCE_S, aged_out
    assert hold.interventions & STALE_ACTION, hold.intervention_names
    time.sleep(0.1)
    last = h.commands[-5:]
    assert all(c.hold for c in last), "moved again without a new chunk"
    s = h.node.status()
    assert (s.chunks_received, s.chunks_lost, s.chunks_duplicated, s.chunks_reordered) == (2, 2, 0, 0)
    print(f"\nHOLD after the chunk was played: {played_out:.3f} s (2 actions x {h.period_s} s); "
          f"after its age passed max_action_age_s {max_age} s: {aged_out:.3f} s")


def test_duplicated_chunk_is_dropped_and_reordered_chunk_rejected_as_stale(split):
    h = split()
    h.ready()
    t_a = h.now()
    chunk_a = h.chunk(0, t_a)  # along x, 2 s long
    h.send(chunk_a)
    assert wait_for(lambda: h.moving(t_a), 2.0), h.node.core.last_error
    h.send(chunk_a)  # the same message again
    s = h.node.status()
    assert (s.chunks_received, s.chunks_duplicated, s.chunks_lost) == (2, 1, 0)
    assert _counter(h, "rejected_chunks") == 0, "the duplicate reached the control core"
    time.sleep(0.2)
    moving = [c for c in h.commands if not c.hold]
    assert moving and all(abs(seconds(c.source_stamp) - t_a) < 1e-6 for c in moving)
    assert h.node.status().chunk_switches == 0, "the duplicate took over"
    # Chunk 2 (along y) arrives before chunk 1 (along z, observation between chunks 0 and 2).
    t_c = h.now()
    t_b = 0.5 * (t_a + t_c)
    h.send(h.chunk(2, t_c, direction=(0.0, 1.0, 0.0)))
    assert h.node.status().chunks_lost == 1
    h.send(h.chunk(1, t_b, direction=(0.0, 0.0, 1.0)))
    s = h.node.status()
    assert (s.chunks_received, s.chunks_reordered, s.chunks_lost, s.chunks_duplicated) == (4, 1, 0, 1)
    assert _counter(h, "rejected_chunks_stale") == 1 and _counter(h, "rejected_chunks") == 1
    assert "not newer" in h.node.core.last_error
    assert wait_for(lambda: len(h.moving(t_c)) >= 15, 2.0)
    assert not h.moving(t_b), "the reordered (older) chunk was played"
    assert h.commands[-1].hold is False and abs(seconds(h.commands[-1].source_stamp) - t_c) < 1e-6
    assert h.node.status().chunk_switches == 1


def test_policy_killed_means_hold_within_max_age_and_a_new_policy_moves_again(split):
    max_age = 0.5
    params = {"safety.max_action_age_s": max_age}
    h = split(params)
    h.ready()
    # 10-action chunks (2 s), a new one every 0.2 s: only the age gate can stop the arm after the kill.
    policy_params = {**params, "control.replan_fraction": 0.1}
    policy = h.start_policy(SyntheticPolicy(latency_s=0.02, chunk_len=10), policy_params)
    h.say(INSTRUCTION)
    assert h.wait_commands(lambda c: not c.hold, 5.0) is not None, h.node.core.last_error
    assert wait_for(lambda: h.node.status().chunks_received >= 3, 3.0)
    killed, t_kill = len(h.commands), h.now()
    h.kill_policy(policy)
    hold = h.first(lambda c: c.hold and seconds(c.header.stamp) > t_kill, killed)
    assert hold is not None, "still moving after the policy was killed"
    to_hold = seconds(hold.header.stamp) - t_kill
    assert to_hold <= max_age + LATE_TOLERANCE_S, to_hold
    assert hold.interventions & STALE_ACTION, hold.intervention_names
    last_source = max(seconds(c.source_stamp) for c in h.commands if not c.hold)
    assert max_age - 0.005 <= seconds(hold.header.stamp) - last_source <= max_age + LATE_TOLERANCE_S
    time.sleep(0.3)
    after = [c for c in h.commands_since(killed) if seconds(c.header.stamp) >= seconds(hold.header.stamp)]
    assert len(after) >= 10 and all(c.hold for c in after), "moved again with no policy"
    before = h.node.status()
    # A new policy node (its sequence starts at 0 again): motion comes back.
    restarted, t_restart = len(h.commands), h.now()
    h.start_policy(SyntheticPolicy(latency_s=0.02, chunk_len=10), policy_params)
    t_active = h.now()
    h.say(INSTRUCTION)  # the new node subscribes now; the control node keeps the same instruction
    moving = h.first(lambda c: not c.hold and seconds(c.source_stamp) > t_restart, restarted, 5.0)
    assert moving is not None, h.node.core.last_error
    to_motion = seconds(moving.header.stamp) - t_active
    assert to_motion <= 2.0, to_motion
    s = h.node.status()
    assert s.chunks_received > before.chunks_received
    assert s.chunks_duplicated == 0, "the restarted policy's chunks were taken for duplicates"
    assert s.policy_restarts == 1
    print(f"\npolicy killed -> HOLD after {to_hold:.3f} s (max_action_age_s {max_age}); new policy node "
          f"active -> moving after {to_motion:.3f} s ({seconds(moving.header.stamp) - t_restart:.3f} s "
          "from its creation)")


def test_hung_policy_means_hold_within_max_age_and_its_late_chunk_is_rejected_as_old(split):
    max_age = 0.5
    params = {"safety.max_action_age_s": max_age}
    h = split(params)
    h.ready()
    policy = SyntheticPolicy(latency_s=0.02, chunk_len=10)
    h.start_policy(policy, {**params, "control.replan_fraction": 0.1})
    h.say(INSTRUCTION)
    assert h.wait_commands(lambda c: not c.hold, 5.0) is not None, h.node.core.last_error
    hung, t_hang = len(h.commands), h.now()
    policy.mode = "hang"  # the next call blocks until released (a stuck GPU, a deadlock)
    hold = h.first(lambda c: c.hold and seconds(c.header.stamp) > t_hang, hung)
    assert hold is not None, "still moving with the policy hung"
    to_hold = seconds(hold.header.stamp) - t_hang
    assert to_hold <= max_age + LATE_TOLERANCE_S, to_hold
    assert hold.interventions & STALE_ACTION, hold.intervention_names
    time.sleep(0.5)
    before = h.node.status()
    assert before.rejected_chunks_old == 0
    hung_stamp = policy.calls[-1][1]  # the observation of the call that hangs
    released = len(h.commands)
    policy.mode = "ok"
    policy.release()  # the hung call returns a chunk of an observation about 0.8 s old
    moving = h.first(lambda c: not c.hold, released, 3.0)
    assert moving is not None, h.node.core.last_error
    s = h.node.status()
    assert s.rejected_chunks_old == 1, "the hung call's chunk was not rejected as old"
    assert seconds(moving.source_stamp) > hung_stamp + 1e-6, "played the hung call's chunk"
    assert (s.chunks_lost, s.chunks_duplicated, s.chunks_reordered, s.policy_restarts) == (0, 0, 0, 0)
    print(f"\npolicy hung -> HOLD after {to_hold:.3f} s (max_action_age_s {max_age})")


def test_clock_offset_in_the_future_and_steadily_late_is_detected(split):
    h = split()  # safety.max_action_age_s 1.0, split.clock_tolerance_s 0.05
    h.ready()
    start = len(h.commands)
    h.send(h.chunk(0, h.now() + 2.0))
    s = h.node.status()
    assert s.rejected_chunks_future == 1 and s.clock_offset_s < -1.9, s.clock_offset_s
    warning = s.clock_warning
    assert "future" in warning and "chrony" in warning and "PTP" in warning, warning
    assert warning in s.last_error
    time.sleep(0.2)
    assert all(c.hold for c in h.commands_since(start)), "a chunk from the future moved the arm"
    # Chunks 1.5 s late (limit 1.0 s): each rejected as old; after 10 of them the clock is suspected.
    for sequence in range(1, 10):
        h.send(h.chunk(sequence, h.now() - 1.5))
    s = h.node.status()
    assert s.rejected_chunks_old == 9
    assert s.clock_warning == "", "warned before 10 late chunks (the future one is still in the window)"
    h.send(h.chunk(10, h.now() - 1.5))
    s = h.node.status()
    assert s.rejected_chunks_old == 10 and s.chunks_lost == 0
    warning = s.clock_warning
    assert "clock" in warning and "chrony" in warning and "PTP" in warning, warning
    assert 1.45 < s.clock_offset_s < 1.5 + 0.3, s.clock_offset_s
    assert wait_for(lambda: h.statuses and "chrony" in h.statuses[-1].clock_warning, 2.0), \
        "the published ~/status does not carry the warning"
    assert all(c.hold for c in h.commands_since(start))
    print(f"\nsteadily late: {warning!r}")


def test_wrong_period_wrong_instruction_and_malformed_chunks_are_rejected(split):
    h = split()
    h.ready()
    start = len(h.commands)
    h.send(h.chunk(0, h.now(), period_s=0.1))
    assert _counter(h, "rejected_chunks_invalid") == 1
    assert "control.action_period_s" in h.node.core.last_error
    h.send(h.chunk(1, h.now(), instruction="open the drawer"))
    assert _counter(h, "rejected_chunks_instruction") == 1
    assert "open the drawer" in h.node.core.last_error
    bad = h.chunk(2, h.now())
    bad.actions = list(bad.actions)[:-1]  # 69 values for 10 x 7
    h.send(bad, until=lambda: _counter(h, "rejected_chunks_invalid") == 2)
    assert "69 action values" in h.node.core.last_error
    assert _counter(h, "rejected_chunks") == 3
    ticking = len(h.commands)
    assert wait_for(lambda: len(h.commands) >= ticking + 10, 2.0), "the control loop stopped"
    assert all(c.hold for c in h.commands_since(start))
    good = h.now()
    h.send(h.chunk(3, good))
    assert wait_for(lambda: h.moving(good), 2.0), h.node.core.last_error
    assert h.node.status().chunks_received == 3  # the malformed one never reached the link


def test_malformed_chunk_is_named_in_status_last_error(split):
    h = split()
    h.ready()
    bad = h.chunk(0, h.now())
    bad.actions = list(bad.actions)[:-1]
    h.send(bad, until=lambda: _counter(h, "rejected_chunks_invalid") == 1)
    s = h.node.status()
    assert "69 action values" in s.last_error, f"VlaStatus.last_error is {s.last_error!r}"


def test_role_policy_publishes_numbered_chunks_stamped_with_their_observation(split):
    h = split()
    policy = SyntheticPolicy(latency_s=0.02, chunk_len=5)
    h.ready()
    h.start_policy(policy)
    h.say(INSTRUCTION)  # the policy node subscribes now
    assert wait_for(lambda: len(h.chunks) >= 4, 5.0), f"{len(h.chunks)} chunks published"
    received = list(h.chunks)
    assert [m.sequence for _, m in received] == list(range(len(received)))
    observed = [stamp for _, stamp in list(policy.calls)]
    direction = instruction_direction(INSTRUCTION) * policy.step_m
    for arrival, msg in received:
        stamp = seconds(msg.header.stamp)
        assert min(abs(stamp - o) for o in observed) < 1e-6, "header stamp is not an observation stamp"
        assert stamp <= arrival
        assert msg.instruction == INSTRUCTION
        assert (msg.chunk_length, msg.action_dim, len(msg.actions)) == (5, 7, 35)
        assert msg.action_period_s == pytest.approx(h.period_s)
        assert msg.inference_s >= 0.015
        assert "synthetic" in msg.model
        actions = np.asarray(msg.actions).reshape(5, 7)
        np.testing.assert_allclose(actions[:, :3], np.tile(direction, (5, 1)))
    # the control half plays them
    assert h.wait_commands(lambda c: not c.hold, 3.0) is not None, h.node.core.last_error


def test_role_both_also_publishes_its_chunks():
    h = NodeHarness(SyntheticPolicy(latency_s=0.02, chunk_len=5), dict(BASE))
    try:
        assert h.node.config.split.role == "both"
        chunks: list[ActionChunkMsg] = []
        h.probe.create_subscription(ActionChunkMsg, h.node.config.split.chunk_topic, chunks.append,
                                    reliable_qos(100))
        assert wait_for(lambda: h.node._chunk_pub.get_subscription_count() > 0, 5.0)
        h.start_camera(30)
        assert h.arm().success
        h.say(INSTRUCTION)
        assert wait_for(lambda: len(chunks) >= 3, 5.0), f"{len(chunks)} chunks published"
        got = list(chunks)
        assert [m.sequence for m in got] == list(range(len(got)))
        assert all(m.instruction == INSTRUCTION and m.chunk_length == 5 and len(m.actions) == 35 for m in got)
        cmd = h.wait_commands(lambda c: not c.hold, 3.0)
        assert cmd is not None, h.node.last_error
        source = seconds(cmd.source_stamp)
        assert min(abs(seconds(m.header.stamp) - source) for m in list(chunks)) < 1e-6
    finally:
        h.node.policy.release()
        h.close()
