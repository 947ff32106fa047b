"""One attention function with an explicit mask: hand references, causal / bidirectional / padded masks."""

import pytest
import torch

from vla_ros.model.attention import attention, bidirectional_mask, causal_mask, padding_mask
from vla_ros.model.loader import load_vla
from vla_ros.model.tiny import cached_tiny_checkpoint

torch.set_num_threads(1)
FAMILIES = ["openvla", "minivla"]  # Llama (4 kv heads) and Qwen2 (grouped-query, 1 kv head)


def _qkv(s: int, t: int, heads: int = 4, kv_heads: int = 2, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, heads, s, d, generator=g), torch.randn(2, kv_heads, t, d, generator=g),
            torch.randn(2, kv_heads, t, d, generator=g))


def _reference(q, k, v, allowed: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V over the allowed keys only, written out."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(dim=-1) @ v


def test_mask_builders():
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert torch.equal(causal_mask(3, 3), torch.ones(3, 3, dtype=torch.bool).tril())
    assert bidirectional_mask(2, 3).all() and bidirectional_mask(2, 3).shape == (2, 3)
    keep = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert padding_mask(keep).shape == (2, 1, 1, 3)
    both = causal_mask(3, 3) & padding_mask(keep)
    assert both.shape == (2, 1, 3, 3) and both[0, 0, 2].tolist() == [True, True, False]


@pytest.mark.parametrize("s,t", [(5, 5), (1, 6), (3, 7)])
def test_attention_equals_hand_reference(s, t):
    q, k, v = _qkv(s, t)
    scale = q.shape[-1] ** -0.5
    for mask in (causal_mask(s, t), bidirectional_mask(s, t)):
        torch.testing.assert_close(attention(q, k, v, mask, scale), _reference(q, k, v, mask))
    # None is the causal mask (bottom-right aligned: the queries are the last s positions)
    torch.testing.assert_close(attention(q, k, v, None, scale), _reference(q, k, v, causal_mask(s, t)))
    additive = torch.zeros(s, t).masked_fill(~causal_mask(s, t), torch.finfo(torch.float32).min)
    torch.testing.assert_close(attention(q, k, v, additive, scale), _reference(q, k, v, causal_mask(s, t)))


def test_padded_keys_are_ignored():
    q, k, v = _qkv(4, 6)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    mask, scale = bidirectional_mask(4, 6) & padding_mask(keep), q.shape[-1] ** -0.5
    out = attention(q, k, v, mask, scale)
    noisy_k, noisy_v = k.clone(), v.clone()
    noisy_k[0, :, 4:], noisy_v[0, :, 4:] = 1e3, -1e3  # whatever sits in the padded slots
    torch.testing.assert_close(attention(q, noisy_k, noisy_v, mask, scale), out)
    real_only = _reference(q[:1], k[:1, :, :4], v[:1, :, :4], bidirectional_mask(4, 4))
    torch.testing.assert_close(out[:1], real_only)
    torch.testing.assert_close(out[1:], _reference(q[1:], k[1:], v[1:], bidirectional_mask(4, 6)))


def _embeds(loaded, length: int = 24, batch: int = 1, seed: int = 0) -> torch.Tensor:
    vocab = loaded.spec.padded_vocab_size
    ids = torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    return loaded.model.core.embed(ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_bidirectional_forward_equals_transformers_with_a_full_mask(family):
    """OFT's pass: the same forward with every key visible; transformers given an all-zero 4D mask agrees."""
    loaded = load_vla(cached_tiny_checkpoint(family=family))
    core, lm = loaded.model.core, loaded.model.language_model
    with torch.no_grad():
        embeds = _embeds(loaded)
        s = embeds.shape[1]
        ours = core.forward_all(embeds, bidirectional_mask(s, s))
        full = torch.zeros(1, 1, s, s, dtype=embeds.dtype)  # additive: nothing masked
        reference = lm(inputs_embeds=embeds, attention_mask=full, use_cache=False).logits.float()
        causal = core.forward_all(embeds)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    # every position but the last sees later tokens now; with 2 layers the last one changes too
    assert (ours - causal).abs().amax(dim=-1).min() > 1e-3
    torch.testing.assert_close(core.forward_all(embeds, causal_mask(s, s)), causal, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_batch_equals_transformers_with_attention_mask(family):
    loaded = load_vla(cached_tiny_checkpoint(family=family))
    core, lm = loaded.model.core, loaded.model.language_model
    with torch.no_grad():
        embeds = _embeds(loaded, batch=2, seed=1)
        s = embeds.shape[1]
        keep = torch.ones(2, s, dtype=torch.long)
        keep[1, :5] = 0  # row 1: 5 padding slots on the left
        ours = core.forward_all(embeds, causal_mask(s, s) & padding_mask(keep))
        reference = lm(inputs_embeds=embeds, attention_mask=keep, use_cache=False).logits.float()
        unmasked = core.forward_all(embeds)
    torch.testing.assert_close(ours[0], reference[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1, 5:], reference[1, 5:], rtol=1e-5, atol=1e-5)
    assert (ours[1, 5:] - unmasked[1, 5:]).abs().max() > 1e-3  # the padded keys were really left out


@pytest.mark.parametrize("family", FAMILIES)
def test_right_padded_bidirectional_rows_equal_unpadded(family):
    """OFT batching: right padding masked out of a bidirectional pass changes nothing for the real tokens."""
    loaded = load_vla(cached_tiny_checkpoint(family=family))
    core = loaded.model.core
    with torch.no_grad():
        short = _embeds(loaded, length=18, seed=2)
        padded = torch.cat([short, _embeds(loaded, length=6, seed=3)], dim=1)
        keep = torch.tensor([[1] * 18 + [0] * 6])
        ours = core.forward_all(padded, bidirectional_mask(24, 24) & padding_mask(keep))
        alone = core.forward_all(short, bidirectional_mask(18, 18))
    torch.testing.assert_close(ours[:, :18], alone, rtol=1e-5, atol=1e-5)


def test_cached_decoding_with_an_explicit_padding_mask():
    """prefill + decode with a padded batch's masks = the uncached forward over the longer sequence."""
    loaded = load_vla(cached_tiny_checkpoint())
    core = loaded.model.core
    with torch.no_grad():
        embeds = _embeds(loaded, batch=2, seed=4)
        s = embeds.shape[1]
        keep = torch.ones(2, s, dtype=torch.long)
        keep[0, :3] = 0
        _, past = core.prefill(embeds, causal_mask(s, s) & padding_mask(keep))
        token = torch.tensor([[7], [9]])
        step_keep = torch.cat([keep, torch.ones(2, 1, dtype=torch.long)], dim=1)
        logits, present = core.decode(token, past, causal_mask(1, s + 1) & padding_mask(step_keep))
        longer = torch.cat([embeds, core.embed(token)], dim=1)
        reference = core.forward_all(longer, causal_mask(s + 1, s + 1) & padding_mask(step_keep))[:, -1]
    assert present[0].shape[2] == s + 1
    torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
