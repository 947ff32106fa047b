"""OpenVLA-OFT's model parts against hand-written references and the facts of OFT's inference sequence:
L1 head, proprio projector, the sequence and its shifted slice, FiLM, bidirectional attention, the discrete
variant's id rule, un-normalization; and the policy's dependence on every input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vla_ros.core.config import PolicyConfig
from vla_ros.model import oft
from vla_ros.model.attention import bidirectional_mask, causal_mask
from vla_ros.model.convert import main as convert_main
from vla_ros.model.loader import load_vla
from vla_ros.model.normalization import normalize_proprio, unnormalize
from vla_ros.model.oft import (
    FilmLayer,
    L1RegressionHead,
    ParallelActions,
    ProprioProjector,
    film_block,
    slot_slice,
)
from vla_ros.model.settings import VlaSettings
from vla_ros.model.stages import action_stage
from vla_ros.model.tiny import cached_tiny_checkpoint, tiny_tower_specs
from vla_ros.model.tiny_oft import write_tiny_oft_release
from vla_ros.model.vision import TruncatedViT
from vla_ros.runtime.factory import make_policy
from vla_ros.runtime.oft_policy import oft_sequence, oft_stats

torch.set_num_threads(1)
TEXT = "pick up the red block"


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (LayerNorm affine included), float64."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1] if p.ndim > 1 else 1))
    return module.double().eval()


def _ln(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Converted tiny OFT checkpoints: libero (2 cameras, proprio 8), aloha (3 cameras, FiLM), discrete."""
    base = tmp_path_factory.mktemp("oft")
    out = {}
    for form in ("libero", "aloha"):
        src = write_tiny_oft_release(base / f"{form}_release", form=form, lora_rank=32)
        assert convert_main([str(src), str(base / form), "--preset", form]) == 0
        out[form] = base / form
    src = write_tiny_oft_release(base / "discrete_release", form="libero")
    (src / "action_head--100_checkpoint.pt").unlink()  # the discrete variant has no head file
    flags = ["--preset", "libero", "--action-head", "discrete"]
    assert convert_main([str(src), str(base / "discrete"), *flags]) == 0
    out["discrete"] = base / "discrete"
    return out


def _policy(checkpoint):
    return make_policy(PolicyConfig(checkpoint=str(checkpoint), warmup_runs=0))


def _inputs(policy, seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(policy.inputs.cameras)]
    proprio = rng.uniform(-0.5, 0.5, size=policy.inputs.proprio_dim)
    return images, proprio


def test_l1_head_equals_a_hand_written_mlp_resnet():
    d, a, k = 16, 3, 4
    head = _randomize(L1RegressionHead(d, a), seed=1)
    assert set(head.state_dict()) == {  # OFT's names, as in action_head--*.pt without "module."
        f"model.{n}.{p}" for p in ("weight", "bias")
        for n in ("layer_norm1", "fc1", "layer_norm2", "fc2", "mlp_resnet_blocks.0.ffn.0",
                  "mlp_resnet_blocks.0.ffn.1", "mlp_resnet_blocks.1.ffn.0", "mlp_resnet_blocks.1.ffn.1")}
    slots = torch.randn(2, k * a, d, dtype=torch.float64)
    m = head.model
    expected = torch.empty(2, k, a, dtype=torch.float64)
    for b in range(2):
        for t in range(k):
            x = torch.cat([slots[b, t * a + i] for i in range(a)])  # the A slots of one timestep, in order
            x = torch.relu(_linear(_ln(x, m.layer_norm1), m.fc1))
            for block in m.mlp_resnet_blocks:
                x = x + torch.relu(_linear(_ln(x, block.ffn[0]), block.ffn[1]))
            expected[b, t] = _linear(_ln(x, m.layer_norm2), m.fc2)
    with torch.no_grad():
        assert torch.allclose(head(slots, k), expected, atol=1e-10)


def test_proprio_projector_is_fc1_exact_gelu_fc2():
    proj = _randomize(ProprioProjector(16, 8), seed=2)
    x = torch.randn(3, 8, dtype=torch.float64)
    hidden = _linear(x, proj.fc1)
    gelu = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact, not the tanh approximation
    with torch.no_grad():
        assert torch.allclose(proj(x), _linear(gelu, proj.fc2), atol=1e-10)


def test_sequence_order_zero_slots_and_kept_stop_token():
    d, n, p, slots = 4, 6, 5, 7
    bos, patches, proprio = np.full((1, 1, d), 1.0), np.full((1, n, d), 2.0), np.full((1, 1, d), 3.0)
    prompt, stop = np.full((1, p, d), 4.0), np.full((1, 1, d), 5.0)
    seq = oft_sequence(bos, patches, proprio, prompt, slots, stop)[0, :, 0]
    assert seq.tolist() == [1.0] + [2.0] * n + [3.0] + [4.0] * p + [0.0] * slots + [5.0]
    without = oft_sequence(bos, patches, None, prompt, slots, stop)[0, :, 0]
    assert without.tolist() == [1.0] + [2.0] * n + [4.0] * p + [0.0] * slots + [5.0]


@pytest.mark.parametrize("with_proprio", [True, False])
def test_shifted_slice_is_last_prompt_token_to_second_to_last_slot(with_proprio):
    """OFT: N = patches (+1 proprio), P = prompt ids after BOS; the head reads positions [N+P, N+P+K*A)."""
    n = 6 + (1 if with_proprio else 0)
    p, k, a = 5, 3, 2
    length = 1 + n + p + k * a + 1
    hidden = torch.arange(length, dtype=torch.float32)[None, :, None].expand(1, length, 4)
    picked = slot_slice(hidden, k * a)[0, :, 0]
    assert picked.tolist() == list(range(n + p, n + p + k * a))


class _IdentityCore(torch.nn.Module):
    """An LLM whose last hidden states are its inputs; records the attention mask it is given."""

    def fuse_projections(self) -> None:
        pass

    def hidden_all(self, inputs_embeds, mask=None):
        self.mask = mask
        return inputs_embeds


class _RecordingHead(torch.nn.Module):
    def forward(self, slot_hidden, chunk):
        self.seen = slot_hidden
        return slot_hidden.reshape(slot_hidden.shape[0], chunk, -1)


def test_parallel_pass_feeds_the_shifted_slice_with_a_bidirectional_mask():
    n, p, k, a = 4, 3, 2, 3
    length = 1 + n + p + k * a + 1
    embeds = torch.arange(length, dtype=torch.float32)[None, :, None].repeat(1, 1, 2)
    core, head = _IdentityCore(), _RecordingHead()
    out = ParallelActions(core, head, k, a)(embeds)
    assert head.seen[0, :, 0].tolist() == list(range(n + p, n + p + k * a))
    assert core.mask.shape == (length, length) and bool(core.mask.all())
    assert out[0, 1, ::2].tolist() == [n + p + a + i for i in range(a)]  # timestep 1's A slots, in order


def test_llm_pass_is_bidirectional_only_with_the_bidirectional_mask():
    loaded = load_vla(cached_tiny_checkpoint())
    core = loaded.model.core
    embeds = torch.randn(1, 12, loaded.spec.llm_hidden, generator=torch.Generator().manual_seed(0))
    later = embeds.clone()
    later[:, -1] += 1.0  # change only the LAST position
    with torch.no_grad():
        mask = bidirectional_mask(12, 12)
        two_way = core.hidden_all(embeds, mask), core.hidden_all(later, mask)
        causal = core.hidden_all(embeds), core.hidden_all(later)
    assert (two_way[0][:, 0] - two_way[1][:, 0]).abs().max() > 1e-3  # an earlier position sees it
    assert torch.allclose(causal[0][:, :-1], causal[1][:, :-1], atol=1e-6)  # causally it could not


def test_action_stage_uses_the_bidirectional_pass(checkpoints, monkeypatch):
    """Changing </s> (after every sliced position) changes the actions; with a causal mask it would not."""
    model = load_vla(checkpoints["libero"]).model
    stage = action_stage(model).eval()
    d = model.cfg.llm_hidden
    embeds = torch.randn(1, 1 + 512 + 1 + 10 + 56 + 1, d, generator=torch.Generator().manual_seed(1))
    other_stop = embeds.clone()
    other_stop[:, -1] = torch.randn(d, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        changed = (stage(embeds) - stage(other_stop)).abs().max()
        monkeypatch.setattr(oft, "bidirectional_mask", lambda q, k, device=None: causal_mask(q, k))
        causal_change = (stage(embeds) - stage(other_stop)).abs().max()
    assert changed > 1e-4 and causal_change < 1e-6


def _spy(obj, name, calls):
    original = getattr(obj, name)

    def spy(*args):
        out = original(*args)
        calls.append((args, out))
        return out

    return spy


def test_policy_builds_the_sequence_of_the_note(checkpoints, monkeypatch):
    policy = _policy(checkpoints["libero"])
    backend, calls = policy.backend, {"vision": [], "proprio": [], "actions": []}
    for name in calls:
        monkeypatch.setattr(backend, name, _spy(backend, name, calls[name]))
    images, proprio = _inputs(policy)
    policy.predict_arrays(images, TEXT, proprio)
    (embeds,), _ = calls["actions"][0]
    patches = calls["vision"][0][1].reshape(1, -1, embeds.shape[-1])
    token = calls["proprio"][0][1]
    ids = policy.family.prompt_ids(policy.tokenizer, TEXT)
    table = backend.embed(np.asarray(ids + [policy.stop_id])[None])
    n, p, slots = patches.shape[1], len(ids) - 1, 8 * 7
    assert n == 2 * 256 and embeds.shape[1] == 1 + n + 1 + p + slots + 1
    assert np.array_equal(embeds[0, 0], table[0, 0])  # BOS
    assert np.array_equal(embeds[0, 1:1 + n], patches[0])  # primary's patches, then the wrist camera's
    assert np.array_equal(embeds[0, 1 + n], token[0, 0])  # the proprio token right after the patches
    assert np.array_equal(embeds[0, 2 + n:2 + n + p], table[0, 1:-1])  # the prompt (with its trailing "▁")
    assert not embeds[0, 2 + n + p:-1].any()  # zero slots
    assert np.array_equal(embeds[0, -1], table[0, -1]) and embeds[0, -1].any()  # </s> keeps its embedding
    normalized_proprio = calls["proprio"][0][0][0]
    assert np.allclose(normalized_proprio[0], normalize_proprio(proprio, policy.proprio_stats))


def _frozen_tower(film_dim: int) -> TruncatedViT:
    spec = tiny_tower_specs(32, 3, 2)[0]  # DINOv2-like: LayerScale, exact GELU
    tower = TruncatedViT(spec, 28, film_dim=film_dim)
    return _randomize(tower, seed=3)


def test_film_with_zero_weights_is_the_plain_tower_and_nonzero_differs():
    film_tower, plain = _frozen_tower(16), _frozen_tower(0)
    plain.load_state_dict({k: v for k, v in film_tower.state_dict().items() if not k.startswith("film.")})
    pixels = torch.randn(2, 3, 28, 28, dtype=torch.float64)
    condition = torch.randn(2, 16, dtype=torch.float64)
    with torch.no_grad():
        for p in film_tower.film.parameters():
            p.zero_()
        assert torch.allclose(film_tower(pixels, condition), plain(pixels), atol=1e-10)
        film_tower.film[0].shift.bias.fill_(0.5)
        assert (film_tower(pixels, condition) - plain(pixels)).abs().max() > 1e-3


def test_film_block_equals_a_hand_written_block():
    """x += attention branch; x = x * (1 + scale(v)) + shift(v); x += MLP branch (OFT's FiLMed block)."""
    tower = _frozen_tower(16)
    block, film = tower.blocks[0], tower.film[0]
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    v = torch.randn(2, 16, dtype=torch.float64)
    b, n, c = x.shape
    heads = block.attn.num_heads
    q, k, val = _linear(_ln(x, block.norm1), block.attn.qkv).reshape(b, n, 3, heads, c // heads).permute(
        2, 0, 3, 1, 4)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), dim=-1) @ val
    h = x + block.ls1.gamma * _linear(att.transpose(1, 2).reshape(b, n, c), block.attn.proj)
    h = h * (1 + _linear(v, film.scale)[:, None]) + _linear(v, film.shift)[:, None]
    mlp = _linear(F.gelu(_linear(_ln(h, block.norm2), block.mlp.fc1)), block.mlp.fc2)
    expected = h + block.ls2.gamma * mlp
    with torch.no_grad():
        assert torch.allclose(film_block(block, film, x, v), expected, atol=1e-10)
        assert torch.allclose(FilmLayer.forward(film, x, v), x * (1 + _linear(v, film.scale)[:, None])
                              + _linear(v, film.shift)[:, None], atol=1e-12)


def test_film_condition_is_the_mean_of_bos_prompt_and_stop_embeddings(checkpoints, monkeypatch):
    policy = _policy(checkpoints["aloha"])
    calls = []
    monkeypatch.setattr(policy.backend, "vision", _spy(policy.backend, "vision", calls))
    images, proprio = _inputs(policy)
    policy.predict_arrays(images, TEXT, proprio)
    ids = policy.family.prompt_ids(policy.tokenizer, TEXT) + [policy.stop_id]
    mean = policy.backend.embed(np.asarray(ids)[None])[0].mean(axis=0)
    pixels, condition = calls[0][0]
    assert pixels.shape[0] == 3 and condition.shape == (3, mean.shape[0])
    assert np.allclose(condition, mean[None], atol=1e-6)  # the same vector for every camera
    other = policy.backend.vision(pixels, condition + 1.0)
    assert np.abs(other - calls[0][1]).max() > 1e-4  # the towers are conditioned


@pytest.mark.parametrize("form", ["libero", "aloha"])
def test_policy_output_depends_on_every_camera_the_proprio_and_the_instruction(checkpoints, form):
    policy = _policy(checkpoints[form])
    images, proprio = _inputs(policy)
    base = policy.predict_arrays(images, TEXT, proprio).normalized

    def moved(out):
        return np.abs(out.normalized - base).max() > 1e-6

    for i in range(len(images)):
        changed = list(images)
        changed[i] = np.ascontiguousarray(np.flip(images[i], axis=0))
        assert moved(policy.predict_arrays(changed, TEXT, proprio)), f"camera {i} is ignored"
    assert moved(policy.predict_arrays(images, TEXT, proprio + 0.3)), "proprio is ignored"
    assert moved(policy.predict_arrays(images, "open the top drawer", proprio)), "instruction is ignored"
    assert np.array_equal(policy.predict_arrays(images, TEXT, proprio).normalized, base)  # deterministic


def test_discrete_variant_maps_ids_with_the_clip_rule(checkpoints):
    """OFT: bin = clip(vocab_end - id - 1, 0, 254), value = bin_centers[bin], 256 bins on [-1, 1]."""
    policy = _policy(checkpoints["discrete"])
    config = json.loads((checkpoints["discrete"] / "config.json").read_text())
    vocab_end = config["text_config"]["vocab_size"] - config["pad_to_multiple_of"]
    assert policy.action_tokenizer.vocab_end == vocab_end
    edges = np.linspace(-1, 1, 256)
    centres = (edges[:-1] + edges[1:]) / 2

    def expected(ids):
        return centres[np.clip(vocab_end - np.asarray(ids) - 1, 0, 254)].reshape(8, 7)

    images, proprio = _inputs(policy)
    out = policy.predict_arrays(images, TEXT, proprio)
    assert policy.last_ids.shape == (56,)
    assert np.array_equal(out.normalized, expected(policy.last_ids))
    crafted = np.resize(np.array([vocab_end - 1, vocab_end - 255, vocab_end - 256, vocab_end + 3, 0,
                                  vocab_end - 100]), 56)
    normalized = policy._normalized(crafted)
    assert np.array_equal(normalized, expected(crafted))
    assert normalized[0, 0] == centres[0] and normalized[0, 2] == centres[254]
    assert normalized[0, 3] == centres[0]  # ids above the range clip to the bottom bin
    assert normalized[0, 4] == centres[254]  # ids below the action range clip to the top bin, as in OFT


def _norm_stats():
    action = {"q01": [-1.0, -2.0, 0.0], "q99": [1.0, 2.0, 1.0], "min": [-3.0, 0.5, 0.0],
              "max": [3.0, 0.5, 1.0], "mask": [True, True, False]}
    proprio = {"q01": [-1.0, 0.0], "q99": [1.0, 4.0], "min": [-2.0, 1.0], "max": [2.0, 1.0]}
    return {"ds": {"action": action, "proprio": proprio}}


def _settings(normalization):
    return VlaSettings(family="openvla-oft", action_head="l1_regression", chunk=2, action_dim=3,
                       proprio_dim=2, normalization=normalization, cameras=("primary",))


def test_unnormalize_uses_min_max_for_minmax_and_the_1e8_span():
    stats, proprio_stats = oft_stats(_norm_stats(), _settings("minmax"), "")
    n = np.array([[-1.0, 1.0, 0.3], [0.5, 0.0, -0.7]])
    out = unnormalize(n, stats)
    assert out[0, 0] == -3.0 and out[1, 0] == 0.5 * 1.5 * (6.0 + 1e-8) - 3.0
    assert out[0, 1] == 0.5 + 1e-8  # min == max: only OFT's +1e-8 span is left
    assert out[1, 1] == 0.5 + 0.5e-8
    assert np.array_equal(out[:, 2], n[:, 2])  # unmasked (gripper) dimension: not un-normalized
    q99, _ = oft_stats(_norm_stats(), _settings("q99"), "")
    assert np.allclose(unnormalize(n, q99)[:, :2], 0.5 * (n[:, :2] + 1) * (np.array([2.0, 4.0]) + 1e-8)
                       + np.array([-1.0, -2.0]), rtol=0, atol=1e-15)
    # proprio: min/max bounds, the same +1e-8, every dimension, clipped to [-1, 1]
    x = np.array([1.0, 1.0 + 1e-9])
    assert np.allclose(normalize_proprio(x, proprio_stats), [2 * 3.0 / (4.0 + 1e-8) - 1, 2e-9 / 1e-8 - 1])
    assert np.array_equal(normalize_proprio(np.array([9.0, -9.0]), proprio_stats), [1.0, -1.0])
