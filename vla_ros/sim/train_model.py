"""The demo model for training: its template checkpoint, the training initialisation, token accuracy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vla_ros.model.tiny import write_tiny_checkpoint
from vla_ros.sim.dataset import DATASET_KEY
from vla_ros.sim.tasks import instruction_corpus
from vla_ros.sim.train_config import TrainConfig


def write_template(cfg: TrainConfig, path: Path) -> Path:
    """A checkpoint of the demo's shape from the model package's factory (its weights are re-initialised).

    Its tokenizer is trained on the demo's instructions, which keeps the prompts short.
    """
    return write_tiny_checkpoint(path, family="openvla", seed=cfg.seed, image_size=cfg.image_size,
                                 tower_dim=cfg.tower_dim, tower_depth=cfg.tower_depth,
                                 tower_heads=cfg.tower_heads, llm_hidden=cfg.llm_hidden,
                                 llm_layers=cfg.llm_layers, llm_heads=cfg.llm_heads,
                                 dataset_keys=(DATASET_KEY,), corpus=instruction_corpus())


def reinitialize(model: nn.Module, seed: int) -> None:
    """Training initialisation: truncated-normal 0.02 linears/embeddings, unit norms, LayerScale 0.1."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif "rmsnorm" in type(module).__name__.lower():
                module.weight.fill_(1.0)
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "pos_embed":
                p.copy_(sincos_position_embedding(p.shape[1], p.shape[2]))
            elif leaf in ("cls_token", "reg_token"):
                nn.init.normal_(p, std=1e-6)
            elif leaf == "gamma":
                p.fill_(0.1)


def sincos_position_embedding(rows: int, dim: int, amplitude: float = 0.5) -> torch.Tensor:
    """2-D sine-cosine position embedding [1, rows, dim] over a square patch grid (a leading class
    row, when rows is one more than a square, gets zeros): coordinates the towers can read at once."""
    grid = int(round(math.sqrt(rows)))
    prefix = rows - grid * grid
    quarter = dim // 4
    omega = 1.0 / 100.0 ** (torch.arange(quarter, dtype=torch.float64) / max(1, quarter))  # [D/4]
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    parts = [f(c.reshape(-1, 1) * omega) for c in (ys, xs) for f in (torch.sin, torch.cos)]  # 4 x [G*G, D/4]
    table = torch.zeros(rows, dim, dtype=torch.float64)
    table[prefix:, :4 * quarter] = torch.cat(parts, dim=1)
    return (amplitude * table)[None].float()


def action_accuracy(logits: torch.Tensor, labels: torch.Tensor, n_patches: int, first_id: int,
                    end_id: int) -> np.ndarray:
    """Per action dimension [7], the share of tokens predicted exactly (argmax over the action ids)
    under teacher forcing."""
    ignore = torch.full((labels.shape[0], n_patches), -100, dtype=labels.dtype)
    full = torch.cat([labels[:, :1], ignore, labels[:, 1:]], dim=1)[:, 1:]
    predicted = logits[:, :-1, first_id:end_id].argmax(-1) + first_id
    where = full != -100
    hits = (predicted[where] == full[where]).float().reshape(labels.shape[0], -1)  # [B, 7]
    return hits.mean(0).numpy()
