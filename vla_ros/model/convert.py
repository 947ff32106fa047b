"""`vla-ros convert SRC DST --preset libero|aloha|bridge`: an OpenVLA-OFT release or training directory
-> a vla_ros checkpoint (safetensors only + vla_settings.json).

SRC holds the merged VLA (HF safetensors, config.json, tokenizer, dataset_statistics.json) and OFT's
component files `action_head--*checkpoint.pt`, `proprio_projector--*checkpoint.pt` and, for FiLM,
`vision_backbone--*checkpoint.pt`. The .pt files are read here only, with
`torch.load(weights_only=True)` (a restricted unpickler: tensors and containers, nothing executable);
DDP's `module.` prefix is stripped; the FiLM towers' unmerged vision LoRA is merged in float32
(W + alpha/r * B @ A, alpha = min(r, 16)). DST gets the original shards (hard links when possible),
`oft_components.safetensors` and an index pointing every key to its file, so the run time reads
safetensors only. Settings are checked against the tensor shapes before anything is written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from vla_ros.model.loader import INDEX_FILE, SINGLE_FILE, check_settings, scan_shards
from vla_ros.model.settings import PRESETS, VlaSettings, preset, write_settings
from vla_ros.model.spec import CheckpointError, VlaSpec, read_json

COMPONENTS_FILE = "oft_components.safetensors"
COMPONENTS = {"action_head": "action_head.", "proprio_projector": "proprio_projector."}
FILM_FILE = "vision_backbone"
SIDE_FILES = ("config.json", "dataset_statistics.json", "tokenizer.json", "tokenizer.model",
              "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
              "preprocessor_config.json", "generation_config.json")
TOWERS = ("featurizer", "fused_featurizer")


def find_component(src: Path, name: str) -> Path | None:
    """OFT's lookup: the one .pt file whose name holds `name` and "checkpoint" (None if there is none)."""
    found = sorted(p for p in src.iterdir()
                   if p.suffix == ".pt" and name in p.name and "checkpoint" in p.name)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise CheckpointError(f"{src}: several {name} checkpoints ({names}); keep one")
    return found[0] if found else None


def load_pt(path: Path) -> dict[str, torch.Tensor]:
    """A .pt state dict through the restricted unpickler, `module.` stripped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything but tensors/containers, zip errors, ...
        raise CheckpointError(f"{path.name}: cannot load as a weights-only state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def merge_film_backbone(state: dict[str, torch.Tensor], lora_rank: int) -> dict[str, torch.Tensor]:
    """OFT's FiLM backbone file -> released-layout tower keys (LoRA merged, FiLM as `film.<i>.*`)."""
    scale = min(lora_rank, 16) / lora_rank if lora_rank else 0.0
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if ".lora_A." in key or ".lora_B." in key:
            continue
        name = key.replace(".base_layer.", ".")
        base = key.rsplit(".", 1)[0]
        if ".base_layer." in key and key.endswith(".weight"):
            a = state.get(base.replace(".base_layer", ".lora_A.default") + ".weight")
            b = state.get(base.replace(".base_layer", ".lora_B.default") + ".weight")
            if a is None or b is None:
                raise CheckpointError(f"FiLM file: {key} has no lora_A/lora_B pair")
            if a.shape[0] != lora_rank:
                raise CheckpointError(f"FiLM file: LoRA rank is {a.shape[0]} ({base}), the settings say "
                                      f"lora_rank {lora_rank}: pass --lora-rank {a.shape[0]}")
            tensor = tensor.float() + scale * lora_delta(a, b, tensor.shape, key)
        out[_film_key(name)] = tensor.contiguous()
    return out


def lora_delta(a: torch.Tensor, b: torch.Tensor, shape: torch.Size, key: str) -> torch.Tensor:
    """B @ A in float32, shaped as the base weight: Linear ([out, r] @ [r, in]) or Conv2d (A [r, in, k, k],
    B [out, r, 1, 1], as PEFT wraps OFT's patch embeddings)."""
    delta = b.float().flatten(1) @ a.float().flatten(1)
    if delta.numel() != math.prod(shape):
        raise CheckpointError(f"FiLM file: LoRA of {key} has shapes A {list(a.shape)}, B {list(b.shape)}; "
                              f"they do not fit the weight {list(shape)}")
    return delta.reshape(shape)


def _film_key(key: str) -> str:
    """`...blocks.<i>.block.X` -> `...blocks.<i>.X`; `...blocks.<i>.scale.W` -> `...film.<i>.scale.W`."""
    parts = key.split(".")
    if "blocks" in parts:
        i = parts.index("blocks")
        rest = parts[i + 2:]
        if rest and rest[0] == "block":
            return ".".join(parts[:i + 2] + rest[1:])
        if rest and rest[0] in ("scale", "shift"):
            return ".".join(parts[:i] + ["film"] + parts[i + 1:])
    return key


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def convert(src: Path, dst: Path, settings: VlaSettings, log=print) -> VlaSettings:
    """Write the converted checkpoint to `dst` (must not exist or be empty); returns the settings written."""
    t0 = time.perf_counter()
    if not (src / "config.json").is_file():
        raise CheckpointError(f"{src}: no config.json (an OFT release or training directory has the merged "
                              f"VLA next to the action_head--*.pt files)")
    if dst.exists() and any(dst.iterdir()):
        raise CheckpointError(f"{dst} exists and is not empty")
    spec = VlaSpec.from_dir(src)
    found = scan_shards(src)
    components: dict[str, torch.Tensor] = {}
    for name, prefix in COMPONENTS.items():
        path = find_component(src, name)
        if path is not None:
            log(f"[convert] {path.name}")
            components.update({prefix + k: v.contiguous() for k, v in load_pt(path).items()})
    if settings.proprio_dim == 0 and any(k.startswith("proprio_projector.") for k in components):
        log("[convert] WARNING: proprio_dim 0 drops the trained proprio projector: the model then runs "
            "without the token it was trained with")
        components = {k: v for k, v in components.items() if not k.startswith("proprio_projector.")}
    if any(k.startswith("action_head.noise_predictor.") for k in components):
        raise CheckpointError("the action head is OFT's diffusion head (noise_predictor.*), which is not "
                              "supported (one full LLM pass per denoising step): convert an L1-regression or "
                              "discrete release")
    film_path = find_component(src, FILM_FILE)
    if settings.film:
        if film_path is None:
            raise CheckpointError("film is on but the source has no vision_backbone--*checkpoint.pt")
        log(f"[convert] {film_path.name}: merging the vision LoRA (rank {settings.lora_rank})")
        film = merge_film_backbone(load_pt(film_path), settings.lora_rank)
        components.update({k: v for k, v in film.items() if k.startswith(tuple(f"vision_backbone.{t}."
                                                                                for t in TOWERS))})
    elif film_path is not None:
        raise CheckpointError(f"{film_path.name} is present but film is off (use --film or the aloha preset)")
    check_settings(settings, {k: (COMPONENTS_FILE, tuple(v.shape)) for k, v in components.items()}, spec)
    dst.mkdir(parents=True, exist_ok=True)
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    shards = sorted({file for file, _ in found.values()})
    for i, file in enumerate(shards):
        log(f"[convert] shard {i + 1}/{len(shards)}: {file}")
        _link_or_copy(src / file, dst / file)
    save_file(components, str(dst / COMPONENTS_FILE), metadata={"format": "pt", "source": str(src)})
    weight_map = {k: file for k, (file, _) in found.items() if k not in components}
    weight_map.update({k: COMPONENTS_FILE for k in components})
    (dst / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    if (dst / SINGLE_FILE).exists() and SINGLE_FILE not in shards:
        (dst / SINGLE_FILE).unlink()
    source = {"path": str(src.resolve()), "components": sorted({k.split(".")[0] for k in components})}
    written = replace(settings, source=source)
    write_settings(dst, written)
    log(f"[convert] wrote {dst} in {time.perf_counter() - t0:.1f} s: {len(components)} component tensors")
    return written


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-ros convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="OFT release or training directory")
    p.add_argument("dst", type=Path, help="output directory (new or empty)")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), help="OFT's platform constants")
    p.add_argument("--chunk", type=int, help="actions per chunk (libero 8, aloha 25, bridge 5)")
    p.add_argument("--action-dim", type=int, help="action dimensions (libero/bridge 7, aloha 14)")
    p.add_argument("--images", type=int, help="cameras: primary first, then wrist camera(s)")
    p.add_argument("--proprio-dim", type=int, help="proprio values (0 = no proprio token)")
    p.add_argument("--normalization", choices=("q99", "minmax"), help="bounds: q01/q99 or min/max")
    p.add_argument("--lora-rank", type=int, help="rank of the FiLM vision LoRA (training's --lora_rank)")
    p.add_argument("--film", action=argparse.BooleanOptionalAction, default=None, help="FiLM on the towers")
    p.add_argument("--action-head", choices=("l1_regression", "discrete"), help="action representation")
    p.add_argument("--unnorm-key", help="dataset key of dataset_statistics.json (default: the only one)")
    return p


def _cameras(images: int | None, base: VlaSettings) -> tuple[str, ...] | None:
    if images is None:
        return None
    if images < 1:
        raise CheckpointError(f"--images must be >= 1, got {images}")
    names = list(base.cameras[:images]) + [f"wrist{i}" for i in range(len(base.cameras), images)]
    return tuple(names)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        base = PRESETS[args.preset]
        settings = preset(args.preset, chunk=args.chunk, action_dim=args.action_dim,
                          proprio_dim=args.proprio_dim, normalization=args.normalization,
                          lora_rank=args.lora_rank, film=args.film, action_head=args.action_head,
                          cameras=_cameras(args.images, base), unnorm_key=args.unnorm_key)
        stats_file = args.src / "dataset_statistics.json"
        if not settings.unnorm_key and stats_file.is_file():
            keys = sorted(read_json(stats_file))
            if len(keys) == 1:
                settings = replace(settings, unnorm_key=keys[0])
        convert(args.src, args.dst, settings)
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"vla-ros convert: {exc}", file=sys.stderr)
        return 1
    return 0
