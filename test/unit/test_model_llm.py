"""The lean KV-cached LLM forward equals transformers; cached decoding = decoding without a cache."""

import numpy as np
import pytest
import torch

from vla_ros.model.attention import causal_mask
from vla_ros.model.loader import load_vla
from vla_ros.model.stages import DecodeStage, EmbedStage, PrefillStage, kv_names
from vla_ros.model.tiny import cached_tiny_checkpoint

torch.set_num_threads(1)
FAMILIES = ["openvla", "minivla"]


def _spliced(loaded, seed=0):
    """[BOS, patches, prompt] embeddings for a random image."""
    model = loaded.model
    dtype = next(model.parameters()).dtype
    pixels = torch.randn(1, 6, 224, 224, generator=torch.Generator().manual_seed(seed)).to(dtype)
    ids = torch.tensor([loaded.family.prompt_ids(loaded.tokenizer, "put the carrot in the pot")])
    with torch.no_grad():
        return model.splice(model.core.embed(ids), model.patch_embeddings(pixels))


@pytest.mark.parametrize("family", FAMILIES)
def test_core_matches_transformers_forward(family):
    loaded = load_vla(cached_tiny_checkpoint(family=family))
    model, core = loaded.model, loaded.model.core
    embeds = _spliced(loaded)
    s = embeds.shape[1]
    with torch.no_grad():
        reference = model.language_model(inputs_embeds=embeds, use_cache=False).logits.float()
        ours = core.forward_all(embeds)  # fuses the projections on first use
        explicit = core.forward_all(embeds, causal_mask(s, s))
        last, present = core.prefill(embeds)
        after_fusing = model.language_model(inputs_embeds=embeds, use_cache=False).logits.float()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(explicit, ours, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(last, reference[:, -1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after_fusing, reference, rtol=0, atol=0)  # modules see the fused weights
    assert len(present) == 2 * core.num_layers
    assert present[0].shape == (1, core.num_kv_heads, embeds.shape[1], core.head_dim)


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decoding_equals_uncached(family):
    """Greedy action decoding with the K/V cache gives the same tokens as re-running the whole sequence."""
    loaded = load_vla(cached_tiny_checkpoint(family=family))
    core, act = loaded.model.core, loaded.action_tokenizer
    embeds = _spliced(loaded, seed=3)
    with torch.no_grad():
        logits, past = core.prefill(embeds)
        cached, cached_logits = [], []
        token = int(act.argmax(logits.numpy())[0])
        for _ in range(6):
            cached.append(token)
            logits, past = core.decode(torch.tensor([[token]]), past)
            cached_logits.append(logits)
            token = int(act.argmax(logits.numpy())[0])
        cached.append(token)

        seq = embeds
        uncached, uncached_logits = [], []
        for step in range(7):
            logits = core.forward_all(seq)[:, -1]
            if step:
                uncached_logits.append(logits)
            token = int(act.argmax(logits.numpy())[0])
            uncached.append(token)
            seq = torch.cat([seq, core.embed(torch.tensor([[token]]))], dim=1)
    assert cached == uncached
    assert all(act.is_action(t) for t in cached)
    for a, b in zip(cached_logits, uncached_logits):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_stage_modules_have_flat_tensor_io():
    loaded = load_vla(cached_tiny_checkpoint())
    core = loaded.model.core
    embeds = _spliced(loaded)
    prefill, decode, embed = PrefillStage(core), DecodeStage(core), EmbedStage(core)
    with torch.no_grad():
        out = prefill(embeds)
        assert all(isinstance(t, torch.Tensor) for t in out)
        assert len(out) == 1 + 2 * core.num_layers and out[0].shape == (1, loaded.spec.padded_vocab_size)
        step = decode(torch.tensor([[loaded.action_tokenizer.first_id]]), *out[1:])
        assert len(step) == len(out)
        assert step[1].shape[2] == out[1].shape[2] + 1
        assert embed(torch.tensor([[1, 2]])).shape == (1, 2, loaded.spec.llm_hidden)
    assert kv_names(2, "past") == ["past_k_0", "past_v_0", "past_k_1", "past_v_1"]


def test_prefill_position_table_bounds_sequence():
    loaded = load_vla(cached_tiny_checkpoint())
    core = loaded.model.core
    assert core.rope_cos.shape == (core.max_positions, core.head_dim)
    assert core.max_positions == 2048


def test_teacher_forcing_forward_gives_action_logits_and_loss():
    """The training forward (transformers' LM forward) agrees with the inference path."""
    from vla_ros.model.vla import IGNORE_INDEX, action_logits

    loaded = load_vla(cached_tiny_checkpoint())
    model, act = loaded.model, loaded.action_tokenizer
    model.train().requires_grad_(True)  # load_vla returns a frozen eval-mode model
    pixels = torch.randn(1, 6, 224, 224, generator=torch.Generator().manual_seed(5))
    prompt = loaded.family.prompt_ids(loaded.tokenizer, "open the drawer")
    actions = act.encode(np.array([0.1, -0.2, 0.3, 0.0, 0.5, -0.9, 1.0]))
    ids = torch.tensor([prompt + actions.tolist()])
    labels = torch.tensor([[IGNORE_INDEX] * len(prompt) + actions.tolist()])
    out = model(pixels, ids, labels=labels)
    assert out.loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.projector.fc1.weight.grad is not None
    assert model.vision_backbone.featurizer.blocks[0].attn.qkv.weight.grad is not None
    logits = action_logits(out.logits, 7)
    with torch.no_grad():
        embeds = model.splice(model.core.embed(torch.tensor([prompt])), model.patch_embeddings(pixels))
        first, _ = model.core.prefill(embeds)
    torch.testing.assert_close(logits[:, 0].detach(), first, rtol=1e-4, atol=1e-4)
    model.zero_grad()


def test_core_matches_transformers_in_bf16():
    loaded = load_vla(cached_tiny_checkpoint(), dtype="bf16")
    model, core = loaded.model, loaded.model.core
    core.fuse_projections()
    embeds = _spliced(loaded)
    with torch.no_grad():
        reference = model.language_model(inputs_embeds=embeds, use_cache=False).logits.float()[:, -1]
        last, present = core.prefill(embeds)
    assert present[0].dtype == torch.bfloat16 and last.dtype == torch.float32
    torch.testing.assert_close(last, reference, rtol=0.05, atol=0.05)
    act = loaded.action_tokenizer
    assert act.argmax(last.numpy())[0] == act.argmax(reference.numpy())[0]
