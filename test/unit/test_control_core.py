"""ControlCore: arm/disarm, e-stop latch, instruction changes, watchdogs, rejections, counters."""

from __future__ import annotations

import ast
import math
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_ros.control.core import ControlCore
from vla_ros.control.safety import GATE_BITS, STALL_TICKS, Intervention
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.schema import ConfigError
from vla_ros.core.types import ActionChunk, Pose

I = Intervention  # noqa: E741
TICK, PERIOD = 0.01, 0.2
CONTROL = Path(__file__).resolve().parents[2] / "vla_ros" / "control"


def chunk(stamp: float, instruction: str = "pick", n: int = 5, dx: float = 0.0005) -> ActionChunk:
    actions = np.zeros((n, 7))
    actions[:, 0] = dx  # 2.5 mm/s: no limit binds
    actions[:, 6] = 1.0
    return ActionChunk(actions, stamp, instruction)


def ready_core(limits: SafetyLimits | None = None, now: float = 0.0) -> ControlCore:
    """Armed, instruction 'pick', fresh image."""
    core = ControlCore(limits or SafetyLimits(), TICK, PERIOD)
    core.set_armed(True)
    core.on_instruction("pick", now)
    core.on_image(now)
    return core


def run_ticks(core: ControlCore, start: float, count: int, images: bool = True):
    commands = []
    for k in range(1, count + 1):
        now = start + k * TICK
        if images:
            core.on_image(now)
        commands.append(core.tick(now))
    return commands


def test_starts_disarmed_and_holds():
    core = ControlCore(SafetyLimits(), TICK, PERIOD)
    assert core.state == "DISARMED" and core.instruction == "" and core.last_chunk_stamp is None
    cmd = core.tick(0.0)
    assert cmd.hold and cmd.interventions == I.DISARMED and cmd.gripper == 1.0


def test_arm_play_and_disarm():
    core = ready_core()
    assert core.on_chunk(chunk(0.0), 0.0)
    commands = run_ticks(core, 0.0, 10)
    assert not any(c.hold for c in commands) and all(c.interventions == 0 for c in commands)
    assert sum(c.translation[0] for c in commands) == pytest.approx(10 * 0.0005 * TICK / PERIOD)
    assert core.state == "ARMED"
    core.set_armed(False)
    cmd = core.tick(0.11)
    assert cmd.hold and cmd.interventions == I.DISARMED and core.state == "DISARMED"
    core.set_armed(True)  # re-arming does not resume the dropped chunk
    assert all(c.hold and c.interventions == 0 for c in run_ticks(core, 0.11, 3))
    assert core.state == "HOLDING"


def test_estop_latches_until_reset():
    core = ready_core()
    core.on_chunk(chunk(0.0), 0.0)
    run_ticks(core, 0.0, 3)
    core.estop()
    assert core.state == "ESTOPPED"
    core.on_chunk(chunk(0.05), 0.05)  # chunks keep arriving: still HOLD
    for cmd in run_ticks(core, 0.03, 20):
        assert cmd.hold and cmd.interventions == I.ESTOP
    core.set_armed(True)  # arming does not release it
    assert core.tick(0.24).interventions == I.ESTOP
    core.reset_estop()
    assert core.state == "HOLDING"  # armed, last command a HOLD
    cmd = core.tick(0.25)
    assert cmd.hold and cmd.interventions == 0  # actions from before the reset are gone
    assert core.on_chunk(chunk(0.25), 0.25)
    assert not run_ticks(core, 0.25, 1)[0].hold and core.state == "ARMED"


def test_instruction_change_drops_actions_at_once():
    core = ready_core()
    core.on_chunk(chunk(0.0), 0.0)
    run_ticks(core, 0.0, 2)
    assert core.remaining_actions == 4
    assert core.on_instruction("place", 0.02)
    assert not core.on_instruction("place", 0.03)  # unchanged
    assert core.instruction == "place" and core.instruction_stamp == 0.02
    assert core.remaining_actions == 0
    assert run_ticks(core, 0.02, 1)[0].hold
    assert not core.on_chunk(chunk(0.01, "pick"), 0.03)  # computed for the old instruction
    assert core.counters["rejected_chunks"] == 1 and core.counters["rejected_chunks_instruction"] == 1
    assert "pick" in core.last_error
    assert core.on_chunk(chunk(0.03, "place"), 0.04)


def test_empty_instruction_holds():
    core = ready_core()
    core.on_chunk(chunk(0.0), 0.0)
    core.on_instruction("  ", 0.01)
    cmd = run_ticks(core, 0.01, 1)[0]
    assert cmd.hold and cmd.interventions == I.NO_INSTRUCTION and core.state == "HOLDING"
    assert not core.on_chunk(chunk(0.02, "  "), 0.02)


def test_stale_image_holds_and_recovers():
    core = ready_core()
    core.on_chunk(chunk(0.0, n=100), 0.0)
    assert not run_ticks(core, 0.0, 5)[-1].hold
    stale = run_ticks(core, 0.05, 60, images=False)  # camera stops: max_image_age_s 0.5
    assert not stale[40].hold and stale[-1].hold and stale[-1].interventions == I.STALE_IMAGE
    assert core.state == "HOLDING" and core.counters["STALE_IMAGE"] == 10
    assert not run_ticks(core, 0.65, 1)[0].hold  # camera back


def test_stale_action_holds():
    core = ready_core()
    core.on_chunk(chunk(0.0, n=10), 0.0)  # 2 s of actions from an image taken at 0.0
    commands = run_ticks(core, 0.0, 120)
    assert not commands[99].hold  # 1.0 s: max_action_age_s
    assert commands[-1].hold and commands[-1].interventions == I.STALE_ACTION


def test_fault_holds_until_cleared():
    core = ready_core()
    core.on_chunk(chunk(0.0), 0.0)
    core.set_fault("policy raised RuntimeError")
    assert core.state == "FAULT" and core.fault == "policy raised RuntimeError"
    assert core.last_error == "policy raised RuntimeError"
    assert run_ticks(core, 0.0, 1)[0].interventions == I.FAULT
    core.set_fault(None)
    assert core.state == "HOLDING" and core.fault is None
    assert core.on_chunk(chunk(0.02), 0.02) and not run_ticks(core, 0.02, 1)[0].hold


@pytest.mark.parametrize("bad, reason", [
    (ActionChunk(np.full((2, 7), math.nan), 0.0, "pick"), "NaN"),
    (ActionChunk(np.zeros((2, 6)), 0.0, "pick"), "[T>=1, 7]"),
    (ActionChunk(np.zeros((2, 7)), math.inf, "pick"), "stamp"),
])
def test_invalid_chunks_are_rejected_and_counted(bad, reason):
    core = ready_core()
    assert not core.on_chunk(bad, 0.0)
    assert core.counters["rejected_chunks_invalid"] == 1 and reason in core.last_error
    assert core.tick(0.01).hold


def test_older_chunk_is_rejected():
    core = ready_core()
    assert core.on_chunk(chunk(1.0), 1.0)
    assert not core.on_chunk(chunk(0.5), 1.0)
    assert core.counters["rejected_chunks_stale"] == 1 and core.last_chunk_stamp == 1.0


def test_bad_pose_and_image_stamp_are_rejected():
    core = ready_core()
    assert not core.on_pose(Pose(np.array([0.0, math.nan, 0.0]), np.array([0, 0, 0, 1.0]), 0.0))
    assert not core.on_pose(Pose(np.zeros(2), np.array([0, 0, 0, 1.0]), 0.0))
    assert core.counters["rejected_poses"] == 2 and core.pose is None
    good = Pose(np.zeros(3), np.array([0, 0, 0, 1.0]), 0.0)
    assert core.on_pose(good) and core.pose is good
    assert not core.on_image(math.nan) and core.image_stamp == 0.0
    assert core.counters["rejected_images"] == 1


def test_pose_required_and_workspace():
    limits = replace(SafetyLimits(), require_pose=True, workspace_max_m=[0.3, 0.8, 1.0])
    core = ready_core(limits)
    core.on_chunk(chunk(0.0, n=50, dx=0.05), 0.0)
    assert run_ticks(core, 0.0, 1)[0].interventions == I.STALE_POSE
    x, commands = 0.29, []
    for k in range(2, 60):
        now = k * TICK
        core.on_image(now)
        core.on_pose(Pose(np.array([x, 0.0, 0.5]), np.array([0, 0, 0, 1.0]), now))
        cmd = core.tick(now)
        x += cmd.translation[0]
        commands.append(cmd)
        assert x <= 0.3 + 1e-12
    assert any(c.interventions & I.WORKSPACE for c in commands) and x > 0.299


def test_counters():
    core = ready_core()
    core.on_chunk(chunk(0.0, dx=1.0), 0.0)  # far too fast: velocity and acceleration limits bind
    run_ticks(core, 0.0, 10)
    core.set_armed(False)
    run_ticks(core, 0.1, 5)
    c = core.counters
    assert c["commands"] == 15 and c["holds"] == 5 and c["DISARMED"] == 5
    assert c["LINEAR_VELOCITY"] + c["LINEAR_ACCELERATION"] >= 10 and c["interventions"] == 15
    c["commands"] = -1  # a copy: the core's counters are untouched
    assert core.counters["commands"] == 15


def test_initial_gripper_and_validation():
    limits = replace(SafetyLimits(), gripper_max=0.8)
    assert ControlCore(limits, TICK, PERIOD, initial_gripper=1.0).tick(0.0).gripper == 0.8
    with pytest.raises(ValueError):
        ControlCore(SafetyLimits(), TICK, PERIOD, initial_gripper=math.nan)
    with pytest.raises(ValueError):
        ControlCore(SafetyLimits(), 0.0, PERIOD)
    with pytest.raises(ValueError):
        ControlCore(SafetyLimits(), TICK, -1.0)
    with pytest.raises(ConfigError, match="max_linear_velocity_mps"):
        ControlCore(replace(SafetyLimits(), max_linear_velocity_mps=10.0), TICK, PERIOD)


def test_stalled_loop_drops_actions_instead_of_a_burst():
    core = ready_core(replace(SafetyLimits(), max_linear_velocity_mps=3.0, max_translation_step_m=0.5,
                              max_linear_acceleration_mps2=9.0))
    core.on_chunk(chunk(0.0, n=10, dx=0.01), 0.0)
    run_ticks(core, 0.0, 5)
    core.on_image(0.5)
    cmd = core.tick(0.5)  # 45 ticks late
    assert cmd.translation[0] <= 9.0 * TICK * TICK + 1e-12  # ramps from rest after a stall
    assert core.remaining_actions == 7


def test_threads_feeding_and_ticking():
    core = ready_core()
    errors: list[BaseException] = []
    done = threading.Event()

    def worker():
        try:
            k = 0
            while not done.is_set():
                k += 1
                core.on_chunk(chunk(k * 1e-3), k * 1e-3)
                core.on_image(k * 1e-3)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        for k in range(2000):
            cmd = core.tick(k * 1e-3)
            assert np.all(np.isfinite(cmd.translation))
    finally:
        done.set()
        thread.join()
    assert not errors and core.counters["commands"] == 2000


def test_control_imports_only_numpy_stdlib_and_allowed_modules():
    allowed_ours = ("vla_ros.core", "vla_ros.control")
    for path in CONTROL.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                ok = (top in sys.stdlib_module_names or top == "numpy"
                      or any(name == m or name.startswith(m + ".") for m in allowed_ours))
                assert ok, f"{path.name} imports {name}"


# ----- property: whatever happens, every command stays within the limits ---------------------------
advance = st.one_of(st.floats(0.5, 1.5), st.floats(0.5, 1.5), st.floats(0.0, 6.0))  # in ticks
tick_event = st.tuples(st.just("tick"), advance, st.sampled_from([True] * 9 + [False]))  # camera delivers?
chunk_event = st.tuples(st.just("chunk"), st.integers(1, 8),
                        st.sampled_from([0.001, 0.01, 0.05, 1.0, 1e9, math.nan]),
                        st.sampled_from(["pick"] * 5 + ["place"]), st.floats(-0.3, 0.05))
event = st.one_of(
    *[tick_event] * 8, *[chunk_event] * 3,
    st.tuples(st.just("instruction"), st.sampled_from(["pick"] * 4 + ["place", ""])),
    st.tuples(st.just("arm"), st.sampled_from([True] * 3 + [False])),
    st.tuples(st.just("estop"), st.sampled_from([False] * 3 + [True])),  # True: latch, False: reset
    st.tuples(st.just("fault"), st.sampled_from([False] * 3 + [True])),
    st.tuples(st.just("pose"), st.floats(-1.0, 1.0), st.floats(-0.1, 1.1), st.floats(0.0, 0.6)),
    st.tuples(st.just("pose"), st.floats(0.7, 0.9), st.floats(-0.1, 0.1), st.floats(0.0, 0.05)),  # near walls
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event, min_size=20, max_size=100), require_pose=st.booleans(), seed=st.integers(0, 99))
def test_property_core_outputs_respect_the_limits(events, require_pose, seed):
    limits = replace(SafetyLimits(), require_pose=require_pose)
    core = ready_core(limits)
    rng = np.random.default_rng(seed)
    now, prev, prev_now, pose = 0.0, None, None, None
    for ev in events:
        kind = ev[0]
        if kind == "tick":
            now += ev[1] * TICK
            if ev[2]:
                core.on_image(now)
            cmd = core.tick(now)
            t = cmd.translation
            assert np.all(np.isfinite(t)) and np.all(np.isfinite(cmd.rotation)) and math.isfinite(cmd.gripper)
            assert np.linalg.norm(t) <= limits.max_linear_velocity_mps * TICK * (1 + 1e-9)
            assert np.linalg.norm(cmd.rotation) <= limits.max_angular_velocity_radps * TICK * (1 + 1e-9)
            assert 0.0 <= cmd.gripper <= 1.0
            if prev is not None:
                assert abs(cmd.gripper - prev.gripper) <= limits.max_gripper_speed_per_s * TICK + 1e-12
            if not cmd.hold and not cmd.interventions & I.WORKSPACE:
                on_time = prev is not None and 0.0 <= now - prev_now <= STALL_TICKS * TICK
                pt = prev.translation if on_time else np.zeros(3)
                assert np.linalg.norm(t - pt) <= limits.max_linear_acceleration_mps2 * TICK ** 2 * (1 + 1e-9)
            if core.estopped or core.fault or not core.armed or not core.instruction.strip():
                assert cmd.hold and cmd.interventions & GATE_BITS
            if cmd.hold:
                assert not t.any() and not cmd.rotation.any()
            if not cmd.hold and pose is not None and now - pose.stamp <= limits.max_pose_age_s:
                p = pose.position
                lo, hi = np.array(limits.workspace_min_m), np.array(limits.workspace_max_m)
                inside = (p >= lo) & (p <= hi)
                assert np.all(~inside | ((p + t >= lo - 1e-12) & (p + t <= hi + 1e-12)))
            prev, prev_now = cmd, now
        elif kind == "chunk":
            _, n, scale, text, age = ev
            actions = rng.uniform(-1.0, 1.0, size=(n, 7)) * scale
            actions[:, 6] = rng.uniform(-0.5, 1.5, size=n)
            core.on_chunk(ActionChunk(actions, now + age, text), now)
        elif kind == "instruction":
            core.on_instruction(ev[1], now)
        elif kind == "arm":
            core.set_armed(ev[1])
        elif kind == "estop":
            core.estop() if ev[1] else core.reset_estop()
        elif kind == "fault":
            core.set_fault("test fault" if ev[1] else None)
        elif kind == "pose":
            pose = Pose(np.array([ev[1], 0.0, ev[2]]), np.array([0, 0, 0, 1.0]), now - ev[3])
            core.on_pose(pose)


# ----- one image age gate per camera ---------------------------------------------------------------
def two_camera_core(front_s: float = 0.5, wrist_s: float = 0.2) -> ControlCore:
    core = ControlCore(SafetyLimits(), TICK, PERIOD, cameras={"front": front_s, "wrist": wrist_s})
    core.set_armed(True)
    core.on_instruction("pick", 0.0)
    assert core.on_chunk(chunk(0.0, n=100), 0.0)
    return core


def test_each_camera_has_its_own_age_gate_and_the_stale_one_is_named():
    core = two_camera_core()
    assert core.on_image(0.0, "front")
    cmd = core.tick(0.01)
    assert cmd.hold and cmd.interventions == I.STALE_IMAGE and core.stale_camera(0.01) == "wrist"
    assert core.image_stamp is None and core.image_stamps == {"front": 0.0}
    assert core.on_image(0.01, "wrist")
    assert not core.tick(0.02).hold and core.stale_camera(0.02) is None
    assert core.image_stamp == 0.0  # the oldest camera's
    for t in np.arange(0.03, 0.4, 0.0025):  # front keeps coming, wrist stopped at 0.01 (limit 0.2 s)
        core.on_image(float(t), "front")
        stale = abs(float(t) - 0.01) > 0.2
        cmd = core.tick(float(t))
        assert bool(cmd.interventions & I.STALE_IMAGE) == stale, t
        assert core.stale_camera(float(t)) == ("wrist" if stale else None)


def test_equal_camera_limits_gate_on_the_oldest_image():
    core = two_camera_core(0.5, 0.5)
    core.on_image(0.0, "front")
    core.on_image(0.3, "wrist")
    assert not core.tick(0.5).hold and core.tick(0.51).interventions == I.STALE_IMAGE
    assert core.stale_camera(0.51) == "front"


def test_one_camera_with_its_own_limit():
    core = ControlCore(SafetyLimits(), TICK, PERIOD, cameras={"camera": 0.1})
    core.set_armed(True)
    core.on_instruction("pick", 0.0)
    core.on_chunk(chunk(0.0, n=100), 0.0)
    assert core.on_image(0.0)  # the one-argument call feeds "camera"
    assert not core.tick(0.1).hold and core.tick(0.11).interventions == I.STALE_IMAGE


def test_unknown_camera_and_invalid_camera_limits():
    core = two_camera_core()
    assert not core.on_image(0.0, "rear") and not core.on_image(0.0)  # "camera" is not configured
    assert core.counters["rejected_images"] == 2 and "unknown camera 'camera'" in core.last_error
    assert "front, wrist" in core.last_error
    for bad in ({}, {"front": 0.0}, {"front": math.nan}, {"": 0.5}, {"front": "0.5"}):
        with pytest.raises(ValueError):
            ControlCore(SafetyLimits(), TICK, PERIOD, cameras=bad)
