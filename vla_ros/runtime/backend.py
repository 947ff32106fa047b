"""The Backend protocol: the inference stages every backend (torch, ONNX Runtime, TensorRT) provides.

Arrays crossing the protocol are numpy arrays on the host, float32 or int64, whatever the backend's
own dtype (bf16/fp16 values convert losslessly to float32 and back). The K/V cache is an opaque
`KvState` that only the backend that made it reads: it stays in the backend's memory (torch tensors,
ORT values, CUDA buffers) and never crosses to the host.

| method  | input                                    | output                                         |
|---------|------------------------------------------|------------------------------------------------|
| vision  | pixel_values f32 [B, 3*n_towers, S, S]   | patch embeddings f32 [B, P, D]                 |
| embed   | token_ids i64 [B, T]                     | embeddings f32 [B, T, D]                       |
| prefill | inputs_embeds f32 [B, L, D]              | (last-position logits f32 [B, V], KvState)     |
| decode  | token_ids i64 [B, 1], KvState (length n) | (logits f32 [B, V], KvState of length n + 1)   |

OpenVLA-OFT backends also provide `proprio` (normalized [B, P] f32 -> [B, 1, D]) and `actions`
(OFT sequence [B, L, D] -> L1 head's normalized actions f32 [B, K, A], or the discrete variant's
token ids i64 [B, K*A]); their `vision` takes FiLM's conditioning vector [B, D] as a second input.

The policy splices [BOS embedding, patches, prompt embeddings] for the prefill; the decode step takes
the previous token's id (the backend embeds it). `max_positions` bounds L + the decoded tokens.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

KvState = Any  # backend-specific, opaque to the policy


@runtime_checkable
class Backend(Protocol):
    """Three stages (vision, LLM prefill, LLM decode step) plus the token-embedding lookup."""

    max_positions: int

    def vision(self, pixel_values: np.ndarray) -> np.ndarray: ...

    def embed(self, token_ids: np.ndarray) -> np.ndarray: ...

    def prefill(self, inputs_embeds: np.ndarray) -> tuple[np.ndarray, KvState]: ...

    def decode(self, token_ids: np.ndarray, state: KvState) -> tuple[np.ndarray, KvState]: ...

    def describe(self) -> str: ...
