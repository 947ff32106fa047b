"""Tiny random OpenVLA-OFT release directories, laid out as OFT's training code writes them (test fixtures).

The merged VLA is a tiny OpenVLA checkpoint (`tiny.write_tiny_checkpoint`); next to it go OFT's
component files as torch.save'd state dicts with DDP's `module.` prefix
(`action_head--100_checkpoint.pt`, `proprio_projector--100_checkpoint.pt`) and, for the ALOHA form,
the whole FiLM-wrapped backbone `vision_backbone--100_checkpoint.pt` (no prefix; tower Linears and
the patch embedding's Conv2d as PEFT LoRA `base_layer` + `lora_A.default` + `lora_B.default`, FiLM as
`blocks.<i>.scale/shift`, block weights under `blocks.<i>.block.`), plus `dataset_statistics.json` with
action and proprio statistics. `vla-ros convert` turns such a directory into a loadable checkpoint.

    write_tiny_oft_release("/tmp/oft", form="libero")   # 2 cameras, proprio 8, chunk 8, A 7, q99
    write_tiny_oft_release("/tmp/oft", form="aloha")    # 3 cameras, proprio 14, chunk 25, A 14, FiLM
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from vla_ros.model.oft import L1RegressionHead, ProprioProjector
from vla_ros.model.settings import PRESETS
from vla_ros.model.spec import VlaSpec
from vla_ros.model.tiny import write_tiny_checkpoint

STEP = 100
FORMS = {"libero": ("libero_spatial_no_noops", 7), "aloha": ("aloha_fixture", 14)}


def _stats(action_dim: int, proprio_dim: int, gripper_unmasked: bool, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed + 7)
    low = (-0.2 - torch.rand(action_dim, generator=gen)).tolist()
    high = (0.2 + torch.rand(action_dim, generator=gen)).tolist()
    plow = (-1.0 - torch.rand(proprio_dim, generator=gen)).tolist()
    phigh = (1.0 + torch.rand(proprio_dim, generator=gen)).tolist()
    mask = [True] * action_dim
    if gripper_unmasked:
        mask[-1] = False

    def entry(lo: list[float], hi: list[float]) -> dict:
        return {"q01": lo, "q99": hi, "min": [1.5 * v for v in lo], "max": [1.5 * v for v in hi],
                "mean": [(a + b) / 2 for a, b in zip(lo, hi)], "std": [(b - a) / 4 for a, b in zip(lo, hi)]}

    return {"action": {**entry(low, high), "mask": mask}, "proprio": entry(plow, phigh),
            "num_transitions": 1000, "num_trajectories": 10}


@torch.no_grad()
def _random_state(module: torch.nn.Module, gen: torch.Generator, prefix: str = "") -> dict[str, torch.Tensor]:
    """Weights with unit-variance activations (so every input matters), as a state dict."""
    out = {}
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            value = torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1])
        elif "norm" in name and name.endswith("weight"):
            value = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
        else:
            value = 0.1 * torch.randn(p.shape, generator=gen)
        out[prefix + name] = value
    return out


def _film_backbone(path: Path, spec: VlaSpec, rank: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """OFT's FiLM-wrapped backbone state dict from the merged towers of the base checkpoint."""
    from safetensors.torch import load_file

    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    towers: dict[str, torch.Tensor] = {}
    for file in sorted(set(index.values())):
        towers.update({k: v.float() for k, v in load_file(str(path / file)).items()
                       if k.startswith("vision_backbone.")})
    out: dict[str, torch.Tensor] = {}
    for name, value in towers.items():
        key, parts = name, name.split(".")
        if "blocks" in parts:  # vision_backbone.<tower>.blocks.<i>.<rest> -> ...blocks.<i>.block.<rest>
            i = parts.index("blocks")
            key = ".".join(parts[:i + 2] + ["block"] + parts[i + 2:])
        if key.endswith(".weight") and value.ndim in (2, 4):  # Linear or Conv2d (patch_embed): PEFT LoRA
            base = key[:-len(".weight")]
            out[base + ".base_layer.weight"] = value
            a_shape = (rank, *value.shape[1:])  # conv: A [r, in, k, k], B [out, r, 1, 1]
            b_shape = (value.shape[0], rank) + (1, 1) * (value.ndim == 4)
            out[base + ".lora_A.default.weight"] = torch.randn(a_shape, generator=gen) * 0.2
            out[base + ".lora_B.default.weight"] = torch.randn(b_shape, generator=gen) * 0.2
        elif key.endswith(".bias") and getattr(towers.get(name[:-5] + ".weight"), "ndim", 0) in (2, 4):
            out[key[:-len(".bias")] + ".base_layer.bias"] = value
        else:
            out[key] = value
    d = spec.llm_hidden
    for t, tower in enumerate(("featurizer", "fused_featurizer")):
        tower_spec = spec.tower_specs[t]
        for i in range(tower_spec.depth):
            for name in ("scale", "shift"):
                pre = f"vision_backbone.{tower}.blocks.{i}.{name}."
                out[pre + "weight"] = torch.randn(tower_spec.embed_dim, d, generator=gen) * 0.3 / math.sqrt(d)
                out[pre + "bias"] = torch.randn(tower_spec.embed_dim, generator=gen) * 0.1
    return out


def write_tiny_oft_release(path: str | Path, form: str = "libero", seed: int = 0, lora_rank: int = 4,
                           **tiny_kwargs) -> Path:
    """Write a random OFT release directory of `form` (libero or aloha) and return it."""
    path = Path(path)
    key, action_dim = FORMS[form]
    settings = PRESETS[form]
    write_tiny_checkpoint(path, seed=seed, dataset_keys=(key,), **tiny_kwargs)
    spec = VlaSpec.from_dir(path)
    gen = torch.Generator().manual_seed(seed + 1)
    head = _random_state(L1RegressionHead(spec.llm_hidden, action_dim), gen, "module.")
    torch.save(head, path / f"action_head--{STEP}_checkpoint.pt")
    proprio = _random_state(ProprioProjector(spec.llm_hidden, settings.proprio_dim), gen, "module.")
    torch.save(proprio, path / f"proprio_projector--{STEP}_checkpoint.pt")
    if settings.film:
        film = _film_backbone(path, spec, lora_rank, gen)
        torch.save(film, path / f"vision_backbone--{STEP}_checkpoint.pt")
    stats = {key: _stats(action_dim, settings.proprio_dim, form == "libero", seed)}
    (path / "dataset_statistics.json").write_text(json.dumps(stats, indent=2))
    return path
