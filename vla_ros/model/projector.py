"""The MLP projectors from patch features to LLM embeddings (names as in the released checkpoints)."""

from __future__ import annotations

import torch
from torch import nn


class FusedMLPProjector(nn.Module):
    """Two towers: fc1 in -> 4 in, GELU, fc2 -> llm, GELU, fc3 llm -> llm (2176 -> 8704 -> 4096 -> 4096)."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.act_fn2 = nn.GELU()
        self.fc3 = nn.Linear(llm_dim, llm_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(features)))))


class MLPProjector(nn.Module):
    """One tower: fc1 in -> llm, GELU, fc2 llm -> llm."""

    def __init__(self, vision_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(features)))


def make_projector(fused: bool, vision_dim: int, llm_dim: int) -> nn.Module:
    """The projector the released HF port builds: fused (3 layers) for two towers, else 2 layers."""
    return FusedMLPProjector(vision_dim, llm_dim) if fused else MLPProjector(vision_dim, llm_dim)
