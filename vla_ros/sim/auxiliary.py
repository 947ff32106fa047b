"""Auxiliary supervision for training the demo VLA from scratch: where things are, from the sim state.

OpenVLA starts from pretrained towers (DINOv2, SigLIP) and a pretrained LLM; the demo model starts
from random weights and, with cross entropy on the action tokens alone, sits for thousands of steps
on an image-blind plateau. Two small linear heads, used only during training and never saved with
the checkpoint, give the model dense targets derived from the recorded world state:

- patch head (on the projector's output, one row per patch): a Gaussian heat map per object type
  (colour x shape), for the fingertips and for the point of the table below them; and, on the
  patches of each object, the vector from the fingertips to that object (so that the LLM only has
  to find the named object's patches and read the vector there, one attention hop);
- state head (on the LM's last hidden state at the last prompt token, where the first action token
  is predicted): the named target's and the gripper's positions, their difference, the opening and
  whether the target is held;
- binding head (on the first decoder layer's output at the instruction's colour word): the named
  target's position, so that the word learns to look up its object among the patches in one hop;
- attention targets: in the first decoder layer, head 0 at the colour word attends to the named
  object's patches (its heat map); in the second, head 0 at every position that predicts an action
  token attends to the colour word. Cross entropy on those attention rows, no extra weights.

The checkpoint keeps exactly the released architecture; the heads shape what its features encode.
"""

from __future__ import annotations

import numpy as np

from vla_ros.sim.render import Camera, CameraSpec
from vla_ros.sim.world import COLOURS, SHAPES, STATE_GRIPPER_FIELDS, STATE_OBJECT_FIELDS

N_OBJECT_TYPES = len(COLOURS) * len(SHAPES)
PATCH_CHANNELS = N_OBJECT_TYPES + 2  # object types, fingertips, fingertips' ground point
PATCH_OUTPUTS = PATCH_CHANNELS + 3  # heat channels, then the fingertips-to-object vector
STATE_DIMS = 11  # target xyz, gripper xyz, target - gripper, opening, target held
BINDING_LAYER = 1  # hidden_states index read by the binding head (output of the first decoder layer)
LOOKUP_LAYER, READOUT_LAYER = 0, 1  # decoder layers whose head 0 gets the attention targets
WORKSPACE_CENTRE_M = np.array([0.45, 0.0, 0.08])
WORKSPACE_SCALE_M = 0.1  # positions are (p - centre) / scale
RELATIVE_SCALE_M = 0.05  # target - gripper is divided by this (finer: it decides the action)
FINGER_MID_HEIGHT_M = 0.025  # the visible middle of the fingers above the fingertip point


class AuxiliaryTargets:
    """Targets of both heads from flat world states (`WorldState.to_array`) and target indices."""

    def __init__(self, image_size: int, patch_size: int = 14, sigma_patches: float = 0.6,
                 camera: CameraSpec | None = None) -> None:
        self.camera = Camera(camera)
        self.scale = image_size / self.camera.spec.width  # camera pixels -> tower-input pixels
        self.grid = image_size // patch_size
        self.patch_size = patch_size
        self.sigma = sigma_patches
        centres = np.arange(self.grid) + 0.5
        self.rows, self.cols = np.meshgrid(centres, centres, indexing="ij")  # [G, G] patch centres

    def patch_targets(self, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Heat [G * G, PATCH_CHANNELS] in 0..1, the fingertips-to-object vector [G * G, 3] and its
        weight [G * G] (the heat of the object nearest each patch); patches in the towers' order."""
        points, channels = [], []
        for colour, shape, x, y, z, _yaw, size in _objects(state):
            points.append((x, y, z + size / 2))
            channels.append(int(colour) * len(SHAPES) + int(shape))
        n_objects = len(points)
        gx, gy, gz = state[:3]
        points += [(gx, gy, gz + FINGER_MID_HEIGHT_M), (gx, gy, 0.0)]
        channels += [N_OBJECT_TYPES, N_OBJECT_TYPES + 1]
        uv = self.camera.project(np.array(points)) * self.scale / self.patch_size  # [K, 2] in patches
        heat = np.zeros((self.grid, self.grid, PATCH_CHANNELS), np.float32)
        relative = np.zeros((self.grid, self.grid, 3), np.float32)
        weight = np.zeros((self.grid, self.grid), np.float32)
        for k, ((u, v), channel) in enumerate(zip(uv, channels)):
            bump = np.exp(-((self.cols - u) ** 2 + (self.rows - v) ** 2) / (2 * self.sigma ** 2))
            heat[..., channel] = np.maximum(heat[..., channel], bump)
            if k < n_objects:
                nearest = bump > weight
                vector = np.clip((np.array(points[k]) - state[:3]) / RELATIVE_SCALE_M, -4, 4)
                relative[nearest] = vector
                weight[nearest] = bump[nearest]
        return heat.reshape(-1, PATCH_CHANNELS), relative.reshape(-1, 3), weight.reshape(-1)

    @staticmethod
    def state_vector(state: np.ndarray, target: int) -> np.ndarray:
        """[STATE_DIMS] scaled target and gripper positions, their difference, opening, target held."""
        row = STATE_GRIPPER_FIELDS + STATE_OBJECT_FIELDS * int(target)
        x, y, z, size = state[row + 2], state[row + 3], state[row + 4], state[row + 6]
        target_xyz = np.array([x, y, z + size / 2])
        gripper = np.asarray(state[:3], np.float64)
        held = float(int(state[5]) == int(target))
        return np.concatenate([(target_xyz - WORKSPACE_CENTRE_M) / WORKSPACE_SCALE_M,
                               (gripper - WORKSPACE_CENTRE_M) / WORKSPACE_SCALE_M,
                               np.clip((target_xyz - gripper) / RELATIVE_SCALE_M, -3, 3),
                               [state[4], held]]).astype(np.float32)

    def batch(self, states: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
        """heat [B, P, C], relative [B, P, 3], weight [B, P], vectors [B, STATE_DIMS] and target_heat
        [B, P] (the named object's heat, summing to 1: where its colour word should look)."""
        heat, relative, weight = (np.stack(parts) for parts in zip(*(self.patch_targets(s) for s in states)))
        vectors = np.stack([self.state_vector(s, t) for s, t in zip(states, targets)])
        rows = [STATE_GRIPPER_FIELDS + STATE_OBJECT_FIELDS * int(t) for t in targets]
        channels = [int(s[r]) * len(SHAPES) + int(s[r + 1]) for s, r in zip(states, rows)]
        target_heat = heat[np.arange(len(states)), :, channels]  # [B, P]
        target_heat = target_heat / np.maximum(target_heat.sum(1, keepdims=True), 1e-6)
        return {"heat": heat, "relative": relative, "weight": weight, "vectors": vectors,
                "target_heat": target_heat.astype(np.float32)}


def _objects(state: np.ndarray) -> list[np.ndarray]:
    """The used object rows (colour index >= 0) of a flat state."""
    rows = np.asarray(state[STATE_GRIPPER_FIELDS:], np.float64).reshape(-1, STATE_OBJECT_FIELDS)
    return [r for r in rows if r[0] >= 0]


def make_heads(hidden_size: int):
    """The two linear heads (a torch module with `.patch` and `.state`)."""
    from torch import nn  # lazy: torch is heavy and optional; the targets are numpy only

    heads = nn.Module()
    heads.patch = nn.Linear(hidden_size, PATCH_OUTPUTS)
    heads.state = nn.Linear(hidden_size, STATE_DIMS)
    heads.binding = nn.Linear(hidden_size, 3)
    return heads


def word_token_index(prompt_ids, ids_with_other_word: list[int]) -> int:
    """Index of the last token of the word that differs between two prompts (the colour word)."""
    a = 0
    while a < min(len(prompt_ids), len(ids_with_other_word)) and prompt_ids[a] == ids_with_other_word[a]:
        a += 1
    b = 0
    while (b < min(len(prompt_ids), len(ids_with_other_word)) - a
           and prompt_ids[-1 - b] == ids_with_other_word[-1 - b]):
        b += 1
    return max(a, len(prompt_ids) - b - 1)


def with_other_colour(instruction: str) -> str | None:
    """`instruction` with its colour word replaced by another colour, or None when it names none."""
    words = instruction.split()
    for i, word in enumerate(words):
        if word.lower() in COLOURS:
            other = next(c for c in COLOURS if c != word.lower())
            return " ".join(words[:i] + [other] + words[i + 1:])
    return None


def auxiliary_losses(heads, patches, hidden, batch: dict, layers=None) -> tuple:
    """(patch loss, state loss): BCE of the heat (summed over channels: each channel's few positive
    patches would otherwise barely count) plus 0.1 x the heat-weighted MSE of the per-patch vectors;
    MSE of the state vector (plus, given `layers` and batch["colour_ends"], the MSE of the binding
    head's target position read at the colour word after the first decoder layer).

    patches [B, P, H] projector output; hidden [B, L, H]; batch: prompt_ends [B] (spliced index of
    each row's last prompt token) and the tensors of `AuxiliaryTargets.batch`.
    """
    import torch  # lazy: torch is heavy and optional; the targets are numpy only
    import torch.nn.functional as F  # lazy: as torch

    out = heads.patch(patches)  # [B, P, C + 3]
    heat_loss = F.binary_cross_entropy_with_logits(out[..., :PATCH_CHANNELS], batch["heat"]) * PATCH_CHANNELS
    squared = ((out[..., PATCH_CHANNELS:] - batch["relative"]) ** 2).mean(-1)  # [B, P]
    relative_loss = (squared * batch["weight"]).sum() / batch["weight"].sum().clamp_min(1e-6)
    picked = hidden[torch.arange(hidden.shape[0]), batch["prompt_ends"]]  # [B, H]
    state_loss = F.mse_loss(heads.state(picked), batch["vectors"])
    if layers is not None and "colour_ends" in batch:
        word = layers[BINDING_LAYER][torch.arange(hidden.shape[0]), batch["colour_ends"]]  # [B, H]
        state_loss = state_loss + F.mse_loss(heads.binding(word), batch["vectors"][:, :3])
    return heat_loss + 0.1 * relative_loss, state_loss


def attention_loss(attentions, batch: dict, n_patches: int, n_actions: int = 7):
    """Cross entropy of two attention rows against where they should look (see the module docstring).

    attentions: per decoder layer [B, heads, L, L] over the spliced sequence (patches at 1..P);
    batch: colour_ends, prompt_ends [B] and target_heat [B, P].
    """
    import torch  # lazy: torch is heavy and optional; the targets are numpy only

    rows = torch.arange(batch["colour_ends"].shape[0])
    lookup = attentions[LOOKUP_LAYER][rows, 0, batch["colour_ends"], 1:1 + n_patches]  # [B, P]
    lookup_loss = -(batch["target_heat"] * torch.log(lookup + 1e-6)).sum(1).mean()
    steps = batch["prompt_ends"][:, None] + torch.arange(n_actions)  # [B, 7] positions predicting actions
    layer = attentions[min(READOUT_LAYER, len(attentions) - 1)]  # a one-layer LM reads out in its only layer
    readout = layer[rows[:, None], 0, steps, batch["colour_ends"][:, None]]  # [B, 7]
    readout_loss = -torch.log(readout + 1e-6).mean()
    return lookup_loss + readout_loss
