"""`vla-ros convert`: OFT releases (as OFT's training writes them) -> safetensors + vla_settings.json."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vla_ros.cli import VERBS
from vla_ros.core.config import PolicyConfig
from vla_ros.model.convert import COMPONENTS_FILE, load_pt, main, merge_film_backbone
from vla_ros.model.loader import load_vla
from vla_ros.model.settings import PRESETS, SETTINGS_FILE, VlaSettings, read_settings
from vla_ros.model.spec import CheckpointError
from vla_ros.model.tiny_oft import write_tiny_oft_release
from vla_ros.runtime.factory import make_policy

torch.set_num_threads(1)
TEXT = "pick up the red block"
SOURCE_ROOT = Path(__file__).resolve().parents[2] / "vla_ros"


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Read-only tiny OFT releases: libero (no FiLM) and aloha (FiLM, vision LoRA rank 32: scale 0.5)."""
    base = tmp_path_factory.mktemp("releases")
    return {form: write_tiny_oft_release(base / form, form=form, lora_rank=32)
            for form in ("libero", "aloha")}


def _copy(release: Path, dst: Path) -> Path:
    shutil.copytree(release, dst)
    return dst


def _predict(checkpoint: Path, seed: int = 0):
    policy = make_policy(PolicyConfig(checkpoint=str(checkpoint), warmup_runs=0))
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(policy.inputs.cameras)]
    return policy, policy.predict_arrays(images, TEXT, rng.normal(size=policy.inputs.proprio_dim))


def test_convert_is_a_verb():
    assert VERBS["convert"][0] == "vla_ros.model.convert"


@pytest.mark.parametrize("form, cameras, proprio, chunk, dim", [
    ("libero", 2, 8, 8, 7), ("aloha", 3, 14, 25, 14)])
def test_release_converts_and_loads(releases, form, cameras, proprio, chunk, dim, tmp_path):
    dst = tmp_path / "ckpt"
    assert main([str(releases[form]), str(dst), "--preset", form]) == 0
    assert not list(dst.glob("*.pt"))  # the run time reads safetensors only
    settings = read_settings(dst)
    expected_key = "libero_spatial_no_noops" if form == "libero" else "aloha_fixture"
    assert settings == replace(PRESETS[form], unnorm_key=expected_key)
    written = json.loads((dst / SETTINGS_FILE).read_text())
    assert written["source"]["path"] == str(releases[form].resolve())
    policy, out = _predict(dst)
    assert policy.inputs.cameras == cameras and policy.inputs.proprio_dim == proprio
    assert out.normalized.shape == out.actions.shape == (chunk, dim)
    assert np.all(np.isfinite(out.actions))


def test_module_prefix_is_stripped(releases, tmp_path):
    dst = tmp_path / "ckpt"
    assert main([str(releases["libero"]), str(dst), "--preset", "libero"]) == 0
    components = load_file(str(dst / COMPONENTS_FILE))
    assert not [k for k in components if "module." in k]
    for file, prefix in (("action_head", "action_head."), ("proprio_projector", "proprio_projector.")):
        raw = torch.load(releases["libero"] / f"{file}--100_checkpoint.pt", weights_only=True)
        assert raw and all(k.startswith("module.") for k in raw)  # as DDP saved them
        for key, value in raw.items():
            assert torch.equal(components[prefix + key[len("module."):]], value)


def test_film_lora_is_merged_with_alpha_min_r_16(releases, tmp_path):
    """W = base + (alpha / r) B @ A, alpha = min(r, 16): scale 0.5 for r = 32; the towers that load are the
    merged ones from the FiLM file, not the shards' towers."""
    dst = tmp_path / "ckpt"
    assert main([str(releases["aloha"]), str(dst), "--preset", "aloha"]) == 0
    raw = torch.load(releases["aloha"] / "vision_backbone--100_checkpoint.pt", weights_only=True)
    pre = "vision_backbone.fused_featurizer.blocks.1.block.mlp.fc1"
    base, a, b = (raw[f"{pre}.{n}.weight"] for n in ("base_layer", "lora_A.default", "lora_B.default"))
    assert a.shape[0] == 32
    by_hand = base + 0.5 * (b @ a)
    assert not torch.allclose(by_hand, base + b @ a)  # the scale matters in this fixture
    components = load_file(str(dst / COMPONENTS_FILE))
    merged = components["vision_backbone.fused_featurizer.blocks.1.mlp.fc1.weight"]
    assert torch.allclose(merged, by_hand, atol=1e-6)
    assert torch.equal(components["vision_backbone.fused_featurizer.blocks.1.mlp.fc1.bias"],
                       raw[f"{pre}.base_layer.bias"])
    assert torch.equal(components["vision_backbone.featurizer.film.0.scale.weight"],
                       raw["vision_backbone.featurizer.blocks.0.scale.weight"])
    model = load_vla(dst).model
    assert torch.allclose(model.vision_backbone.fused_featurizer.blocks[1].mlp.fc1.weight, by_hand, atol=1e-6)


def test_patch_embedding_conv_lora_is_merged(releases, tmp_path):
    """PEFT's all-linear also wraps the towers' patch-embedding Conv2d (A [r, 3, k, k], B [D, r, 1, 1])."""
    dst = tmp_path / "ckpt"
    assert main([str(releases["aloha"]), str(dst), "--preset", "aloha"]) == 0
    raw = torch.load(releases["aloha"] / "vision_backbone--100_checkpoint.pt", weights_only=True)
    pre = "vision_backbone.featurizer.patch_embed.proj"
    base, a, b = (raw[f"{pre}.{n}.weight"] for n in ("base_layer", "lora_A.default", "lora_B.default"))
    assert base.ndim == 4 and a.shape[1:] == base.shape[1:] and b.shape[2:] == (1, 1)
    by_hand = base + 0.5 * torch.einsum("or,rikl->oikl", b[:, :, 0, 0], a)
    merged = load_file(str(dst / COMPONENTS_FILE))[f"{pre}.weight"]
    assert torch.allclose(merged, by_hand, atol=1e-6) and not torch.allclose(merged, base, atol=1e-3)


def test_lora_that_does_not_fit_its_weight_is_a_clear_error():
    state = {"vision_backbone.featurizer.blocks.0.block.mlp.fc1.base_layer.weight": torch.zeros(6, 5),
             "vision_backbone.featurizer.blocks.0.block.mlp.fc1.lora_A.default.weight": torch.zeros(4, 3),
             "vision_backbone.featurizer.blocks.0.block.mlp.fc1.lora_B.default.weight": torch.zeros(6, 4)}
    with pytest.raises(CheckpointError, match="do not fit the weight"):
        merge_film_backbone(state, 4)


@pytest.mark.parametrize("rank, scale", [(64, 0.25), (8, 1.0), (16, 1.0)])
def test_merge_scale_by_rank(rank, scale):
    gen = torch.Generator().manual_seed(rank)
    base, a, b = (torch.randn(shape, generator=gen) for shape in ((6, 5), (rank, 5), (6, rank)))
    state = {"vision_backbone.featurizer.blocks.0.block.mlp.fc1.base_layer.weight": base,
             "vision_backbone.featurizer.blocks.0.block.mlp.fc1.lora_A.default.weight": a,
             "vision_backbone.featurizer.blocks.0.block.mlp.fc1.lora_B.default.weight": b}
    merged = merge_film_backbone(state, rank)
    assert list(merged) == ["vision_backbone.featurizer.blocks.0.mlp.fc1.weight"]
    assert torch.allclose(merged["vision_backbone.featurizer.blocks.0.mlp.fc1.weight"], base + scale * b @ a,
                          atol=1e-5)


def test_wrong_lora_rank_is_an_error(tmp_path, capsys):
    src = write_tiny_oft_release(tmp_path / "release", form="aloha", lora_rank=4)
    dst = tmp_path / "ckpt"
    assert main([str(src), str(dst), "--preset", "aloha"]) == 1  # the preset says 32
    err = capsys.readouterr().err
    assert "LoRA rank is 4" in err and "lora_rank 32" in err and "--lora-rank 4" in err
    assert not dst.exists()
    assert main([str(src), str(dst), "--preset", "aloha", "--lora-rank", "4"]) == 0


@pytest.mark.parametrize("form, flags, message", [
    ("libero", ["--preset", "aloha"], "film is on but the source has no vision_backbone"),
    ("libero", ["--preset", "aloha", "--no-film"], "action_dim 14 does not match the action head"),
    ("libero", ["--preset", "libero", "--proprio-dim", "7"],
     "proprio_dim 7 does not match the proprio projector, which takes 8"),
    ("libero", ["--preset", "libero", "--action-dim", "14"], "takes 448 = 7 x 64 inputs, i.e. action_dim 7"),
    ("libero", ["--preset", "libero", "--action-head", "discrete"], "has an L1-regression action head"),
    ("aloha", ["--preset", "libero"], "vision_backbone--100_checkpoint.pt is present but film is off"),
    ("aloha", ["--preset", "libero", "--film"], "action_dim 7 does not match the action head"),
    ("aloha", ["--preset", "bridge", "--film"], "action_dim 7 does not match"),
    ("libero", ["--preset", "libero", "--images", "0"], "--images must be >= 1"),
])
def test_wrong_preset_is_a_clear_error_and_writes_nothing(releases, form, flags, message, tmp_path, capsys):
    dst = tmp_path / "ckpt"
    assert main([str(releases[form]), str(dst), *flags]) == 1
    assert message in capsys.readouterr().err
    assert not dst.exists()


def test_destination_must_be_new_or_empty(releases, tmp_path, capsys):
    dst = tmp_path / "ckpt"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    assert main([str(releases["libero"]), str(dst), "--preset", "libero"]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]


class _Planted:
    """What a hostile .pt file would hold: unpickling it calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Plain:
    """An ordinary class instance (weights_only refuses any class not allow-listed)."""

    def __init__(self) -> None:
        self.weight = torch.ones(2)


@pytest.mark.parametrize("payload", ["reduce", "instance"])
def test_a_pickle_that_is_not_tensors_is_refused(releases, payload, tmp_path, capsys):
    src = _copy(releases["libero"], tmp_path / "release")
    marker = tmp_path / "pwned"
    value = _Planted(marker) if payload == "reduce" else _Plain()
    torch.save({"module.model.fc1.weight": value}, src / "action_head--100_checkpoint.pt")
    with pytest.raises(CheckpointError, match="cannot load as a weights-only state dict"):
        load_pt(src / "action_head--100_checkpoint.pt")
    dst = tmp_path / "ckpt"
    assert main([str(src), str(dst), "--preset", "libero"]) == 1
    err = capsys.readouterr().err
    assert "action_head--100_checkpoint.pt: cannot load as a weights-only state dict" in err
    assert not marker.exists() and not dst.exists()


def test_a_state_dict_without_tensors_is_refused(releases, tmp_path):
    src = _copy(releases["libero"], tmp_path / "release")
    torch.save({"module.model.fc1.weight": [1.0, 2.0]}, src / "proprio_projector--100_checkpoint.pt")
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        load_pt(src / "proprio_projector--100_checkpoint.pt")


def test_diffusion_head_is_refused(releases, tmp_path, capsys):
    """A settings file naming the diffusion head, and an OFT release whose head is a diffusion head."""
    with pytest.raises(CheckpointError, match="diffusion action head is not supported"):
        VlaSettings.from_json({"format": "vla_ros.settings/1", "family": "openvla-oft",
                               "action_head": "diffusion", "chunk": 8})
    src = _copy(releases["libero"], tmp_path / "release")
    head = torch.load(src / "action_head--100_checkpoint.pt", weights_only=True)
    diffusion = {k.replace("module.model.", "module.noise_predictor.mlp_resnet."): v for k, v in head.items()}
    torch.save(diffusion, src / "action_head--100_checkpoint.pt")
    dst = tmp_path / "ckpt"
    assert main([str(src), str(dst), "--preset", "libero"]) == 1
    assert "diffusion" in capsys.readouterr().err
    assert not dst.exists()


def test_argv_never_matters(releases, tmp_path, monkeypatch):
    """OFT picks its constants from the command line; here "aloha" in argv changes nothing."""
    clean = tmp_path / "clean"
    assert main([str(releases["libero"]), str(clean), "--preset", "libero"]) == 0
    _, expected = _predict(clean)
    monkeypatch.setattr(sys, "argv", ["vla-ros", "convert", "/data/aloha/bridge", "aloha", "bridge"])
    sniffed = tmp_path / "aloha_bridge"
    assert main([str(releases["libero"]), str(sniffed), "--preset", "libero"]) == 0
    settings = read_settings(sniffed)
    assert settings == read_settings(clean)
    values = (settings.chunk, settings.action_dim, settings.proprio_dim, settings.normalization)
    assert values == (8, 7, 8, "q99")
    a, b = load_file(str(clean / COMPONENTS_FILE)), load_file(str(sniffed / COMPONENTS_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    policy, out = _predict(sniffed)
    assert policy.inputs.chunk == 8 and np.array_equal(out.normalized, expected.normalized)
    model_code = [p for layer in ("core", "model", "runtime") for p in (SOURCE_ROOT / layer).rglob("*.py")]
    assert model_code and not [p for p in model_code if "sys.argv" in p.read_text()]
