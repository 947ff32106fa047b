"""Auxiliary training targets: heat maps where the renderer draws things, vectors and the losses."""

from __future__ import annotations

import numpy as np
import pytest

from vla_ros.sim.auxiliary import (
    N_OBJECT_TYPES,
    PATCH_CHANNELS,
    RELATIVE_SCALE_M,
    STATE_DIMS,
    WORKSPACE_CENTRE_M,
    WORKSPACE_SCALE_M,
    AuxiliaryTargets,
)
from vla_ros.sim.render import Renderer
from vla_ros.sim.world import COLOURS, SHAPES, SceneObject, TabletopWorld, WorldState

SIZE = 112  # tower input of the demo model: an 8 x 8 patch grid


def colour_centroid_patch(image: np.ndarray, rgb: tuple[int, int, int]) -> tuple[int, int]:
    """(row, col) of the 14 px patch holding the centroid of pixels close to `rgb`."""
    close = np.abs(image.astype(int) - np.array(rgb)).sum(-1) < 60
    assert close.sum() > 5, "colour not visible"
    rows, cols = np.nonzero(close)
    return int(rows.mean() // 14), int(cols.mean() // 14)


def resized(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_each_object_heat_peaks_on_the_patch_where_the_renderer_draws_it(seed):
    world = TabletopWorld()
    state = world.reset(seed)
    state.gripper_position[:] = (0.30, 0.20, 0.20)  # out of the way of the objects
    image = resized(Renderer().render(state))
    heat, _, _ = AuxiliaryTargets(SIZE).patch_targets(state.to_array())
    assert heat.shape == (64, PATCH_CHANNELS) and heat.min() >= 0 and heat.max() <= 1
    for obj in state.objects:
        channel = list(COLOURS).index(obj.colour) * len(SHAPES) + SHAPES.index(obj.shape)
        peak = divmod(int(heat[:, channel].argmax()), 8)
        drawn = colour_centroid_patch(image, COLOURS[obj.colour])
        assert max(abs(peak[0] - drawn[0]), abs(peak[1] - drawn[1])) <= 1, (obj.name, peak, drawn)
    present = {list(COLOURS).index(o.colour) * len(SHAPES) + SHAPES.index(o.shape) for o in state.objects}
    absent = [c for c in range(N_OBJECT_TYPES) if c not in present]
    assert np.all(heat[:, absent] == 0)


def test_vectors_point_from_the_fingertips_to_the_object_on_its_patches():
    cube = SceneObject("red", "cube", np.array([0.50, -0.05, 0.0]), 0.0, 0.04)
    state = WorldState([cube], np.array([0.42, 0.06, 0.12]))
    _, relative, weight = AuxiliaryTargets(SIZE).patch_targets(state.to_array())
    peak = int(weight.argmax())
    expected = (np.array([0.50, -0.05, 0.02]) - state.gripper_position) / RELATIVE_SCALE_M
    np.testing.assert_allclose(relative[peak], expected, atol=1e-5)
    assert weight[peak] > 0.5
    assert np.all(relative[weight == 0] == 0)


def test_state_vector_describes_the_named_target_and_the_gripper():
    a = SceneObject("red", "cube", np.array([0.40, 0.10, 0.0]), 0.0, 0.04)
    b = SceneObject("blue", "ball", np.array([0.55, -0.10, 0.0]), 0.0, 0.04)
    state = WorldState([a, b], np.array([0.45, 0.0, 0.10]), 0.0, 0.5, held=1)
    for target, obj in ((0, a), (1, b)):
        v = AuxiliaryTargets.state_vector(state.to_array(), target)
        assert v.shape == (STATE_DIMS,)
        centre = obj.position + [0, 0, 0.02]
        np.testing.assert_allclose(v[:3], (centre - WORKSPACE_CENTRE_M) / WORKSPACE_SCALE_M, atol=1e-5)
        np.testing.assert_allclose(v[3:6], (state.gripper_position - WORKSPACE_CENTRE_M) / WORKSPACE_SCALE_M,
                                   atol=1e-5)
        np.testing.assert_allclose(v[6:9], (centre - state.gripper_position) / RELATIVE_SCALE_M, atol=1e-5)
        assert v[9] == pytest.approx(0.5) and v[10] == float(target == 1)


def true_targets_batch(prompt_ends: list[int]):
    """A batch of 4 scenes (target 0) as tensors, and per-patch "features" that are exactly the true
    heat logits and vectors."""
    import torch

    world = TabletopWorld()
    states = np.stack([world.reset(s).to_array() for s in range(4)])
    targets = AuxiliaryTargets(SIZE).batch(states, np.zeros(4, np.int64))
    batch = {k: torch.from_numpy(v) for k, v in targets.items()}
    batch["prompt_ends"] = torch.tensor(prompt_ends)
    heat = batch["heat"].clamp(1e-4, 1 - 1e-4)
    perfect = torch.cat([torch.log(heat / (1 - heat)), batch["relative"]], -1)  # logits + vectors
    return batch, perfect


class IdentityHeads:  # the "features" are the head outputs themselves
    patch = staticmethod(lambda x: x)
    state = staticmethod(lambda x: x)
    binding = staticmethod(lambda x: x[:, :3])


def test_losses_are_smallest_for_the_true_targets():
    pytest.importorskip("torch")
    from vla_ros.sim.auxiliary import auxiliary_losses

    batch, perfect = true_targets_batch([0, 1, 2, 3])
    hidden = batch["vectors"][None].expand(4, 4, STATE_DIMS).clone()  # row i's vector at position i
    good = auxiliary_losses(IdentityHeads, perfect, hidden, batch)
    bad = auxiliary_losses(IdentityHeads, perfect.roll(1, 0), hidden.roll(1, 1), batch)
    assert good[1] == pytest.approx(0.0, abs=1e-9)
    assert good[0] < bad[0] and good[1] < bad[1]


def test_binding_loss_reads_the_target_position_at_the_colour_word():
    torch = pytest.importorskip("torch")
    from vla_ros.sim.auxiliary import auxiliary_losses

    batch, patches = true_targets_batch([3, 3, 3, 3])
    batch["colour_ends"] = torch.tensor([0, 1, 2, 3])
    last = torch.zeros(4, 4, STATE_DIMS)
    last[:, 3] = batch["vectors"]
    first_layer = batch["vectors"][None].expand(4, 4, STATE_DIMS).clone()  # row i's vector at position i
    _, without = auxiliary_losses(IdentityHeads, patches, last, batch)
    _, right = auxiliary_losses(IdentityHeads, patches, last, batch, layers=(None, first_layer))
    _, wrong = auxiliary_losses(IdentityHeads, patches, last, batch, layers=(None, first_layer.roll(1, 1)))
    assert without == pytest.approx(0.0, abs=1e-9) and right == pytest.approx(0.0, abs=1e-9)
    assert wrong > 0.01


def test_attention_targets_reward_looking_at_the_named_object_and_its_word():
    torch = pytest.importorskip("torch")
    from vla_ros.sim.auxiliary import attention_loss

    world = TabletopWorld()
    states = np.stack([world.reset(s).to_array() for s in range(2)])
    targets = AuxiliaryTargets(SIZE).batch(states, np.array([0, 1]))
    n_patches = targets["heat"].shape[1]
    assert np.allclose(targets["target_heat"].sum(1), 1.0)
    length = 1 + n_patches + 12
    colour, last = 1 + n_patches + 3, 1 + n_patches + 4
    batch = {"target_heat": torch.from_numpy(targets["target_heat"]),
             "colour_ends": torch.tensor([colour, colour]), "prompt_ends": torch.tensor([last, last])}

    def attentions(look_at_object: bool, read_word: bool):
        layers = [torch.full((2, 2, length, length), 1.0 / length) for _ in range(2)]
        if look_at_object:
            layers[0][:, 0, colour] = 0.0
            layers[0][:, 0, colour, 1:1 + n_patches] = batch["target_heat"]
        if read_word:
            layers[1][:, 0, last:last + 7] = 0.0
            layers[1][:, 0, last:last + 7, colour] = 1.0
        return tuple(layers)

    good = attention_loss(attentions(True, True), batch, n_patches)
    assert good < attention_loss(attentions(False, True), batch, n_patches)
    assert good < attention_loss(attentions(True, False), batch, n_patches)
