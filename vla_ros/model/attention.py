"""The LLM's attention: softmax(Q K^T * scale + mask) V, the mask an explicit argument.

Torch inference, the ONNX graphs and any other forward (causal prefill, decode step, OFT's
bidirectional pass, padded batches) run this one function; only the mask differs. Masks are bool
tensors (True = the query may attend to the key) from the builders below, combined with `&`; an
additive float mask in q's dtype works too. `mask=None` is the causal mask without a tensor:
the same values as `causal_mask`, computed by SDPA's causal kernels (and, in an exported graph,
from the shapes), which is why the default forward costs no more than an unmasked one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_mask(q_len: int | torch.SymInt, kv_len: int | torch.SymInt,
                device: torch.device | None = None) -> torch.Tensor:
    """[q_len, kv_len] bool: the queries are the last q_len positions, each sees the keys up to itself."""
    return torch.ones(q_len, kv_len, dtype=torch.bool, device=device).tril(kv_len - q_len)


def bidirectional_mask(q_len: int | torch.SymInt, kv_len: int | torch.SymInt,
                       device: torch.device | None = None) -> torch.Tensor:
    """[q_len, kv_len] bool, all True: every query sees every key (OFT's parallel decoding)."""
    return torch.ones(q_len, kv_len, dtype=torch.bool, device=device)


def padding_mask(keep: torch.Tensor) -> torch.Tensor:
    """Key padding: keep [B, kv_len] (nonzero = a real token) -> [B, 1, 1, kv_len] bool.

    Combine with a causal or bidirectional mask by `&` (broadcasts to [B, 1, q_len, kv_len]).
    """
    return keep.bool()[:, None, None, :]


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, Hkv, T, d] -> [B, Hkv * groups, T, d] (grouped-query attention)."""
    if groups == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
              ) -> torch.Tensor:
    """q [B, H, S, d], k/v [B, Hkv, T, d], mask broadcastable to [B, H, S, T] -> [B, H, S, d].

    `mask`: bool (True = attend), additive in q's dtype, or None for `causal_mask(S, T)`.
    """
    s, t = q.shape[2], k.shape[2]
    causal = mask is None and bool(s > 1)  # one query sees every key: no mask at all
    if causal and s != t:  # SDPA's is_causal aligns top-left; ours is bottom-right
        mask, causal = causal_mask(s, t, q.device), False
    groups = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=mask,
                                          is_causal=causal, scale=scale)
