"""OpenVLA-OFT's parts on top of the OpenVLA model: L1 head, proprio projector, FiLM, the parallel pass.

One bidirectional LLM pass over

    [BOS][patches, 256 per camera][proprio token?][prompt ids (incl. "▁")][chunk*action_dim zeros][</s>]

gives the whole chunk. The head reads the last hidden states at the slots shifted one position left
(OFT's training slice: from the last prompt token to the second-to-last zero slot), reshaped
[K, A*D] per timestep. FiLM: every tower block gets x = x*(1+scale(v)) + shift(v) between its
attention and MLP branches, v the mean embedding of BOS, prompt ids and </s>.
State-dict names follow OFT's modules (`action_head.model.fc1`, `proprio_projector.fc1`, ...).
"""

from __future__ import annotations

import torch
from torch import nn

from vla_ros.model.attention import bidirectional_mask
from vla_ros.model.llm import LmCore


class MLPResNetBlock(nn.Module):
    """x + ReLU(Linear(LayerNorm(x))): `ffn` = [LayerNorm, Linear, ReLU] (pre-LN residual)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LayerNorm, fc1, ReLU, residual blocks, LayerNorm, fc2 (no output activation)."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionHead(nn.Module):
    """Hidden states of one timestep's A slots, concatenated [A*D] -> A normalized actions."""

    def __init__(self, llm_dim: int, action_dim: int) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.model = MLPResNet(2, llm_dim * action_dim, llm_dim, action_dim)

    def forward(self, slot_hidden: torch.Tensor, chunk: int) -> torch.Tensor:
        """[B, K*A, D] -> [B, K, A]."""
        b = slot_hidden.shape[0]
        return self.model(slot_hidden.reshape(b, chunk, -1))


class ProprioProjector(nn.Module):
    """Normalized proprio [B, P] -> one LLM token [B, D]: fc1, exact GELU, fc2."""

    def __init__(self, llm_dim: int, proprio_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


class FilmLayer(nn.Module):
    """gamma = scale(v), beta = shift(v) for one tower block (Linear(llm_dim, tower_dim) each)."""

    def __init__(self, llm_dim: int, vision_dim: int) -> None:
        super().__init__()
        self.scale = nn.Linear(llm_dim, vision_dim)
        self.shift = nn.Linear(llm_dim, vision_dim)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """x [B, T, C] modulated by condition [B, D]: x * (1 + gamma) + beta, the same for every token."""
        return x * (1 + self.scale(condition)[:, None]) + self.shift(condition)[:, None]


def film_block(block: nn.Module, film: FilmLayer, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """A timm ViT block with FiLM between its attention and MLP branches (OFT's FiLMed block)."""
    x = x + block.drop_path1(block.ls1(block.attn(block.norm1(x))))
    x = film(x, condition)
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def film_layers(n_blocks: int, llm_dim: int, vision_dim: int) -> nn.ModuleList:
    """One FilmLayer per (kept) tower block."""
    return nn.ModuleList(FilmLayer(llm_dim, vision_dim) for _ in range(n_blocks))


def slot_slice(hidden: torch.Tensor, n_slots: int) -> torch.Tensor:
    """OFT's shifted slice of [B, L, D]: positions [L - n_slots - 2, L - 2), i.e. from the last prompt
    token to the second-to-last zero slot (training used the same one-position shift)."""
    length = hidden.shape[1]
    return hidden[:, length - n_slots - 2:length - 2]


class ParallelActions(nn.Module):
    """OFT's pass: embeddings [B, L, D] -> L1 head's normalized actions [B, K, A] (float32), or for the
    discrete variant the argmax token ids over the whole vocabulary [B, K*A] (int64)."""

    def __init__(self, core: LmCore, head: L1RegressionHead | None, chunk: int, action_dim: int) -> None:
        super().__init__()
        core.fuse_projections()
        self.core = core
        self.head = head
        self.chunk = chunk
        self.n_slots = chunk * action_dim

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        length = inputs_embeds.shape[1]
        mask = bidirectional_mask(length, length, inputs_embeds.device)
        hidden = slot_slice(self.core.hidden_all(inputs_embeds, mask), self.n_slots)
        if self.head is None:
            return self.core.logits(hidden).argmax(dim=-1)
        return self.head(hidden, self.chunk).float()
