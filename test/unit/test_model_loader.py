"""Loading the released layout: files, shards, key/shape checks, clear errors, dtypes, statistics."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vla_ros.model.families import resolve_family
from vla_ros.model.loader import build_meta_model, load_vla, scan_shards
from vla_ros.model.spec import CheckpointError, VlaSpec
from vla_ros.model.tiny import cached_tiny_checkpoint

torch.set_num_threads(1)
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


@pytest.fixture
def ckpt(tmp_path):
    """A private copy of the tiny checkpoint that a test may damage."""
    dst = tmp_path / "ckpt"
    shutil.copytree(cached_tiny_checkpoint(), dst)
    return dst


def _rewrite_shard(path, name, edit):
    with safe_open(str(path / name), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors)
    save_file(tensors, str(path / name), metadata={"format": "pt"})


def _set_index(path, edit):
    index = json.loads((path / "model.safetensors.index.json").read_text())
    edit(index["weight_map"])
    (path / "model.safetensors.index.json").write_text(json.dumps(index))


def test_released_layout_files():
    path = cached_tiny_checkpoint()
    names = {p.name for p in path.iterdir()}
    assert {"config.json", SHARD1, SHARD2, "model.safetensors.index.json", "tokenizer.json",
            "tokenizer_config.json", "preprocessor_config.json", "added_tokens.json"} <= names
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["pad_to_multiple_of"] == 64 and cfg["n_action_bins"] == 256
    assert cfg["text_config"]["vocab_size"] % 64 == 0
    assert set(cfg["norm_stats"]["tiny_dataset"]["action"]) >= {"q01", "q99", "mask", "mean", "std"}
    weight_map = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(weight_map.values()) == {SHARD1, SHARD2}
    assert any(k.endswith("ls1.scale_factor") for k in weight_map)
    assert any(".attn_pool." in k for k in weight_map)  # released towers keep their dead parts


def test_loads_and_skips_dead_tower_weights():
    path = cached_tiny_checkpoint()
    loaded = load_vla(path)
    assert loaded.family.name == "openvla"
    params = dict(loaded.model.named_parameters())
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params.values())
    assert not any(".attn_pool." in k or k.endswith("featurizer.norm.weight") for k in params)
    found = scan_shards(path)
    with safe_open(str(path / found["projector.fc2.weight"][0]), framework="pt") as f:
        assert torch.equal(params["projector.fc2.weight"], f.get_tensor("projector.fc2.weight"))
    assert loaded.action_tokenizer.vocab_end == loaded.spec.padded_vocab_size - 64
    assert not loaded.model.training


def test_meta_model_holds_no_memory():
    cfg = VlaSpec.from_dir(cached_tiny_checkpoint())
    model = build_meta_model(cfg, resolve_family(cfg))
    assert all(p.device.type == "meta" for p in model.parameters())


@pytest.mark.parametrize("dtype,torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_dtypes(dtype, torch_dtype):
    loaded = load_vla(cached_tiny_checkpoint(), dtype=dtype)
    assert {p.dtype for p in loaded.model.parameters()} == {torch_dtype}
    assert loaded.model.core.rope_cos.dtype == torch_dtype


def test_bad_dtype_and_device():
    with pytest.raises(CheckpointError, match="dtype"):
        load_vla(cached_tiny_checkpoint(), dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="CUDA is not available"):
            load_vla(cached_tiny_checkpoint(), device="cuda")


def test_missing_shard(ckpt):
    (ckpt / SHARD2).unlink()
    with pytest.raises(CheckpointError, match=f"missing: {SHARD2}"):
        load_vla(ckpt)


def test_truncated_shard(ckpt):
    data = (ckpt / SHARD1).read_bytes()
    (ckpt / SHARD1).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"shard {SHARD1} is corrupt or truncated"):
        load_vla(ckpt)


def test_garbage_shard(ckpt):
    (ckpt / SHARD2).write_bytes(b"\x00\x01 not a safetensors file" * 10)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_vla(ckpt)


def test_missing_key(ckpt):
    key = "projector.fc3.bias"
    shard = json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"][key]
    _rewrite_shard(ckpt, shard, lambda t: t.pop(key))
    _set_index(ckpt, lambda m: m.pop(key))
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): projector.fc3.bias"):
        load_vla(ckpt)


def test_index_lists_a_key_the_shard_lacks(ckpt):
    key = "projector.fc3.bias"
    shard = json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"][key]
    _rewrite_shard(ckpt, shard, lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match="lacks tensors its index lists: projector.fc3.bias"):
        load_vla(ckpt)


def test_unexpected_key(ckpt):
    _rewrite_shard(ckpt, SHARD2, lambda t: t.__setitem__("projector.fc4.weight", torch.zeros(2, 2)))
    _set_index(ckpt, lambda m: m.__setitem__("projector.fc4.weight", SHARD2))
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\): projector.fc4.weight"):
        load_vla(ckpt)


def test_shape_mismatch(ckpt):
    key = "projector.fc3.weight"
    shard = json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"][key]
    _rewrite_shard(ckpt, shard, lambda t: t.__setitem__(key, torch.zeros(3, 5)))
    with pytest.raises(CheckpointError, match=r"shape mismatch.*projector.fc3.weight is \[3, 5\]"):
        load_vla(ckpt)


def test_timm_gamma_and_released_scale_factor_both_present(ckpt):
    key = "vision_backbone.featurizer.blocks.0.ls1.scale_factor"
    shard = json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"][key]
    gamma = key.replace("scale_factor", "gamma")
    _rewrite_shard(ckpt, shard, lambda t: t.__setitem__(gamma, t[key].clone()))
    _set_index(ckpt, lambda m: m.__setitem__(gamma, shard))
    with pytest.raises(CheckpointError, match="both load into"):
        load_vla(ckpt)


def test_pickle_checkpoints_are_refused(tmp_path):
    (tmp_path / "config.json").write_text((cached_tiny_checkpoint() / "config.json").read_text())
    shutil.copy(cached_tiny_checkpoint() / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickle checkpoints are not loaded"):
        load_vla(tmp_path)


def test_config_errors(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vla(ckpt / "nowhere")
    (ckpt / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_vla(ckpt / "empty")
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot parse"):
        load_vla(ckpt)
    bad = {**cfg, "timm_model_ids": ["vit_unknown_patch99"]}
    bad.pop("tower_specs")
    bad["use_fused_vision_backbone"] = False
    (ckpt / "config.json").write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match="unknown vision tower 'vit_unknown_patch99'"):
        load_vla(ckpt)
    (ckpt / "config.json").write_text(json.dumps({**cfg, "image_resize_strategy": "letterbox"}))
    with pytest.raises(CheckpointError, match="letterbox"):
        load_vla(ckpt)


def test_dataset_statistics_json_extends_norm_stats(ckpt):
    extra = {"my_finetune": {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7}}}
    (ckpt / "dataset_statistics.json").write_text(json.dumps(extra))
    loaded = load_vla(ckpt)
    assert set(loaded.norm_stats) == {"tiny_dataset", "my_finetune"}


def test_minivla_tied_embeddings_and_gqa():
    loaded = load_vla(cached_tiny_checkpoint(family="minivla"))
    lm = loaded.model.language_model
    assert loaded.family.name == "minivla"
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    assert lm.config.num_key_value_heads < lm.config.num_attention_heads
    assert loaded.action_tokenizer.vocab_end == len(loaded.tokenizer)


def test_real_tower_checkpoint_loads_on_meta_shapes():
    """The real DINOv2-L + SigLIP-SO400M key set matches the truncated towers (shapes only, no data)."""
    cfg = VlaSpec.from_dict({**json.loads((cached_tiny_checkpoint() / "config.json").read_text()),
                               "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m",
                                                  "vit_so400m_patch14_siglip_224"],
                               "tower_specs": None})
    model = build_meta_model(cfg, resolve_family(cfg))
    keys = [k for k in model.state_dict() if k.startswith("vision_backbone.")]
    assert "vision_backbone.featurizer.blocks.22.ls2.gamma" in keys
    assert "vision_backbone.featurizer.blocks.23.ls2.gamma" not in keys
    assert "vision_backbone.fused_featurizer.blocks.25.mlp.fc2.weight" in keys
    assert not any(k.startswith("vision_backbone.fused_featurizer.attn_pool") for k in keys)


@pytest.mark.slow
def test_real_tower_checkpoint_writes_and_loads(tmp_path):
    """write_tiny_checkpoint(real_towers=True): the 7 B towers' shapes (random, bf16) load as released."""
    from vla_ros.model.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path / "real", real_towers=True)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["timm_model_ids"] == ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
    assert "tower_specs" not in cfg  # shapes come from the known timm ids, as for the release
    found = scan_shards(path)
    assert found["vision_backbone.featurizer.blocks.23.ls1.scale_factor"][1] == (1024,)
    assert found["vision_backbone.fused_featurizer.blocks.26.mlp.fc1.weight"][1] == (4304, 1152)
    assert found["vision_backbone.fused_featurizer.attn_pool.latent"][1] == (1, 1, 1152)
    assert found["projector.fc1.weight"][1] == (8704, 2176)
    loaded = load_vla(path, dtype="bf16")
    assert len(loaded.model.vision_backbone.featurizer.blocks) == 23
    assert len(loaded.model.vision_backbone.fused_featurizer.blocks) == 26
    n_vision = sum(p.numel() for p in loaded.model.vision_backbone.parameters())
    assert 650e6 < n_vision < 720e6
