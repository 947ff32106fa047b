"""The three inference stages (plus the token embedding) as plain nn.Modules with flat tensor I/O.

These are what the torch backend runs and what the ONNX export (issue 4) traces:

| stage   | inputs                                         | outputs                                       |
|---------|------------------------------------------------|-----------------------------------------------|
| vision  | pixel_values f32 [B, 3*n_towers, H, W]         | patch_embeds [B, P, D]                        |
| embed   | token_ids i64 [B, S]                           | embeds [B, S, D]                              |
| prefill | inputs_embeds [B, S, D]                        | logits f32 [B, V], present_k_i, present_v_i   |
| decode  | token_ids i64 [B, 1], past_k_i, past_v_i (T)   | logits f32 [B, V], present_k_i, _v_i (T + 1)  |
| proprio | proprio f32 [B, P] (OFT, normalized)           | proprio token [B, 1, D]                       |
| actions | inputs_embeds [B, L, D] (OFT sequence)         | actions f32 [B, K, A] (discrete: ids [B, K*A]) |

OFT's vision stage also takes FiLM's conditioning vector [B, D] when the checkpoint has FiLM.

K/V tensors are [B, n_kv_heads, T, head_dim] in the model dtype, interleaved per layer
(k_0, v_0, k_1, v_1, ...); `kv_names` gives their names. The decode step's position is the past
length (past_k_0.shape[2]); the cache grows by concatenation. No HF cache objects anywhere. Both LLM
stages run the causal mask built inside the forward from the shapes (`vla_ros.model.attention`), so the
graphs take no mask input.
"""

from __future__ import annotations

import torch
from torch import nn

from vla_ros.model.llm import LmCore
from vla_ros.model.oft import ParallelActions
from vla_ros.model.vla import VlaModel


def kv_names(num_layers: int, prefix: str) -> list[str]:
    """["{prefix}_k_0", "{prefix}_v_0", ...] in the order the stages take and return them."""
    names = []
    for i in range(num_layers):
        names += [f"{prefix}_k_{i}", f"{prefix}_v_{i}"]
    return names


class VisionStage(nn.Module):
    """Both towers' pixels (one camera per batch row) -> projected patch embeddings; FiLM towers also
    take the conditioning vector [B, D_llm]."""

    def __init__(self, model: VlaModel) -> None:
        super().__init__()
        self.vision_backbone = model.vision_backbone
        self.projector = model.projector

    def forward(self, pixel_values: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.projector(self.vision_backbone(pixel_values, condition))


class ProprioStage(nn.Module):
    """OFT: normalized proprio [B, P] -> one LLM token [B, 1, D]."""

    def __init__(self, model: VlaModel) -> None:
        super().__init__()
        if model.proprio_projector is None:
            raise ValueError("this checkpoint has no proprio projector")
        self.proprio_projector = model.proprio_projector

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.proprio_projector(proprio)[:, None]


def action_stage(model: VlaModel) -> ParallelActions:
    """OFT's parallel pass over the model's LLM and head (chunk and action dim from its settings)."""
    s = model.settings
    return ParallelActions(model.core, model.action_head, s.chunk, s.action_dim)


class EmbedStage(nn.Module):
    """Token ids -> input embeddings (BOS and prompt ids for the prefill)."""

    def __init__(self, core: LmCore) -> None:
        super().__init__()
        self.embed_tokens = core.lm.model.embed_tokens

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(token_ids)


class PrefillStage(nn.Module):
    """Input embeddings [BOS, patches, prompt] -> last-position logits + every layer's K/V."""

    def __init__(self, core: LmCore) -> None:
        super().__init__()
        core.fuse_projections()  # the torch backend and the exported graph run the same plan
        self.core = core

    def forward(self, inputs_embeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, present = self.core.prefill(inputs_embeds)
        return (logits, *present)


class DecodeStage(nn.Module):
    """One token id + past K/V -> logits + K/V one position longer."""

    def __init__(self, core: LmCore) -> None:
        super().__init__()
        core.fuse_projections()  # the torch backend and the exported graph run the same plan
        self.core = core

    def forward(self, token_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, present = self.core.decode(token_ids, list(past))
        return (logits, *present)
