"""The safety filter: one test per rule, then hypothesis properties over arbitrary input sequences."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_ros.control.safety import (
    GATE_BITS,
    STALL_TICKS,
    Command,
    FilterInputs,
    FilterState,
    Intervention,
    apply_filter,
    braking_step,
    intervention_names,
)
from vla_ros.control.scheduler import ScheduledStep
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.types import Pose

I = Intervention  # noqa: E741
DT = 0.01
MSG = Path(__file__).resolve().parents[2] / "msg" / "EndEffectorCommand.msg"

# Limits where only the rule under test binds: everything else is wide open.
OPEN = SafetyLimits(max_translation_step_m=0.5, max_rotation_step_rad=1.0, max_linear_velocity_mps=3.0,
                    max_angular_velocity_radps=2.5, max_linear_acceleration_mps2=9.0,
                    max_angular_acceleration_radps2=17.0, workspace_min_m=[-10.0, -10.0, -10.0],
                    workspace_max_m=[10.0, 10.0, 10.0], max_gripper_speed_per_s=1000.0)


def step(t=(0.0, 0.0, 0.0), r=(0.0, 0.0, 0.0), gripper=1.0, source=0.0) -> ScheduledStep:
    return ScheduledStep(np.array(t, dtype=float), np.array(r, dtype=float), gripper, source)


def inputs(**kw) -> FilterInputs:
    base = dict(armed=True, estopped=False, fault=False, image_stamp=0.0, instruction_active=True, pose=None)
    base.update(kw)
    return FilterInputs(**base)


def pose(x=0.0, y=0.0, z=0.5, stamp=0.0) -> Pose:
    return Pose(np.array([x, y, z]), np.array([0.0, 0.0, 0.0, 1.0]), stamp)


def moving_state(v=(0.0, 0.0, 0.0), w=(0.0, 0.0, 0.0), gripper=1.0, stamp=-DT) -> FilterState:
    return FilterState(stamp, np.array(v, dtype=float), np.array(w, dtype=float), gripper)


def run(s, state=None, inp=None, limits=OPEN, now=0.0, dt=DT) -> Command:
    return apply_filter(s, state or FilterState.initial(), inp or inputs(), limits, dt, now)[0]


def assert_hold(cmd: Command, bit: int, gripper: float = 1.0) -> None:
    assert cmd.hold
    assert cmd.interventions == bit, intervention_names(cmd.interventions)
    assert np.all(cmd.translation == 0.0) and np.all(cmd.rotation == 0.0)
    assert cmd.gripper == gripper
    assert cmd.source_stamp is None


# ----- the message contract --------------------------------------------------------------------
def test_intervention_values_equal_the_message_constants():
    constants = dict(re.findall(r"^uint32\s+([A-Z_]+)\s*=\s*(\d+)", MSG.read_text(), re.MULTILINE))
    assert constants, "no constants parsed from EndEffectorCommand.msg"
    assert {name: int(v) for name, v in constants.items()} == {f.name: int(f) for f in Intervention}


def test_intervention_names_in_bit_order_and_unknown_bits():
    assert intervention_names(0) == []
    assert intervention_names(I.ESTOP | I.NON_FINITE) == ["NON_FINITE", "ESTOP"]
    assert intervention_names(int(I.FAULT) | (1 << 20)) == ["FAULT", "UNKNOWN_0x100000"]


# ----- gates -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    dict(s=step(t=(math.nan, 0, 0))),
    dict(s=step(r=(0, math.inf, 0))),
    dict(s=step(gripper=math.nan)),
    dict(s=step(source=math.inf)),
    dict(s=ScheduledStep(np.zeros(2), np.zeros(3), 1.0, 0.0)),  # malformed shape
    dict(inp=inputs(pose=pose(x=math.nan))),
    dict(inp=inputs(pose=Pose(np.zeros(3), np.array([0, 0, math.nan, 1.0]), 0.0))),
    dict(inp=inputs(image_stamp=math.nan)),
    dict(now=math.nan),
])
def test_non_finite_anywhere_holds(bad):
    s = bad.get("s", step(t=(0.001, 0, 0)))
    cmd = run(s, inp=bad.get("inp"), now=bad.get("now", 0.0))
    assert_hold(cmd, I.NON_FINITE)
    assert math.isfinite(cmd.stamp)


def test_non_finite_tick_period_holds():
    assert_hold(run(step(t=(0.001, 0, 0)), dt=math.inf), I.NON_FINITE)
    assert_hold(run(step(t=(0.001, 0, 0)), dt=0.0), I.NON_FINITE)


@pytest.mark.parametrize("kw, bit", [
    (dict(estopped=True), I.ESTOP),
    (dict(fault=True), I.FAULT),
    (dict(armed=False), I.DISARMED),
    (dict(image_stamp=None), I.STALE_IMAGE),
    (dict(image_stamp=-0.6), I.STALE_IMAGE),  # max_image_age_s 0.5
    (dict(image_stamp=+0.6), I.STALE_IMAGE),  # from the future: clocks disagree
    (dict(instruction_active=False), I.NO_INSTRUCTION),
])
def test_each_gate_holds_with_its_bit(kw, bit):
    assert_hold(run(step(t=(0.001, 0, 0)), inp=inputs(**kw)), bit)


def test_gates_also_flag_when_there_is_no_step():
    assert_hold(run(None, inp=inputs(estopped=True)), I.ESTOP)
    assert_hold(run(None, inp=inputs(image_stamp=None)), I.STALE_IMAGE)
    assert_hold(run(None), 0)  # nothing to play: HOLD, but no rule changed anything


def test_fresh_image_passes_the_watchdog():
    cmd = run(step(t=(0.0005, 0, 0)), inp=inputs(image_stamp=-0.49))
    assert not cmd.hold and cmd.interventions == 0


def test_action_watchdog():
    assert_hold(run(step(t=(0.0005, 0, 0), source=-1.01)), I.STALE_ACTION)
    assert run(step(t=(0.0005, 0, 0), source=-0.99)).interventions == 0


def test_pose_required():
    limits = replace(OPEN, require_pose=True)
    s = step(t=(0.0005, 0, 0))
    assert_hold(run(s, limits=limits), I.STALE_POSE)
    assert_hold(run(s, inp=inputs(pose=pose(stamp=-0.6)), limits=limits), I.STALE_POSE)
    assert not run(s, inp=inputs(pose=pose(stamp=-0.4)), limits=limits).hold


def test_gate_order_first_match_wins():
    everything_closed = inputs(armed=False, estopped=True, fault=True, image_stamp=None,
                               instruction_active=False)
    assert_hold(run(step(t=(math.nan, 0, 0)), inp=everything_closed), I.NON_FINITE)
    assert_hold(run(step(), inp=everything_closed), I.ESTOP)
    assert_hold(run(step(), inp=replace(everything_closed, estopped=False)), I.FAULT)
    assert_hold(run(step(), inp=replace(everything_closed, estopped=False, fault=False)), I.DISARMED)


def test_hold_keeps_the_gripper_and_stops_at_once():
    state = moving_state(v=(0.25, 0, 0), w=(0.5, 0, 0), gripper=0.3)
    cmd, new = apply_filter(step(t=(0.0025, 0, 0)), state, inputs(armed=False), OPEN, DT, 0.0)
    assert_hold(cmd, I.DISARMED, gripper=0.3)  # stopping is allowed: no acceleration bit
    assert np.all(new.linear_velocity == 0) and np.all(new.angular_velocity == 0) and new.gripper == 0.3


# ----- motion limits -----------------------------------------------------------------------------
def test_translation_step_scales_the_vector_keeping_direction():
    limits = replace(OPEN, max_translation_step_m=0.01)
    cmd = run(step(t=(0.03, 0.04, 0.0)), limits=limits, dt=1.0)
    assert cmd.interventions == I.TRANSLATION_STEP
    np.testing.assert_allclose(cmd.translation, [0.006, 0.008, 0.0])  # not clipped per axis


def test_rotation_step_scales_the_vector():
    limits = replace(OPEN, max_rotation_step_rad=0.1)
    cmd = run(step(r=(0.0, -0.3, 0.4)), limits=limits, dt=1.0)
    assert cmd.interventions == I.ROTATION_STEP
    np.testing.assert_allclose(cmd.rotation, [0.0, -0.06, 0.08])


def test_linear_velocity_over_the_nominal_tick():
    limits = replace(OPEN, max_linear_velocity_mps=0.25)
    state = moving_state(v=(0.25 * 0.5 ** 0.5, 0.25 * 0.5 ** 0.5, 0))  # already at 0.25 m/s
    cmd = run(step(t=(0.01, 0.01, 0.0)), state=state, limits=limits)  # wants 1.4 m/s diagonally
    assert cmd.interventions == I.LINEAR_VELOCITY
    assert np.linalg.norm(cmd.translation) == pytest.approx(0.25 * DT)
    np.testing.assert_allclose(cmd.translation / np.linalg.norm(cmd.translation), [0.5 ** 0.5] * 2 + [0])


def test_angular_velocity_over_the_nominal_tick():
    limits = replace(OPEN, max_angular_velocity_radps=0.5)
    cmd = run(step(r=(0.02, 0, 0)), state=moving_state(w=(0.5, 0, 0)), limits=limits)
    assert cmd.interventions == I.ANGULAR_VELOCITY
    np.testing.assert_allclose(cmd.rotation, [0.005, 0, 0])


def test_linear_acceleration_ramps_up_and_limits_slowing_down():
    limits = replace(OPEN, max_linear_acceleration_mps2=1.0)
    state = FilterState.initial()
    speeds = []
    for k in range(30):
        cmd, state = apply_filter(step(t=(0.0025, 0, 0)), state, inputs(), limits, DT, k * DT)
        speeds.append(cmd.translation[0] / DT)
    np.testing.assert_allclose(np.diff([0.0] + speeds)[:25], 0.01)  # +a*dt per tick
    assert speeds[-1] == pytest.approx(0.25)
    cmd, state = apply_filter(step(t=(-0.0025, 0, 0)), state, inputs(), limits, DT, 30 * DT)  # reverse
    assert cmd.interventions == I.LINEAR_ACCELERATION
    assert cmd.translation[0] / DT == pytest.approx(0.24)


def test_angular_acceleration():
    limits = replace(OPEN, max_angular_acceleration_radps2=4.0)
    cmd = run(step(r=(0, 0, 0.008)), limits=limits)
    assert cmd.interventions == I.ANGULAR_ACCELERATION
    np.testing.assert_allclose(cmd.rotation, [0, 0, 4.0 * DT * DT])


def test_stall_resets_the_velocity_and_uses_the_nominal_tick():
    limits = replace(OPEN, max_linear_acceleration_mps2=1.0, max_linear_velocity_mps=0.25)
    state = moving_state(v=(0.25, 0, 0), stamp=0.0)
    late = (STALL_TICKS + 1) * DT  # the loop stalled
    cmd = run(step(t=(0.5, 0, 0)), state=state, limits=limits, now=late)
    assert cmd.translation[0] == pytest.approx(1.0 * DT * DT)  # ramps from rest, not from 0.25 m/s
    on_time = run(step(t=(0.5, 0, 0)), state=state, limits=limits, now=DT)
    assert on_time.translation[0] == pytest.approx(0.25 * DT)  # never more than v_max * nominal tick
    backwards = run(step(t=(0.5, 0, 0), source=-1.0), state=state, inp=inputs(image_stamp=-1.0),
                    limits=limits, now=-1.0)
    assert backwards.translation[0] == pytest.approx(1.0 * DT * DT)


# ----- workspace ---------------------------------------------------------------------------------
BOX = replace(OPEN, workspace_min_m=[-0.5, -0.5, 0.0], workspace_max_m=[0.5, 0.5, 1.0])


def test_workspace_cut_at_the_wall_slides_along_it():
    state = moving_state(v=(0.2, 0.1, -1.0))
    cmd = run(step(t=(0.002, 0.001, -0.01)), state=state, inp=inputs(pose=pose(z=0.004)), limits=BOX)
    assert cmd.interventions == I.WORKSPACE
    assert 0.0 <= 0.004 + cmd.translation[2] <= 0.004  # not below the floor, still moving down
    np.testing.assert_allclose(cmd.translation[:2], [0.002, 0.001])  # free axes untouched


def test_workspace_blocks_leaving_and_allows_returning_when_outside():
    out = inputs(pose=pose(x=0.6))
    cmd = run(step(t=(0.0005, 0.0005, 0)), inp=out, limits=BOX)
    assert cmd.interventions == I.WORKSPACE and cmd.translation[0] == 0.0 and cmd.translation[1] == 0.0005
    back = run(step(t=(-0.0005, 0, 0)), inp=out, limits=BOX)
    assert back.interventions == 0 and back.translation[0] == -0.0005


def test_workspace_not_enforced_without_a_fresh_pose():
    far_outside = run(step(t=(0.0005, 0, 0)), inp=inputs(pose=pose(x=0.6, stamp=-0.6)), limits=BOX)
    assert far_outside.interventions == 0  # pose too old: unknown (require_pose makes this a HOLD)


def test_workspace_accounts_for_motion_since_the_pose():
    state = moving_state(v=(0.25, 0, 0))
    fresh = run(step(t=(0.0025, 0, 0)), state=state, inp=inputs(pose=pose(x=0.49)), limits=BOX)
    older = run(step(t=(0.0025, 0, 0)), state=state, inp=inputs(pose=pose(x=0.49, stamp=-0.03)),
                limits=BOX)
    assert older.translation[0] < fresh.translation[0]  # 0.25 m/s * 30 ms already travelled


def test_braking_step_solves_the_stopping_condition():
    for d, a, dt in [(0.1, 1.0, 0.01), (1e-6, 1.0, 0.01), (2.0, 9.0, 0.001), (0.3, 0.5, 0.2)]:
        s = braking_step(d, a, dt)
        assert 0.0 < s <= d
        assert s * s / (2 * a * dt * dt) + s == pytest.approx(d, rel=1e-9)
    assert braking_step(0.0, 1.0, 0.01) == 0.0 and braking_step(-1.0, 1.0, 0.01) == 0.0
    assert braking_step(0.1, 0.0, 0.01) == 0.0


def test_approaching_a_wall_decelerates_within_the_limit_and_stops_inside():
    """Full speed at the wall, the pose following the commands: a smooth stop, never outside."""
    limits = replace(BOX, max_linear_velocity_mps=0.25, max_linear_acceleration_mps2=1.0)
    state, x, speeds = FilterState.initial(), 0.3, [0.0]
    for k in range(400):
        now = k * DT
        cmd, state = apply_filter(step(t=(0.01, 0, 0), source=now), state,
                                  inputs(pose=pose(x=x, stamp=now), image_stamp=now), limits, DT, now)
        x += cmd.translation[0]
        assert x <= 0.5 + 1e-12
        speeds.append(cmd.translation[0] / DT)
    assert max(speeds) == pytest.approx(0.25)
    assert np.max(np.abs(np.diff(speeds))) <= 1.0 * DT + 1e-9  # never a jump, even at the wall
    assert x > 0.5 - 1e-3  # and it gets there


# ----- gripper ---------------------------------------------------------------------------------------
def test_gripper_range():
    limits = replace(OPEN, gripper_min=0.1, gripper_max=0.9)
    assert run(step(gripper=1.0), state=moving_state(gripper=0.9), limits=limits).gripper == 0.9
    cmd = run(step(gripper=-5.0), state=moving_state(gripper=0.1), limits=limits)
    assert cmd.gripper == 0.1 and cmd.interventions == I.GRIPPER_RANGE


def test_gripper_slew():
    limits = replace(OPEN, max_gripper_speed_per_s=2.0)
    cmd = run(step(gripper=0.0), state=moving_state(gripper=1.0), limits=limits)
    assert cmd.interventions == I.GRIPPER_SLEW and cmd.gripper == pytest.approx(1.0 - 2.0 * DT)


def test_hold_clips_a_gripper_outside_a_narrowed_range():
    limits = replace(OPEN, gripper_max=0.8)
    cmd = run(None, state=moving_state(gripper=1.0), inp=inputs(armed=False), limits=limits)
    assert cmd.hold and cmd.gripper == 0.8 and cmd.interventions == I.DISARMED | I.GRIPPER_RANGE


def test_clean_command_passes_unchanged():
    cmd = run(step(t=(0.001, -0.001, 0.0005), r=(0.001, 0, 0), gripper=0.99, source=-0.2),
              state=moving_state(v=(0.1, -0.1, 0.05), w=(0.1, 0, 0)))
    assert cmd.interventions == 0 and not cmd.hold and cmd.source_stamp == -0.2
    np.testing.assert_allclose(cmd.translation, [0.001, -0.001, 0.0005])
    assert cmd.gripper == 0.99


def test_initial_state_validates_the_gripper():
    assert FilterState.initial(0.5).gripper == 0.5
    for bad in (math.nan, -0.1, 1.5):
        with pytest.raises(ValueError):
            FilterState.initial(bad)


# ----- properties -----------------------------------------------------------------------------------
def mostly(usual, unusual, weight: int = 4):
    """`usual` about `weight` times as often as `unusual` (one_of picks its branches evenly)."""
    return st.one_of(*([usual] * weight), unusual)


wild = st.one_of(
    st.floats(-0.2, 0.2),
    st.floats(-1e6, 1e6),
    st.sampled_from([0.0, math.nan, math.inf, -math.inf, 1e300, -1e300, 1e-300]),
)
small = st.floats(-0.05, 0.05)
usual_step = st.tuples(st.tuples(small, small, small), st.tuples(small, small, small),
                       st.floats(-0.5, 1.5), st.floats(0.0, 0.3))
wild_step = st.tuples(st.tuples(wild, wild, wild), st.tuples(wild, wild, wild), wild, st.floats(-2.0, 2.0))


@st.composite
def safety_limits(draw) -> SafetyLimits:
    lo = [draw(st.floats(-1.0, 0.5)) for _ in range(3)]
    hi = [v + draw(st.floats(0.01, 1.0)) for v in lo]
    g_lo = draw(st.floats(0.0, 0.5))
    return SafetyLimits(
        max_translation_step_m=draw(st.floats(0.0, 0.5)), max_rotation_step_rad=draw(st.floats(0.0, 1.0)),
        max_linear_velocity_mps=draw(st.floats(0.0, 3.0)),
        max_angular_velocity_radps=draw(st.floats(0.0, 2.5)),
        max_linear_acceleration_mps2=draw(st.floats(0.0, 9.0)),
        max_angular_acceleration_radps2=draw(st.floats(0.0, 17.0)),
        workspace_min_m=lo, workspace_max_m=hi, require_pose=draw(st.booleans()),
        max_pose_age_s=draw(st.floats(0.01, 1.0)), gripper_min=g_lo, gripper_max=draw(st.floats(g_lo, 1.0)),
        max_gripper_speed_per_s=draw(st.floats(0.0, 50.0)), max_image_age_s=draw(st.floats(0.01, 1.0)),
        max_action_age_s=draw(st.floats(0.01, 2.0)))


# Gates mostly open and inputs mostly sane, so that runs of moving ticks exercise the motion limits.
tick_event = st.fixed_dictionaries({
    "advance": mostly(st.floats(0.5, 1.5), st.one_of(st.floats(0.0, 10.0), st.just(-1.0))),  # ticks
    "step": mostly(usual_step, st.one_of(st.none(), wild_step)),
    "armed": mostly(st.just(True), st.just(False), 6),
    "estopped": mostly(st.just(False), st.just(True), 8),
    "fault": mostly(st.just(False), st.just(True), 8),
    "instruction": mostly(st.just(True), st.just(False), 8),
    "image_age": mostly(st.floats(0.0, 0.01), st.one_of(st.none(), st.floats(-1.0, 2.0))),
    "pose": mostly(st.tuples(st.floats(-1.2, 1.7), st.floats(-1.2, 1.7), st.floats(-1.2, 1.7),
                             st.floats(0.0, 0.02)),
                   st.one_of(st.none(), st.just((math.nan, 0.0, 0.0, 0.0)),
                             st.tuples(st.floats(-2, 2), st.floats(-2, 2), st.floats(-2, 2),
                                       st.floats(-0.5, 1.5)))),
})


def gate_closed(ev, step_obj, inp, limits, now) -> bool:
    """The test's own reading of the gates (independent of the filter's code)."""
    values = [now]
    if step_obj is not None:
        values += list(step_obj.translation) + list(step_obj.rotation) + [step_obj.gripper,
                                                                           step_obj.source_stamp]
    if inp.pose is not None:
        values += list(inp.pose.position) + [inp.pose.stamp]
    if not all(math.isfinite(v) for v in values):
        return True
    if inp.estopped or inp.fault or not inp.armed or not inp.instruction_active:
        return True
    if inp.image_stamp is None or abs(now - inp.image_stamp) > limits.max_image_age_s:
        return True
    if step_obj is not None and abs(now - step_obj.source_stamp) > limits.max_action_age_s:
        return True
    fresh = inp.pose is not None and abs(now - inp.pose.stamp) <= limits.max_pose_age_s
    return limits.require_pose and not fresh


def check_command(cmd, prev_cmd, prev_now, state_gripper, inp, limits, dt, now, closed, step_obj):
    """Every limit the filter promises, checked from the outside."""
    tol = 1e-9
    values = list(cmd.translation) + list(cmd.rotation) + [cmd.gripper, cmd.stamp]
    assert all(math.isfinite(v) for v in values), cmd
    t, r = np.asarray(cmd.translation), np.asarray(cmd.rotation)
    assert np.linalg.norm(t) <= min(limits.max_translation_step_m, limits.max_linear_velocity_mps * dt) \
        * (1 + tol) + 1e-15
    assert np.linalg.norm(r) <= min(limits.max_rotation_step_rad, limits.max_angular_velocity_radps * dt) \
        * (1 + tol) + 1e-15
    assert limits.gripper_min <= cmd.gripper <= limits.gripper_max
    assert abs(cmd.gripper - state_gripper) <= limits.max_gripper_speed_per_s * dt * (1 + tol) + 1e-15
    if closed or step_obj is None:
        assert cmd.hold and not t.any() and not r.any() and cmd.gripper == state_gripper
        if closed:
            assert cmd.interventions & GATE_BITS
        return
    assert not cmd.hold
    # Acceleration: relative to the previous command, or to rest after a stall; stops are exempt.
    on_time = prev_cmd is not None and 0.0 <= now - prev_now <= STALL_TICKS * dt
    pt = np.asarray(prev_cmd.translation) if on_time else np.zeros(3)
    pr = np.asarray(prev_cmd.rotation) if on_time else np.zeros(3)
    if not cmd.interventions & I.WORKSPACE:
        assert np.linalg.norm(t - pt) <= limits.max_linear_acceleration_mps2 * dt * dt * (1 + tol) + 1e-15
    assert np.linalg.norm(r - pr) <= limits.max_angular_acceleration_radps2 * dt * dt * (1 + tol) + 1e-15
    # Workspace, when the pose is known and fresh.
    p = inp.pose
    if p is not None and abs(now - p.stamp) <= limits.max_pose_age_s:
        for axis in range(3):
            lo, hi, x = limits.workspace_min_m[axis], limits.workspace_max_m[axis], p.position[axis]
            if x > hi:
                assert t[axis] <= 0.0
            elif x < lo:
                assert t[axis] >= 0.0
            else:
                assert lo - 1e-12 <= x + t[axis] <= hi + 1e-12


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limits=safety_limits(), dt=st.floats(0.001, 0.2), start_gripper=st.floats(0.0, 1.0),
       events=st.lists(tick_event, min_size=1, max_size=40))
def test_property_every_output_respects_every_limit(limits, dt, start_gripper, events):
    gripper0 = min(max(start_gripper, limits.gripper_min), limits.gripper_max)
    state = FilterState.initial(gripper0)
    now, prev_cmd, prev_now = 100.0, None, None
    for ev in events:
        now += ev["advance"] * dt
        step_obj = None
        if ev["step"] is not None:
            t, r, g, age = ev["step"]
            step_obj = ScheduledStep(np.array(t), np.array(r), g, now - age)
        pose_obj = None
        if ev["pose"] is not None:
            x, y, z, age = ev["pose"]
            pose_obj = Pose(np.array([x, y, z]), np.array([0.0, 0.0, 0.0, 1.0]), now - age)
        image_stamp = None if ev["image_age"] is None else now - ev["image_age"]
        inp = FilterInputs(ev["armed"], ev["estopped"], ev["fault"], image_stamp, ev["instruction"], pose_obj)
        closed = gate_closed(ev, step_obj, inp, limits, now)
        cmd, new_state = apply_filter(step_obj, state, inp, limits, dt, now)
        check_command(cmd, prev_cmd, prev_now, state.gripper, inp, limits, dt, now, closed, step_obj)
        assert cmd.stamp == now and new_state.gripper == cmd.gripper
        np.testing.assert_allclose(new_state.linear_velocity * dt, cmd.translation, rtol=1e-12, atol=1e-18)
        state, prev_cmd, prev_now = new_state, cmd, now


def test_a_corrupt_state_cannot_leak_into_the_output():
    state = FilterState(-DT, np.array([math.nan, 0, 0]), np.array([0, math.inf, 0]), math.nan)
    cmd, new = apply_filter(step(t=(0.0005, 0, 0), gripper=0.5), state, inputs(), OPEN, DT, 0.0)
    assert np.all(np.isfinite(cmd.translation)) and np.all(np.isfinite(cmd.rotation))
    assert math.isfinite(cmd.gripper) and math.isfinite(new.gripper)
    hold, _ = apply_filter(None, state, inputs(armed=False), OPEN, DT, 0.0)
    assert hold.hold and math.isfinite(hold.gripper) and hold.interventions & I.NON_FINITE
