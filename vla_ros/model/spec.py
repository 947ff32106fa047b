"""A checkpoint's config.json (OpenVLA HF layout) as a typed, validated dataclass.

The released OpenVLA config.json names its vision towers by timm model ids; their shapes come from
`KNOWN_TOWERS`. Checkpoints written by `vla_ros.model.tiny` (and any checkpoint with towers timm does
not know by name) carry the shapes explicitly in an extra `tower_specs` list.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete, corrupt, inconsistent or of an unknown kind."""


def read_json(file: Path) -> Any:
    """A checkpoint JSON file's content; CheckpointError naming the file when it cannot be parsed."""
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{file}: cannot parse: {exc}") from exc


@dataclass(frozen=True)
class TowerSpec:
    """Shape of one timm ViT tower as released (full depth; the loader builds depth - 1 blocks)."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    patch_size: int = 14
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False  # position embeddings cover the patches only (DINOv2 with registers)
    layer_scale: bool = False  # LayerScale `gamma` (released as `scale_factor`)
    pool: str = ""  # "map": the released tower has an attention-pool head (SigLIP); never used
    act: str = "gelu"  # timm activation name; SigLIP uses exact GELU
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TowerSpec:
        """Build from a JSON object (unknown keys are an error, so typos do not pass silently)."""
        names = set(TowerSpec.__dataclass_fields__)
        unknown = set(d) - names
        if unknown:
            raise CheckpointError(f"tower_specs: unknown keys {sorted(unknown)}; allowed: {sorted(names)}")
        values = dict(d)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return TowerSpec(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


_DINOV2_L_REG4 = TowerSpec(embed_dim=1024, depth=24, num_heads=16, mlp_hidden=4096, patch_size=14,
                           class_token=True, reg_tokens=4, no_embed_class=True, layer_scale=True)
_SIGLIP_SO400M = TowerSpec(embed_dim=1152, depth=27, num_heads=16, mlp_hidden=4304, patch_size=14,
                           class_token=False, pool="map", mean=SIGLIP_MEAN, std=SIGLIP_STD)

# timm model id (without the pretrained tag after the dot) -> released tower shape.
KNOWN_TOWERS: dict[str, TowerSpec] = {
    "vit_large_patch14_reg4_dinov2": _DINOV2_L_REG4,
    "vit_so400m_patch14_siglip_224": _SIGLIP_SO400M,
    "vit_so400m_patch14_siglip_384": _SIGLIP_SO400M,
}

SUPPORTED_RESIZE_STRATEGIES = ("resize-naive",)


@dataclass
class VlaSpec:
    """The fields of config.json the model needs, validated."""

    timm_model_ids: list[str]
    tower_specs: list[TowerSpec]
    image_sizes: list[int]
    text_config: dict[str, Any]
    use_fused_vision_backbone: bool = True
    timm_override_act_layers: list[str | None] = field(default_factory=list)
    vision_backbone_id: str = ""
    image_resize_strategy: str = "resize-naive"
    llm_backbone_id: str = ""
    arch_specifier: str = ""
    n_action_bins: int = 256
    pad_token_id: int | None = None
    pad_to_multiple_of: int = 0
    norm_stats: dict[str, Any] = field(default_factory=dict)
    family: str = ""  # explicit family name ("vla_family" in config.json); empty = inferred
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n_towers(self) -> int:
        return len(self.tower_specs)

    @property
    def image_size(self) -> int:
        return self.image_sizes[0]

    @property
    def vision_dim(self) -> int:
        """Channels of the concatenated per-patch features (2176 for DINOv2-L + SigLIP-SO400M)."""
        return sum(s.embed_dim for s in self.tower_specs)

    @property
    def num_patches(self) -> int:
        grid = self.image_size // self.tower_specs[0].patch_size
        return grid * grid

    @property
    def llm_hidden(self) -> int:
        return int(self.text_config["hidden_size"])

    @property
    def llm_model_type(self) -> str:
        return str(self.text_config.get("model_type", ""))

    @property
    def padded_vocab_size(self) -> int:
        return int(self.text_config["vocab_size"])

    @staticmethod
    def from_dict(d: dict[str, Any]) -> VlaSpec:
        """Validate a parsed config.json."""
        if not isinstance(d, dict):
            raise CheckpointError("config.json must hold a JSON object")
        ids = d.get("timm_model_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise CheckpointError("config.json: 'timm_model_ids' must be a non-empty list of timm model ids")
        backbone_id = str(d.get("vision_backbone_id", ""))
        fused = d.get("use_fused_vision_backbone")
        if fused is None:  # OpenVLA infers it from the backbone id
            fused = backbone_id.startswith(("dinosiglip", "dinoclip"))
        n_towers = 2 if fused else 1
        if len(ids) != n_towers:
            raise CheckpointError(f"config.json: use_fused_vision_backbone={bool(fused)} needs {n_towers} "
                                  f"timm_model_ids, got {len(ids)}: {ids}")
        specs = _tower_specs(d, ids)
        sizes = d.get("image_sizes", [224] * n_towers)
        if isinstance(sizes, int):
            sizes = [sizes] * n_towers
        if not isinstance(sizes, list) or len(sizes) != n_towers or not all(
                isinstance(s, int) and s > 0 for s in sizes):
            raise CheckpointError(f"config.json: 'image_sizes' must list {n_towers} positive ints, "
                                  f"got {sizes}")
        if len(set(sizes)) != 1:
            raise CheckpointError(f"config.json: the towers must share one image size, got {sizes}")
        grids = {sizes[0] // s.patch_size for s in specs}
        if len(grids) != 1 or min(grids) < 1:
            raise CheckpointError(f"config.json: towers give different patch grids at {sizes[0]} px "
                                  f"(patch sizes {[s.patch_size for s in specs]}); both must match")
        strategy = str(d.get("image_resize_strategy", "resize-naive"))
        if strategy not in SUPPORTED_RESIZE_STRATEGIES:
            raise CheckpointError(f"config.json: image_resize_strategy {strategy!r} is not supported "
                                  f"(supported: {list(SUPPORTED_RESIZE_STRATEGIES)})")
        text_config = d.get("text_config")
        if not isinstance(text_config, dict):
            raise CheckpointError("config.json: 'text_config' (the LLM's transformers config) is missing")
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if not isinstance(text_config.get(key), int) or text_config[key] <= 0:
                raise CheckpointError(f"config.json: text_config.{key} must be a positive int")
        overrides = d.get("timm_override_act_layers") or [None] * n_towers
        if len(overrides) != n_towers:
            raise CheckpointError(f"config.json: timm_override_act_layers needs {n_towers} entries")
        n_bins = d.get("n_action_bins", 256)
        if not isinstance(n_bins, int) or not 2 <= n_bins <= 4096:
            raise CheckpointError(f"config.json: n_action_bins must be an int in [2, 4096], got {n_bins}")
        norm_stats = d.get("norm_stats") or {}
        if not isinstance(norm_stats, dict):
            raise CheckpointError("config.json: 'norm_stats' must be an object keyed by dataset name")
        return VlaSpec(
            timm_model_ids=list(ids), tower_specs=specs, image_sizes=list(sizes),
            text_config=dict(text_config), use_fused_vision_backbone=bool(fused),
            timm_override_act_layers=list(overrides), vision_backbone_id=backbone_id,
            image_resize_strategy=strategy, llm_backbone_id=str(d.get("llm_backbone_id", "")),
            arch_specifier=str(d.get("arch_specifier", "")), n_action_bins=n_bins,
            pad_token_id=d.get("pad_token_id"), pad_to_multiple_of=int(d.get("pad_to_multiple_of") or 0),
            norm_stats=norm_stats, family=str(d.get("vla_family", "")), raw=d)

    @staticmethod
    def from_dir(path: str | Path) -> VlaSpec:
        """Read `path/config.json`."""
        file = Path(path) / "config.json"
        if not file.is_file():
            raise CheckpointError(f"{path}: no config.json (is this an OpenVLA-layout checkpoint directory?)")
        return VlaSpec.from_dict(read_json(file))


def _tower_specs(d: dict[str, Any], ids: list[str]) -> list[TowerSpec]:
    """Explicit `tower_specs` from config.json, else the known shape of each timm id."""
    explicit = d.get("tower_specs")
    if explicit is not None:
        if not isinstance(explicit, list) or len(explicit) != len(ids):
            raise CheckpointError(f"config.json: 'tower_specs' must list {len(ids)} objects")
        return [TowerSpec.from_dict(s) for s in explicit]
    specs = []
    for model_id in ids:
        base = model_id.split(".")[0]
        if base not in KNOWN_TOWERS:
            raise CheckpointError(f"config.json: unknown vision tower {model_id!r}; known: "
                                  f"{sorted(KNOWN_TOWERS)} (or give its shape in 'tower_specs')")
        specs.append(KNOWN_TOWERS[base])
    return specs
