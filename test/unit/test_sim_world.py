"""Tabletop simulator core: scenes, physics-lite grasping, rendering, tasks and the scripted expert."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.sim.expert import expert_action
from vla_ros.sim.render import CameraSpec, Renderer
from vla_ros.sim.tasks import PHRASINGS, Task, is_success, make_instruction, move_goal, parse_instruction
from vla_ros.sim.world import COLOURS, SHAPES, SceneObject, TabletopWorld, WorldState


def one_object_world(x: float = 0.45, y: float = 0.0, size: float = 0.042) -> TabletopWorld:
    """A world with one red cube at (x, y) and the open gripper right above it."""
    world = TabletopWorld()
    cube = SceneObject("red", "cube", np.array([x, y, 0.0]), 0.0, size)
    world.set_state(WorldState([cube], np.array([x, y, 0.15]), 0.0, 1.0))
    return world


def lower_to(world: TabletopWorld, z: float) -> None:
    dz = z - world.state.gripper_position[2]
    world.step(np.array([0.0, 0.0, dz]), np.zeros(3), world.state.gripper_opening, 0.1)


def close(world: TabletopWorld, ticks: int = 5) -> None:
    for _ in range(ticks):
        world.step(np.zeros(3), np.zeros(3), 0.0, 0.1)


# ----------------------------------------------------------------------------- scenes
def test_reset_is_deterministic_for_a_seed_and_varies_across_seeds():
    a, b = TabletopWorld(), TabletopWorld()
    np.testing.assert_array_equal(a.reset(7).to_array(), b.reset(7).to_array())
    assert not np.array_equal(a.reset(8).to_array(), b.reset(9).to_array())


def test_scenes_have_three_to_five_objects_with_distinct_colours_apart_from_each_other():
    world = TabletopWorld()
    counts = set()
    for seed in range(40):
        state = world.reset(seed)
        counts.add(len(state.objects))
        colours = [o.colour for o in state.objects]
        assert len(set(colours)) == len(colours)
        assert all(o.colour in COLOURS and o.shape in SHAPES for o in state.objects)
        xy = np.array([o.position[:2] for o in state.objects])
        gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy))
        assert gaps.min() >= world.spec.min_object_separation_m - 1e-9
    assert counts == {3, 4, 5}


def test_state_round_trips_through_its_flat_array():
    world = TabletopWorld()
    state = world.reset(3)
    state.held = 1
    restored = WorldState.from_array(state.to_array())
    np.testing.assert_allclose(restored.to_array(), state.to_array())
    assert [o.name for o in restored.objects] == [o.name for o in state.objects]


# ----------------------------------------------------------------------------- physics-lite
def test_motion_is_clamped_to_the_reachable_box_and_the_table():
    world = one_object_world()
    world.step(np.array([0.0, 0.0, -1.0]), np.zeros(3), 1.0, 0.1)
    assert world.state.gripper_position[2] == pytest.approx(0.0)
    world.step(np.array([5.0, 5.0, 5.0]), np.zeros(3), 1.0, 0.1)
    np.testing.assert_allclose(world.state.gripper_position, world.spec.gripper_max_m)


def test_fingers_move_at_their_speed_toward_the_commanded_opening():
    world = one_object_world()
    world.step(np.zeros(3), np.zeros(3), 0.0, 0.1)
    assert world.state.gripper_opening == pytest.approx(1.0 - world.spec.gripper_speed_per_s * 0.1)


def test_closing_around_a_low_object_grasps_it_and_lifting_carries_it():
    world = one_object_world()
    lower_to(world, 0.015)
    close(world)
    assert world.state.held == 0
    assert world.finger_gap() == pytest.approx(0.042)  # fingers rest on the object
    world.step(np.array([0.0, 0.0, 0.08]), np.zeros(3), 0.0, 0.1)
    assert world.state.objects[0].position[2] == pytest.approx(0.08, abs=1e-6)
    assert world.lifted(0)
    task = Task("pick", 0, "pick up the red cube")
    assert is_success(task, world.state, world.spec)


def test_opening_drops_the_object_onto_the_table():
    world = one_object_world()
    lower_to(world, 0.015)
    close(world)
    world.step(np.array([0.05, 0.0, 0.08]), np.zeros(3), 0.0, 0.1)
    world.step(np.zeros(3), np.zeros(3), 1.0, 0.1)
    assert world.state.held == -1
    np.testing.assert_allclose(world.state.objects[0].position, [0.50, 0.0, 0.0], atol=1e-9)


@pytest.mark.parametrize("where", ["too_high", "off_centre", "already_closed"])
def test_no_grasp_without_the_object_between_closing_fingers(where):
    world = one_object_world()
    if where == "too_high":
        lower_to(world, 0.05)
    elif where == "off_centre":
        world.step(np.array([0.03, 0.0, 0.0]), np.zeros(3), 1.0, 0.1)
        lower_to(world, 0.015)
    else:  # closed high up, then lowered around the object: fingers cannot pass through it
        close(world)
        lower_to(world, 0.015)
    close(world)
    assert world.state.held == -1
    world.step(np.array([0.0, 0.0, 0.1]), np.zeros(3), 0.0, 0.1)
    assert world.state.objects[0].position[2] == 0.0


def test_yaw_turns_the_gripper_and_non_finite_input_does_not_poison_the_state():
    world = one_object_world()
    world.step(np.zeros(3), np.array([0.0, 0.0, 0.3]), 1.0, 0.1)
    assert world.state.gripper_yaw == pytest.approx(0.3)
    q = world.pose(1.0).orientation
    assert q == pytest.approx([0.0, 0.0, np.sin(0.15), np.cos(0.15)])
    world.step(np.array([np.nan, 0.0, np.inf]), np.array([np.nan] * 3), np.nan, 0.1)
    assert np.all(np.isfinite(world.state.gripper_position))
    assert np.isfinite(world.state.gripper_opening)


# ----------------------------------------------------------------------------- rendering
def test_render_shape_dtype_and_determinism():
    world = TabletopWorld()
    renderer = Renderer()
    world.reset(1)
    a = renderer.render(world.state)
    b = Renderer().render(world.state.copy())
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    world.reset(2)
    assert np.abs(renderer.render(world.state).astype(int) - a).mean() > 1.0


def test_render_size_follows_the_camera_spec():
    renderer = Renderer(CameraSpec(width=320, height=256))
    world = TabletopWorld()
    world.reset(0)
    assert renderer.render(world.state).shape == (256, 320, 3)


def _dark_rows(image: np.ndarray) -> np.ndarray:
    """Rows containing the gripper's dark fingers."""
    dark = (image.max(axis=2) < 80) & (np.abs(image.astype(int) - [70, 72, 82]).sum(axis=2) > 12)
    return np.flatnonzero(dark.any(axis=1))


def test_gripper_height_is_visible_in_the_image():
    """Same x, y, different height: the fingers move in the image and the frames differ."""
    world = one_object_world(0.40, 0.1)
    renderer = Renderer()
    world.state.gripper_position = np.array([0.5, -0.08, 0.02])
    low = renderer.render(world.state)
    world.state.gripper_position = np.array([0.5, -0.08, 0.12])
    high = renderer.render(world.state)
    changed = np.abs(low.astype(int) - high.astype(int)).sum(axis=2) > 30
    assert changed.mean() > 0.01
    assert _dark_rows(high).min() < _dark_rows(low).min() - 10  # the fingers rise in the image


def test_target_colour_is_drawn_where_the_object_is():
    world = one_object_world(0.45, 0.10)
    world.state.gripper_position = np.array([0.45, -0.15, 0.18])
    image = Renderer().render(world.state)
    red = (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] < 80)
    assert red.sum() > 50
    cols = np.flatnonzero(red.any(axis=0))
    assert cols.mean() > 112  # the camera faces the robot: +y shows on the image's right


# ----------------------------------------------------------------------------- tasks
def test_instructions_have_varied_phrasing_and_parse_back_to_the_task():
    world = TabletopWorld()
    state = world.reset(5)
    for kind, templates in PHRASINGS.items():
        assert len(templates) >= 4
        for phrasing in range(len(templates)):
            for index, obj in enumerate(state.objects):
                text = make_instruction(kind, obj.name, phrasing=phrasing)
                task = parse_instruction(text, state)
                assert task == Task(kind, index, text)


def test_parse_instruction_rejects_unknown_objects_and_verbs():
    state = TabletopWorld().reset(5, n_objects=3)
    missing = next(c for c in COLOURS if c not in {o.colour for o in state.objects})
    assert parse_instruction(f"pick up the {missing} cube", state) is None
    assert parse_instruction("dance", state) is None
    assert parse_instruction("", state) is None


def test_move_success_needs_the_hover_position():
    world = one_object_world()
    task = Task("move", 0, "move to the red cube")
    goal = move_goal(world.state, 0)
    world.state.gripper_position = goal.copy()
    assert is_success(task, world.state)
    world.state.gripper_position = goal + [0.04, 0.0, 0.0]
    assert not is_success(task, world.state)
    world.state.gripper_position = goal + [0.0, 0.0, 0.06]
    assert not is_success(task, world.state)


# ----------------------------------------------------------------------------- expert
def test_expert_actions_are_bounded_and_gripper_absolute():
    world = TabletopWorld()
    for seed in range(10):
        state = world.reset(seed)
        for kind in ("pick", "move"):
            action = expert_action(state, Task(kind, 0, "x"))
            assert action.shape == (7,)
            assert np.abs(action[:3]).max() <= 0.028 + 1e-9
            np.testing.assert_allclose(action[:3] / 0.004, np.round(action[:3] / 0.004), atol=1e-9)
            assert action[6] in (0.0, 1.0)
            np.testing.assert_array_equal(action[3:6], 0.0)


def test_expert_reopens_after_closing_on_nothing():
    world = one_object_world()
    lower_to(world, 0.015)
    world.state.gripper_position[0] += 0.005  # aligned within tolerance, but fingers already shut
    world.state.gripper_opening = 0.0
    action = expert_action(world.state, Task("pick", 0, "pick up the red cube"))
    assert action[6] == 1.0 and action[2] > 0.0
