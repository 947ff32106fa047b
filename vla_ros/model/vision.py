"""The vision towers: timm ViTs truncated to the features OpenVLA uses.

OpenVLA takes the output of the SECOND-TO-LAST block of each tower (timm
`get_intermediate_layers(n={depth - 2})`), without the final norm, and drops the prefix
(class/register) tokens. So each tower here is built with depth - 1 blocks, no final norm and no
pooling head: the dead work is not in the module, nor in any graph exported from it.
"""

from __future__ import annotations

import torch
from timm.layers import get_act_layer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vla_ros.model.oft import film_block, film_layers
from vla_ros.model.spec import TowerSpec, VlaSpec

# Checkpoint key suffixes of the released towers that the truncated towers do not have.
DEAD_TOWER_PARTS = ("norm.", "fc_norm.", "attn_pool.", "head.")

# Released checkpoints store LayerScale's `gamma` as `scale_factor` (HF's loader renames `gamma`).
RELEASED_LAYERSCALE = ".scale_factor"
TIMM_LAYERSCALE = ".gamma"


def vit_kwargs(spec: TowerSpec, image_size: int, depth: int, act_override: str | None = None) -> dict:
    """Keyword arguments of timm's VisionTransformer for a tower of `depth` blocks."""
    mlp_ratio = spec.mlp_hidden / spec.embed_dim
    if int(spec.embed_dim * mlp_ratio) != spec.mlp_hidden:  # timm floors dim * ratio
        mlp_ratio += 1e-9
    act_name = act_override or spec.act
    act_layer = nn.GELU if act_name == "gelu" else get_act_layer(act_name)
    return dict(
        img_size=image_size, patch_size=spec.patch_size, embed_dim=spec.embed_dim, depth=depth,
        num_heads=spec.num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
        init_values=1e-5 if spec.layer_scale else None, class_token=spec.class_token,
        reg_tokens=spec.reg_tokens, no_embed_class=spec.no_embed_class, num_classes=0,
        act_layer=act_layer, dynamic_img_size=False)


class TruncatedViT(VisionTransformer):
    """A timm ViT with depth - 1 blocks: patch features of the second-to-last block, prefix dropped.

    Parameter names are timm's, so released tower weights load by name (after `scale_factor` ->
    `gamma`). forward: pixels [B, 3, H, W] -> features [B, P, C] with P = (H / patch)^2.
    """

    def __init__(self, spec: TowerSpec, image_size: int, act_override: str | None = None,
                 film_dim: int = 0) -> None:
        super().__init__(global_pool="", final_norm=False,
                         **vit_kwargs(spec, image_size, spec.depth - 1, act_override))
        self.spec = spec
        self.film = film_layers(len(self.blocks), film_dim, spec.embed_dim) if film_dim else None

    def forward(self, pixels: torch.Tensor, condition: torch.Tensor | None = None  # type: ignore[override]
                ) -> torch.Tensor:
        """`condition` [B, D_llm]: FiLM's vector (towers built with `film_dim` only)."""
        x = self.patch_embed(pixels)
        x = self._pos_embed(x)
        x = self.norm_pre(x)
        if self.film is None:
            x = self.blocks(x)
        else:
            for block, film in zip(self.blocks, self.film):
                x = film_block(block, film, x, condition)
        return x[:, self.num_prefix_tokens:]


def full_tower(spec: TowerSpec, image_size: int, act_override: str | None = None) -> VisionTransformer:
    """The tower as released (all blocks, final norm, SigLIP's attention pool): for checkpoints and checks."""
    pool = "map" if spec.pool == "map" else ("token" if spec.class_token else "avg")
    return VisionTransformer(global_pool=pool, **vit_kwargs(spec, image_size, spec.depth, act_override))


class VisionBackbone(nn.Module):
    """One or two towers; per-patch concatenation of their features.

    forward: pixel_values [B, 3 * n_towers, H, W] (tower i takes channels 3i..3i+2, each normalized
    with its own mean/std) -> [B, P, sum of tower dims].
    """

    def __init__(self, cfg: VlaSpec, film: bool = False) -> None:
        super().__init__()
        acts = cfg.timm_override_act_layers or [None] * cfg.n_towers
        film_dim = cfg.llm_hidden if film else 0
        self.featurizer = TruncatedViT(cfg.tower_specs[0], cfg.image_size, acts[0], film_dim)
        self.fused_featurizer = (TruncatedViT(cfg.tower_specs[1], cfg.image_size, acts[1], film_dim)
                                 if cfg.n_towers == 2 else None)
        self.n_towers = cfg.n_towers

    def forward(self, pixel_values: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """`condition` [B, D_llm] is FiLM's vector (FiLM towers only)."""
        features = self.featurizer(pixel_values[:, 0:3], condition)
        if self.fused_featurizer is not None:
            features = torch.cat([features, self.fused_featurizer(pixel_values[:, 3:6], condition)], dim=2)
        return features


def tower_prefixes(n_towers: int) -> list[str]:
    """State-dict prefixes of the towers inside the VLA."""
    return ["vision_backbone.featurizer.", "vision_backbone.fused_featurizer."][:n_towers]


def is_dead_tower_key(key: str, cfg: VlaSpec) -> bool:
    """True for released tower weights the truncated towers do not use (last block, norm, pool, head)."""
    for prefix, spec in zip(tower_prefixes(cfg.n_towers), cfg.tower_specs):
        if key.startswith(prefix):
            rest = key[len(prefix):]
            last = spec.depth - 1
            return rest.startswith(DEAD_TOWER_PARTS) or rest.startswith((f"blocks.{last}.", f"film.{last}."))
    return False


def released_to_module_key(key: str) -> str:
    """Checkpoint key -> module key: LayerScale `ls1.scale_factor` -> `ls1.gamma`."""
    if key.startswith("vision_backbone.") and key.endswith(RELEASED_LAYERSCALE):
        return key[: -len(RELEASED_LAYERSCALE)] + TIMM_LAYERSCALE
    return key


def module_to_released_key(key: str) -> str:
    """Module key -> checkpoint key (inverse of `released_to_module_key`)."""
    if key.startswith("vision_backbone.") and key.endswith(TIMM_LAYERSCALE):
        return key[: -len(TIMM_LAYERSCALE)] + RELEASED_LAYERSCALE
    return key
