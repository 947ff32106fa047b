"""Load an OpenVLA-layout checkpoint directory: config.json, safetensors shards, tokenizer, statistics.

Safetensors only (never pickle), never remote code. Every key and shape is checked against the model
(built on the meta device, so no memory and no random init) BEFORE a byte of weights is read; then
the model is allocated once in the target dtype/device and filled tensor by tensor, shard by shard:
peak memory is the model plus one tensor. Released tower weights the truncated towers do not use
(last block, final norm, SigLIP's attention pool) are skipped; LayerScale `scale_factor` is renamed
to timm's `gamma`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from vla_ros.model.action_tokenizer import ActionTokenizer
from vla_ros.model.families import Family, resolve_family
from vla_ros.model.preprocess import PreprocessSpec
from vla_ros.model.settings import VlaSettings, read_settings
from vla_ros.model.spec import CheckpointError, VlaSpec, read_json
from vla_ros.model.tokenizer import TextTokenizer
from vla_ros.model.vision import is_dead_tower_key, released_to_module_key
from vla_ros.model.vla import VlaModel

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
MAX_LISTED = 8  # keys listed in an error message
REOPEN_BYTES = 256 << 20


@dataclass
class LoadedVla:
    """Everything a policy needs from a checkpoint."""

    path: Path
    spec: VlaSpec
    family: Family
    model: VlaModel
    tokenizer: TextTokenizer
    action_tokenizer: ActionTokenizer
    norm_stats: dict
    preprocess: PreprocessSpec
    dtype: str
    device: str
    settings: VlaSettings = field(default_factory=VlaSettings)


def _listing(keys: list[str] | set[str]) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


def shard_map(path: Path) -> dict[str, list[str]]:
    """Shard file name -> checkpoint keys, from the index (or the single model.safetensors)."""
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: cannot parse the shard index: {exc}") from exc
        shards: dict[str, list[str]] = defaultdict(list)
        for key, file in weight_map.items():
            shards[str(file)].append(key)
        missing = [f for f in shards if not (path / f).is_file()]
        if missing:
            raise CheckpointError(f"{path}: shard(s) listed in {INDEX_FILE} are missing: "
                                  f"{', '.join(missing)} ({sum(len(shards[f]) for f in missing)} tensors); "
                                  f"re-download them")
        return dict(shards)
    if (path / SINGLE_FILE).is_file():
        return {SINGLE_FILE: []}  # keys read from the file itself
    pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
    hint = f" (found {', '.join(pickles)}: pickle checkpoints are not loaded, convert to safetensors)" \
        if pickles else ""
    raise CheckpointError(f"{path}: no {INDEX_FILE} or {SINGLE_FILE}{hint}")


def _open_shard(file: Path):
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError / OSError for corrupt headers
        raise CheckpointError(f"shard {file.name} is corrupt or truncated: {exc}") from exc


def scan_shards(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Checkpoint key -> (shard file, shape), reading only the safetensors headers."""
    found: dict[str, tuple[str, tuple[int, ...]]] = {}
    for file, listed in shard_map(path).items():
        with _open_shard(path / file) as f:
            keys = set(f.keys())
            absent = set(listed) - keys
            if absent:
                raise CheckpointError(f"shard {file} lacks tensors its index lists: {_listing(absent)}")
            for key in (listed or keys):  # the index decides (a converted FiLM checkpoint re-points towers)
                if key in found:
                    raise CheckpointError(f"tensor {key} is in two shards: {found[key][0]} and {file}")
                found[key] = (file, tuple(f.get_slice(key).get_shape()))
    return found


def _is_ignorable(key: str, cfg: VlaSpec, tied: bool) -> bool:
    """Checkpoint tensors that exist in released files but that this model does not use."""
    if is_dead_tower_key(key, cfg) or key.endswith("rotary_emb.inv_freq"):
        return True
    return tied and key == "language_model.lm_head.weight"


def check_keys(model_shapes: dict[str, tuple[int, ...]], found: dict[str, tuple[str, tuple[int, ...]]],
               cfg: VlaSpec, tied: bool) -> dict[str, str]:
    """Match checkpoint keys to module keys; raise on missing/unexpected keys and shape mismatches.

    Returns module key -> checkpoint key.
    """
    mapping: dict[str, str] = {}
    unexpected = []
    for ckpt_key in found:
        if _is_ignorable(ckpt_key, cfg, tied):
            continue
        module_key = released_to_module_key(ckpt_key)
        if module_key in mapping:
            raise CheckpointError(f"tensors {mapping[module_key]} and {ckpt_key} both load into {module_key}")
        if module_key in model_shapes:
            mapping[module_key] = ckpt_key
        else:
            unexpected.append(ckpt_key)
    missing = set(model_shapes) - set(mapping)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if problems:
        raise CheckpointError("checkpoint does not match config.json: " + "; ".join(problems))
    wrong = [f"{ck} is {list(found[ck][1])} in {found[ck][0]}, the model needs {list(model_shapes[mk])}"
             for mk, ck in mapping.items() if tuple(found[ck][1]) != tuple(model_shapes[mk])]
    if wrong:
        raise CheckpointError(f"shape mismatch in {len(wrong)} tensor(s) (config.json and weights disagree): "
                              + "; ".join(wrong[:MAX_LISTED]))
    return mapping


def build_meta_model(cfg: VlaSpec, family: Family, settings: VlaSettings | None = None) -> VlaModel:
    """The model with parameters on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return VlaModel(cfg, family.llm_class(cfg.llm_model_type), settings=settings)


def check_settings(settings: VlaSettings, found: dict[str, tuple[str, tuple[int, ...]]], cfg: VlaSpec
                   ) -> None:
    """The settings against the tensor shapes: a wrong preset is an error naming the mismatch (the chunk
    length and the camera count appear in no tensor, so they cannot be checked here)."""
    d = cfg.llm_hidden
    head = found.get("action_head.model.fc1.weight")
    if settings.action_head == "l1_regression":
        if head is None:
            raise CheckpointError("action_head 'l1_regression' but there is no action head (the source needs "
                                  "an action_head--*checkpoint.pt; or use --action-head discrete)")
        inputs = head[1][1]
        if inputs != d * settings.action_dim:
            raise CheckpointError(f"action_dim {settings.action_dim} does not match the action head: it "
                                  f"takes {inputs} = {inputs / d:g} x {d} inputs, i.e. action_dim "
                                  f"{inputs / d:g} (wrong --preset or --action-dim?)")
    elif head is not None:
        raise CheckpointError(f"action_head {settings.action_head!r} but the checkpoint has an L1-regression "
                              f"action head")
    proprio = found.get("proprio_projector.fc1.weight")
    if settings.proprio_dim and proprio is None:
        raise CheckpointError(f"proprio_dim {settings.proprio_dim} but there is no proprio projector (the "
                              f"source needs a proprio_projector--*checkpoint.pt; or use --proprio-dim 0)")
    if proprio is not None and proprio[1][1] != settings.proprio_dim:
        raise CheckpointError(f"proprio_dim {settings.proprio_dim} does not match the proprio projector, "
                              f"which takes {proprio[1][1]} (wrong --preset or --proprio-dim?)")
    has_film = any(".film." in k for k in found)
    if has_film != settings.film:
        raise CheckpointError(f"film {settings.film}, but the checkpoint {'has' if has_film else 'has no'} "
                              f"FiLM tensors")


def _materialize(model: VlaModel, dtype: torch.dtype, device: str) -> None:
    """Allocate the meta model on `device` in `dtype` (uninitialized) and rebuild non-persistent buffers."""
    model.to(dtype=dtype)
    model.to_empty(device=device)
    lm = model.language_model
    rotary = lm.model.rotary_emb
    with torch.device(device):
        lm.model.rotary_emb = type(rotary)(config=lm.config)
    if model.tied_embeddings:
        lm.lm_head.weight = lm.model.embed_tokens.weight


def load_weights(model: VlaModel, path: Path, mapping: dict[str, str],
                 found: dict[str, tuple[str, tuple[int, ...]]]) -> None:
    """Copy checkpoint tensors into the allocated model, one tensor at a time, shard by shard."""
    targets = dict(model.named_parameters())
    targets.update(dict(model.named_buffers()))
    by_shard: dict[str, list[str]] = defaultdict(list)
    for module_key, ckpt_key in mapping.items():
        by_shard[found[ckpt_key][0]].append(module_key)
    with torch.no_grad():
        for file, module_keys in sorted(by_shard.items()):
            # Reopen the shard every REOPEN_BYTES: pages read through the memory map stay resident
            # (and count as RSS) until the file is closed, which would add up to a whole shard.
            for group in _byte_groups(module_keys, targets, REOPEN_BYTES):
                with _open_shard(path / file) as f:
                    for module_key in group:
                        try:
                            tensor = f.get_tensor(mapping[module_key])
                        except Exception as exc:
                            raise CheckpointError(f"shard {file}: cannot read {mapping[module_key]}: "
                                                  f"{exc}") from exc
                        targets[module_key].copy_(tensor)
                        del tensor


def _byte_groups(keys: list[str], targets: dict[str, torch.Tensor], limit: int) -> list[list[str]]:
    """Split keys into consecutive groups of about `limit` bytes (by the target tensors' sizes)."""
    groups: list[list[str]] = [[]]
    size = 0
    for key in keys:
        n = targets[key].numel() * targets[key].element_size()
        if groups[-1] and size + n > limit:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += n
    return groups


def read_norm_stats(path: Path, cfg: VlaSpec) -> dict:
    """config.json norm_stats, updated by dataset_statistics.json when present (fine-tunes)."""
    stats = dict(cfg.norm_stats)
    extra = path / "dataset_statistics.json"
    if extra.is_file():
        data = read_json(extra)
        if not isinstance(data, dict):
            raise CheckpointError(f"{extra}: must hold an object keyed by dataset name")
        stats.update(data)
    return stats


def read_preprocess(path: Path, cfg: VlaSpec, center_crop: bool = False, resize: str = "auto"
                    ) -> PreprocessSpec:
    """Per-tower mean/std from preprocessor_config.json (released: bf16-rounded), else the towers'."""
    means = [s.mean for s in cfg.tower_specs]
    stds = [s.std for s in cfg.tower_specs]
    file = path / "preprocessor_config.json"
    if file.is_file():
        pre = read_json(file)
        params = pre.get("tvf_normalize_params")
        if isinstance(params, list) and len(params) == cfg.n_towers:
            means = [tuple(p["mean"]) for p in params]
            stds = [tuple(p["std"]) for p in params]
        elif isinstance(pre.get("means"), list) and len(pre["means"]) == cfg.n_towers:
            means, stds = [tuple(m) for m in pre["means"]], [tuple(s) for s in pre["stds"]]
        strategy = pre.get("image_resize_strategy", cfg.image_resize_strategy)
        if strategy != cfg.image_resize_strategy:
            raise CheckpointError(f"{file}: image_resize_strategy {strategy!r} disagrees with config.json")
        sizes = pre.get("input_sizes")
        if isinstance(sizes, list) and any(list(s)[-2:] != [cfg.image_size] * 2 for s in sizes):
            raise CheckpointError(f"{file}: input_sizes {sizes} disagree with image_sizes {cfg.image_sizes}")
    try:
        return PreprocessSpec(image_size=cfg.image_size,
                                means=tuple(tuple(float(v) for v in m) for m in means),
                                stds=tuple(tuple(float(v) for v in s) for s in stds),
                                center_crop=center_crop, resize=resize)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: bad image normalization values: {exc}") from exc


def load_vla(path: str | Path, dtype: str = "fp32", device: str = "cpu", family: str | None = None,
             center_crop: bool = False, resize: str = "auto") -> LoadedVla:
    """Load a checkpoint directory (OpenVLA HF layout) into an eval-mode model plus its tokenizers."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} requested but CUDA is not available")
    cfg = VlaSpec.from_dir(path)
    settings = read_settings(path)
    fam = resolve_family(cfg, family or (settings.family if settings.parallel else None))
    tokenizer = TextTokenizer(path)
    action_tokenizer = fam.action_tokenizer(cfg, tokenizer)
    model = build_meta_model(cfg, fam, settings)
    tied = model.tied_embeddings
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()
              if not (tied and k == "language_model.lm_head.weight")}
    found = scan_shards(path)
    check_settings(settings, found, cfg)
    mapping = check_keys(shapes, found, cfg, tied)
    _materialize(model, DTYPES[dtype], device)
    load_weights(model, path, mapping, found)
    model.eval().requires_grad_(False)
    model.core.refresh_rope()
    return LoadedVla(path=path, spec=cfg, family=fam, model=model, tokenizer=tokenizer,
                     action_tokenizer=action_tokenizer, norm_stats=read_norm_stats(path, cfg),
                     preprocess=read_preprocess(path, cfg, center_crop, resize), dtype=dtype, device=device,
                     settings=settings)
