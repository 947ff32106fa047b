"""Chunk execution: alignment to the observation, late chunks, the combining rules, exact sums under every
rule, the inference trigger and the command jump at chunk switches."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.control.chunks import (
    PLAIN,
    RULES,
    ChunkSettings,
    chain_weights,
    chunk_settings,
    describe,
    fade,
)
from vla_ros.control.core import ControlCore
from vla_ros.control.scheduler import ActionScheduler, ScheduledStep
from vla_ros.control.switches import SwitchMonitor
from vla_ros.core.config import ControlConfig, NodeConfig
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.schema import ConfigError, apply_overrides
from vla_ros.core.types import ActionChunk

P = 0.05  # action period [s]
TICK = 0.02


def chunk(stamp: float, n: int = 8, seed: int = 0, value: float | None = None, gripper: float = 1.0
          ) -> ActionChunk:
    """Random deltas (or a constant `value` on every axis) and a constant gripper."""
    actions = np.random.default_rng(seed).uniform(-0.01, 0.01, size=(n, 7))
    if value is not None:
        actions[:, :6] = value
    actions[:, 6] = gripper
    return ActionChunk(actions, stamp, "pick")


def vec(step: ScheduledStep) -> np.ndarray:
    return np.concatenate([step.translation, step.rotation])


def scheduler(rule: str = "crossfade", alignment: str = "auto", **kw) -> ActionScheduler:
    settings = ChunkSettings(rule=rule, alignment=alignment, **kw)
    return ActionScheduler(P, max_tick_gap_s=1.0, settings=settings)


# ----- settings ---------------------------------------------------------------------------------------
def test_settings_defaults_match_the_parameters_and_bad_values_are_refused():
    assert chunk_settings(ControlConfig()) == ChunkSettings()
    custom = replace(ControlConfig(), chunk_rule="ensemble", chunk_alignment="arrival", ensemble_decay=0.5)
    assert chunk_settings(custom) == ChunkSettings(rule="ensemble", alignment="arrival", ensemble_decay=0.5)
    assert "faster than one action period" in describe(ChunkSettings(rule="ensemble"))
    assert "crossfade over 0.1 s" in describe(ChunkSettings())
    for bad in ({"rule": "average"}, {"alignment": "stamp"}, {"crossfade_s": -0.1},
                {"blend_weight": 1.5}, {"replan_fraction": math.nan}, {"ensemble_decay": True}):
        with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
            ChunkSettings(**bad)
    s = ChunkSettings()
    assert s.rule_for(1) == "replace" and s.rule_for(8) == "crossfade"
    assert s.aligns_to_observation(8) and not s.aligns_to_observation(1)
    assert not PLAIN.aligns_to_observation(8)


def test_node_config_accepts_the_chunk_parameters():
    cfg = apply_overrides(NodeConfig(), {"control.chunk_rule": "blend", "control.blend_weight": 0.25,
                                         "control.replan_fraction": 0.0})
    assert chunk_settings(cfg.control).blend_weight == 0.25
    with pytest.raises(ConfigError, match="chunk_rule"):
        apply_overrides(NodeConfig(), {"control.chunk_rule": "mean"})
    with pytest.raises(ConfigError, match="replan_fraction"):
        apply_overrides(NodeConfig(), {"control.replan_fraction": 1.5})


@pytest.mark.parametrize("rule", RULES)
def test_chain_weights_sum_to_one(rule):
    s = ChunkSettings(rule=rule, ensemble_decay=0.3, blend_weight=0.3)
    since = [0.0, 0.04, 0.07, 0.2]
    for t in np.linspace(0.2, 0.5, 31):
        w = chain_weights(s, rule, since, float(t))
        assert len(w) == 4 and sum(w) == pytest.approx(1.0) and min(w) >= 0.0


def test_chain_weights_of_each_rule():
    s = ChunkSettings(crossfade_s=0.1, blend_weight=0.3, ensemble_decay=0.5)
    assert chain_weights(s, "crossfade", [0.0, 1.0], 1.0) == [1.0, 0.0]
    assert chain_weights(s, "crossfade", [0.0, 1.0], 1.05) == pytest.approx([0.5, 0.5])
    assert chain_weights(s, "crossfade", [0.0, 1.0], 1.2) == [0.0, 1.0]
    assert chain_weights(s, "blend", [0.0, 1.0, 2.0], 3.0) == pytest.approx([0.49, 0.21, 0.3])
    e = np.exp(-0.5 * np.arange(3))
    assert chain_weights(s, "ensemble", [0.0, 1.0, 2.0], 3.0) == pytest.approx(list(e / e.sum()))
    assert chain_weights(s, "replace", [0.0, 1.0], 3.0) == [0.0, 1.0]


# ----- alignment, dropped and late actions ------------------------------------------------------------
@pytest.mark.parametrize("base", [0.0, 1.7e9])
def test_chunk_is_played_from_its_observation_and_the_passed_actions_are_dropped(base):
    sched = scheduler()
    c = chunk(base, n=8, seed=1)
    sched.next(base + 0.1)
    assert sched.push(c, base + 0.12)  # 0.12 s after the observation: actions 0 and 1 have passed
    arrival = sched.last_arrival
    assert arrival.skipped == 2 and arrival.delay_s == pytest.approx(0.12) and not arrival.late
    assert sched.remaining == 5  # action 2 has started
    total = np.zeros(6)
    for t in base + 0.12 + np.arange(1, 40) * TICK:
        step = sched.next(t)
        if step is not None:
            total += vec(step)
    delay = (base + 0.12) - base  # 0.12 as the clock can hold it
    expected = c.actions[2, :6] * (0.15 - delay) / P + c.actions[3:, :6].sum(axis=0)
    np.testing.assert_allclose(total, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("base", [0.0, 1.7e9, 1_765_000_000.123])
def test_an_action_ending_exactly_on_arrival_counts_as_passed_at_epoch_stamps(base):
    """0.1 s late with 0.05 s actions drops 2, also where the clock difference loses ~1e-7 s."""
    sched = scheduler()
    sched.next(base + 0.1)
    assert sched.push(chunk(base, n=8), base + 0.1)
    assert sched.last_arrival.skipped == 2


def test_chunk_whose_actions_all_passed_is_late_and_rejected():
    sched = scheduler()
    sched.next(10.0)
    assert not sched.push(chunk(9.5, n=8), 10.0)  # 8 * 0.05 = 0.4 s < 0.5 s of delay
    assert sched.last_arrival.late and sched.last_arrival.skipped == 8
    assert sched.next(10.02) is None
    assert sched.push(chunk(9.63, n=8), 10.02) and sched.last_arrival.skipped == 7


def test_auto_plays_one_action_chunks_from_their_arrival():
    sched = scheduler()
    assert sched.push(chunk(0.0, n=1), 5.0)  # 5 s old: late if it were aligned to its observation
    assert sched.last_arrival.skipped == 0
    step = sched.next(5.02)
    assert step is not None and step.source_stamp == 0.0
    obs = scheduler(alignment="observation")
    assert not obs.push(chunk(0.0, n=1), 5.0) and obs.last_arrival.late


def test_arrival_alignment_and_stamps_from_the_future_start_at_arrival():
    for sched, stamp in ((scheduler(alignment="arrival"), 0.0), (scheduler(), 7.0)):
        c = chunk(stamp, n=4, seed=2)
        assert sched.push(c, 5.0) and sched.last_arrival.skipped == 0
        total = sum(vec(s) for t in 5.0 + np.arange(1, 20) * TICK if (s := sched.next(t)) is not None)
        np.testing.assert_allclose(total, c.actions[:, :6].sum(axis=0), atol=1e-12)


# ----- the rules --------------------------------------------------------------------------------------
def test_crossfade_integrates_exactly_and_switches_the_gripper_half_way():
    sched = scheduler(crossfade_s=0.1)
    assert sched.push(chunk(0.0, n=20, value=0.01, gripper=1.0), 0.0)
    sched.next(0.2)
    assert sched.push(chunk(0.2, n=20, value=0.03, gripper=0.0), 0.2)
    s1 = sched.next(0.25)  # half way through the fade
    s2 = sched.next(0.3)  # fade done
    s3 = sched.next(0.35)
    # value ramps 0.01 -> 0.03 over [0.2, 0.3]: mean 0.015 over the first half, 0.025 over the second
    np.testing.assert_allclose(vec(s1), 0.015 * 0.05 / P)
    np.testing.assert_allclose(vec(s2), 0.025 * 0.05 / P)
    np.testing.assert_allclose(vec(s3), 0.03)
    assert s1.source_stamp == 0.2 and s2.gripper == 0.0
    early = scheduler(crossfade_s=0.1)
    early.push(chunk(0.0, n=20, gripper=1.0), 0.0)
    early.push(chunk(0.2, n=20, gripper=0.0), 0.2)
    assert early.next(0.24).gripper == 1.0 and early.next(0.26).gripper == 0.0


def test_crossfade_holds_an_old_chunk_that_ends_during_the_fade_but_not_one_that_ended_before():
    held = scheduler(crossfade_s=0.1)
    held.push(chunk(0.0, n=4, value=0.01), 0.0)  # ends at 0.2
    held.next(0.18)
    held.push(chunk(0.18, n=20, value=0.03), 0.18)  # fade over [0.18, 0.28)
    held.next(0.2)
    # (0.2, 0.25]: the old chunk's last action held, weight 1 - lambda with lambda 0.2 .. 0.7
    np.testing.assert_allclose(vec(held.next(0.25)), 0.55 * 0.01 + 0.45 * 0.03)
    ended = scheduler(crossfade_s=0.1)
    ended.push(chunk(0.0, n=4, value=0.01), 0.0)
    ended.next(0.19)
    ended.push(chunk(0.21, n=20, value=0.03), 0.21)  # the old one ended at 0.2: nothing to fade from
    np.testing.assert_allclose(vec(ended.next(0.25)), 0.01 * 0.01 / P + 0.03 * 0.04 / P)


def test_blend_weighs_the_overlap():
    sched = scheduler("blend", blend_weight=0.25)
    sched.push(chunk(0.0, n=6, value=0.01, gripper=1.0), 0.0)  # covers [0, 0.3)
    sched.next(0.1)
    sched.push(chunk(0.1, n=6, value=0.05, gripper=0.0), 0.1)  # covers [0.1, 0.4)
    s = sched.next(0.2)
    np.testing.assert_allclose(vec(s), (0.25 * 0.05 + 0.75 * 0.01) * 0.1 / P)
    assert s.gripper == pytest.approx(0.75)
    s = sched.next(0.35)  # (0.2, 0.3] blended, (0.3, 0.35] the new chunk alone
    np.testing.assert_allclose(vec(s), 0.02 * 0.1 / P + 0.05 * 0.05 / P)
    assert s.gripper == 0.0


def test_ensemble_weighs_the_oldest_prediction_most():
    m = 1.0
    sched = scheduler("ensemble", ensemble_decay=m)
    for i, value in enumerate((0.01, 0.02, 0.04)):
        sched.next(0.02 * i)
        sched.push(chunk(0.02 * i, n=10, value=value), 0.02 * i)
    s = sched.next(0.06)  # all three cover (0.04, 0.06]
    w = np.exp(-m * np.arange(3))
    np.testing.assert_allclose(vec(s), (w @ [0.01, 0.02, 0.04]) / w.sum() * 0.02 / P)
    assert vec(s)[0] < np.mean([0.01, 0.02, 0.04]) * 0.02 / P  # the oldest (smallest) dominates


def tick_times(start: float, end: float, jitter: list[float], tick: float) -> np.ndarray:
    """Ticks from `start` to `end`, spaced by the jitter factors (repeated) times `tick`."""
    spacing = np.resize(np.asarray(jitter) * tick, int((end - start) / (min(jitter) * tick)) + 1)
    times = start + np.cumsum(spacing)
    return np.append(times[times < end], end)


def play(sched: ActionScheduler, pushes: list[tuple[float, ActionChunk]], ticks: np.ndarray) -> np.ndarray:
    """Total deltas over `ticks`, each chunk pushed at its time (between the ticks around it)."""
    total, pending = np.zeros(6), list(pushes)
    for t in ticks:
        while pending and pending[0][0] <= t:
            at, c = pending.pop(0)
            sched.push(c, at)
        step = sched.next(t)
        if step is not None:
            total += vec(step)
    return total


@settings(max_examples=60, deadline=None)
@given(rule=st.sampled_from(RULES), base=st.sampled_from([0.0, 1.7e9]),
       gaps=st.lists(st.floats(0.005, 0.3), min_size=1, max_size=8),
       delays=st.lists(st.floats(0.0, 0.3), min_size=8, max_size=8), n=st.integers(2, 8),
       jitter=st.lists(st.floats(0.05, 1.9), min_size=5, max_size=300))
def test_property_every_rule_hands_out_the_same_total_on_any_tick_grid(rule, base, gaps, delays, n, jitter):
    """The windows tile time: jittered ticks and a fine regular grid hand out the same motion."""
    arrivals = base + 0.01 + np.cumsum(gaps)
    pushes = [(float(at), chunk(float(at) - d, n=n, seed=i))
              for i, (at, d) in enumerate(zip(arrivals, delays))]
    end = float(arrivals[-1]) + n * P + 0.05
    s = ChunkSettings(rule=rule, crossfade_s=0.08, blend_weight=0.3, ensemble_decay=0.2)
    coarse = play(ActionScheduler(P, 1.0, s), pushes, tick_times(base, end, jitter, 0.013))
    fine = play(ActionScheduler(P, 1.0, s), pushes, tick_times(base, end, [1.0], 0.0011))
    np.testing.assert_allclose(coarse, fine, rtol=0, atol=1e-9 if base else 1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_stall_hands_out_only_the_last_gap(rule):
    sched = ActionScheduler(P, max_tick_gap_s=0.04, settings=ChunkSettings(rule=rule))
    sched.push(chunk(0.0, n=40, value=0.01), 0.0)
    sched.next(0.02)
    sched.push(chunk(0.02, n=40, value=0.02), 0.02)
    step = sched.next(0.02 + 1.0)  # the loop stalled for 1 s
    assert np.all(np.abs(vec(step)) <= 0.02 * 0.04 / P + 1e-12)


def test_one_action_chunks_play_as_before_under_every_rule():
    """Autoregressive models: whatever the rule, exactly the plain scheduler's output."""
    rng = np.random.default_rng(3)
    events = [(float(t), rng.random() < 0.3) for t in np.cumsum(rng.uniform(0.001, 0.07, size=400))]
    for rule in RULES:
        outputs = []
        for s in (PLAIN, ChunkSettings(rule=rule)):
            sched, out = ActionScheduler(0.2, 0.05, s), []
            for i, (t, push) in enumerate(events):
                if push:
                    sched.push(chunk(t - 0.3, n=1, seed=i), t)
                else:
                    step = sched.next(t)
                    out.append(None if step is None else (vec(step).tobytes(), step.gripper))
            outputs.append(out)
        assert outputs[0] == outputs[1]


# ----- the inference trigger --------------------------------------------------------------------------
def test_wants_chunk_after_the_replan_fraction():
    sched = scheduler(replan_fraction=0.5)
    assert sched.wants_chunk(0.0)  # nothing in force
    sched.push(chunk(1.0, n=8), 1.05)  # 0.4 s long, from 1.0
    assert not sched.wants_chunk(1.1) and not sched.wants_chunk(1.199)
    assert sched.wants_chunk(1.201) and sched.wants_chunk(2.0)
    one = scheduler()
    one.push(chunk(1.0, n=1), 1.0)
    assert one.wants_chunk(1.0)  # autoregressive: every time
    eager = scheduler(replan_fraction=0.0)
    eager.push(chunk(1.0, n=8), 1.0)
    assert eager.wants_chunk(1.0)


def test_core_wants_inference_follows_its_settings():
    core = ControlCore(SafetyLimits(), TICK, P, chunking=ChunkSettings(replan_fraction=0.75))
    core.set_armed(True)
    core.on_instruction("pick", 0.0)
    assert core.wants_inference(0.0)
    assert core.on_chunk(chunk(0.0, n=8), 0.1)
    assert not core.wants_inference(0.29) and core.wants_inference(0.301)


# ----- switches and their jumps -----------------------------------------------------------------------
def test_switch_monitor_compares_the_ticks_around_the_takeover():
    m = SwitchMonitor()

    def step(v):
        return ScheduledStep(np.array([v, 0.0, 0.0]) * 0.01, np.zeros(3), 1.0, 0.0)

    m.observe(0.00, step(0.1))
    m.observe(0.01, step(0.1))
    m.on_switch(0.015)  # between two ticks
    assert m.observe(0.02, step(0.2)) is None  # spans the takeover: half old, half new
    assert m.observe(0.03, step(0.3)) == pytest.approx(0.2)  # 0.1 before, 0.3 after
    m.on_switch(0.03)  # at a tick
    assert m.observe(0.05, step(0.2)) == pytest.approx(0.2)  # 0.3 -> 0.1 per second (2 ticks long)
    m.on_switch(0.05)
    assert m.observe(0.06, None) is None  # HOLD: unmeasured
    assert m.observe(0.07, step(0.9)) is None
    assert (m.switches, m.jump_last, m.jump_max) == (2, pytest.approx(0.2), pytest.approx(0.2))


def run_switch(rule: str) -> ControlCore:
    limits = replace(SafetyLimits(), max_linear_acceleration_mps2=9.0, max_angular_acceleration_radps2=17.0)
    core = ControlCore(limits, TICK, P, chunking=ChunkSettings(rule=rule, crossfade_s=0.1))
    core.set_armed(True)
    core.on_instruction("pick", 0.0)
    for k in range(1, 40):
        t = k * TICK
        core.on_image(t)
        if k == 1:
            assert core.on_chunk(chunk(t, n=20, value=0.001), t)
        if k == 15:
            assert core.on_chunk(chunk(t - 0.06, n=20, value=0.004), t)  # 1 action passed
        core.tick(t)
    return core


def test_crossfade_cuts_the_jump_of_a_plain_replacement():
    plain, fade = run_switch("replace").chunk_report, run_switch("crossfade").chunk_report
    assert plain.switches == fade.switches == 1
    assert plain.jump_max == pytest.approx((0.004 - 0.001) / P)
    assert fade.jump_max < plain.jump_max * (TICK / 0.1 + 1e-9)
    assert plain.delay_last_s == pytest.approx(0.06) and plain.skipped_last == 1
    assert run_switch("replace").counters["dropped_actions"] == 1


def test_late_chunk_is_counted_in_the_core():
    core = ControlCore(SafetyLimits(), TICK, P)
    core.set_armed(True)
    core.on_instruction("pick", 0.0)
    assert not core.on_chunk(chunk(0.0, n=8), 0.5)
    c = core.counters
    assert c["rejected_chunks_late"] == 1 and c["rejected_chunks"] == 1 and c["dropped_actions"] == 0
    assert "after all its 8 actions had passed" in core.last_error and "0.500 s ago" in core.last_error
    assert core.chunk_report.delay_last_s == -1.0  # only accepted chunks


def test_fade_is_a_step_without_a_duration():
    assert fade(0.0, -1.0) == 0.0 and fade(0.0, 0.0) == 1.0
    assert fade(0.2, 0.05) == pytest.approx(0.25) and fade(0.2, -0.1) == 0.0 and fade(0.2, 0.3) == 1.0
