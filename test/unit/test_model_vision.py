"""Vision towers: truncation equals timm's own get_intermediate_layers; released shapes; projector."""

import pytest
import torch
from safetensors import safe_open

from vla_ros.model.loader import load_vla
from vla_ros.model.projector import FusedMLPProjector, MLPProjector
from vla_ros.model.spec import KNOWN_TOWERS, VlaSpec
from vla_ros.model.tiny import cached_tiny_checkpoint
from vla_ros.model.vision import (
    TruncatedViT,
    VisionBackbone,
    full_tower,
    is_dead_tower_key,
    released_to_module_key,
)

torch.set_num_threads(1)


def _released_tower_state(path, prefix):
    """The full tower's weights as stored in the checkpoint, renamed to timm names."""
    state = {}
    for shard in sorted(path.glob("model-*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    state[released_to_module_key(key)[len(prefix):]] = f.get_tensor(key)
    return state


@pytest.mark.parametrize("image_size", [224, 112])
def test_truncated_towers_equal_timm_intermediate_layers(image_size):
    path = cached_tiny_checkpoint(image_size=image_size)
    loaded = load_vla(path)
    cfg = loaded.spec
    pixels = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    towers = [loaded.model.vision_backbone.featurizer, loaded.model.vision_backbone.fused_featurizer]
    prefixes = ["vision_backbone.featurizer.", "vision_backbone.fused_featurizer."]
    for tower, prefix, spec in zip(towers, prefixes, cfg.tower_specs):
        reference = full_tower(spec, image_size).eval()
        missing, unexpected = reference.load_state_dict(_released_tower_state(path, prefix), strict=True)
        assert not missing and not unexpected
        with torch.no_grad():
            (expected,) = reference.get_intermediate_layers(pixels, n={spec.depth - 2})
            ours = tower(pixels)
            final = reference.forward_features(pixels)[:, reference.num_prefix_tokens:]
        assert ours.shape == (2, (image_size // 14) ** 2, spec.embed_dim)
        assert torch.equal(ours, expected)
        # the last block and the final norm do change the features: the truncation is not a no-op
        assert not torch.allclose(ours, final, atol=1e-3)


def test_truncated_tower_has_no_dead_parts():
    cfg = VlaSpec.from_dir(cached_tiny_checkpoint())
    for spec in cfg.tower_specs:
        tower = TruncatedViT(spec, cfg.image_size)
        assert len(tower.blocks) == spec.depth - 1
        names = [n for n, _ in tower.named_parameters()]
        assert not any(n.startswith(("norm.", "attn_pool.", "fc_norm.", "head.")) for n in names)


def test_dead_key_rules():
    cfg = VlaSpec.from_dir(cached_tiny_checkpoint())
    last = cfg.tower_specs[0].depth - 1
    assert is_dead_tower_key(f"vision_backbone.featurizer.blocks.{last}.attn.qkv.weight", cfg)
    assert is_dead_tower_key("vision_backbone.featurizer.norm.weight", cfg)
    assert is_dead_tower_key("vision_backbone.fused_featurizer.attn_pool.latent", cfg)
    assert not is_dead_tower_key(f"vision_backbone.featurizer.blocks.{last - 1}.attn.qkv.weight", cfg)
    assert not is_dead_tower_key("vision_backbone.featurizer.pos_embed", cfg)
    assert not is_dead_tower_key("projector.fc1.weight", cfg)


def test_layerscale_renaming():
    assert released_to_module_key("vision_backbone.featurizer.blocks.3.ls1.scale_factor") == \
        "vision_backbone.featurizer.blocks.3.ls1.gamma"
    other = "language_model.model.x.scale_factor"
    assert released_to_module_key(other) == other
    path = cached_tiny_checkpoint()
    loaded = load_vla(path)
    with safe_open(str(path / "model-00001-of-00002.safetensors"), framework="pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys() if k.endswith("ls1.scale_factor")}
    with safe_open(str(path / "model-00002-of-00002.safetensors"), framework="pt") as f:
        stored.update({k: f.get_tensor(k) for k in f.keys() if k.endswith("ls1.scale_factor")})
    assert stored, "the tiny checkpoint stores LayerScale as scale_factor, like the release"
    params = dict(loaded.model.named_parameters())
    checked = 0
    for key, value in stored.items():
        module_key = released_to_module_key(key)
        if module_key in params:
            assert torch.equal(params[module_key], value)
            assert not torch.all(value == 1e-5)  # random, not timm's init
            checked += 1
    assert checked >= 1


def test_real_tower_and_projector_shapes_on_meta():
    """The 7 B model's vision side: 23 + 26 blocks, 2176 channels, 256 patches, ~71 M projector."""
    cfg = VlaSpec.from_dict({
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "use_fused_vision_backbone": True, "image_sizes": [224, 224],
        "text_config": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 1,
                        "num_attention_heads": 32, "vocab_size": 32064}})
    with torch.device("meta"):
        backbone = VisionBackbone(cfg)
        projector = FusedMLPProjector(cfg.vision_dim, cfg.llm_hidden)
    assert len(backbone.featurizer.blocks) == 23 and len(backbone.fused_featurizer.blocks) == 26
    assert backbone.featurizer.num_prefix_tokens == 5 and backbone.fused_featurizer.num_prefix_tokens == 0
    assert tuple(backbone.featurizer.pos_embed.shape) == (1, 256, 1024)
    assert tuple(backbone.fused_featurizer.pos_embed.shape) == (1, 256, 1152)
    assert backbone.fused_featurizer.blocks[0].mlp.fc1.out_features == 4304
    assert isinstance(backbone.fused_featurizer.blocks[0].mlp.act, torch.nn.GELU)
    assert backbone.fused_featurizer.blocks[0].mlp.act.approximate == "none"
    assert cfg.vision_dim == 2176 and cfg.num_patches == 256
    assert tuple(projector.fc1.weight.shape) == (8704, 2176)
    assert tuple(projector.fc2.weight.shape) == (4096, 8704)
    assert tuple(projector.fc3.weight.shape) == (4096, 4096)
    n_params = sum(p.numel() for p in projector.parameters())
    assert 70e6 < n_params < 72e6
    assert KNOWN_TOWERS["vit_so400m_patch14_siglip_224"].pool == "map"


def test_single_tower_projector_is_two_layers():
    proj = MLPProjector(1024, 4096)
    assert [n for n, _ in proj.named_parameters()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert tuple(proj.fc1.weight.shape) == (4096, 1024)
    out = proj(torch.zeros(1, 3, 1024))
    assert out.shape == (1, 3, 4096)


def test_backbone_concatenates_per_patch():
    loaded = load_vla(cached_tiny_checkpoint())
    cfg = loaded.spec
    pixels = torch.randn(1, 6, 224, 224)
    with torch.no_grad():
        both = loaded.model.vision_backbone(pixels)
        first = loaded.model.vision_backbone.featurizer(pixels[:, :3])
        second = loaded.model.vision_backbone.fused_featurizer(pixels[:, 3:])
    assert both.shape == (1, 256, cfg.vision_dim)
    assert torch.equal(both, torch.cat([first, second], dim=2))
