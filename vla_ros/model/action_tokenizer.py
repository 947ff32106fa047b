"""The 256-bin action tokenizer of OpenVLA and MiniVLA.

Bins are `linspace(-1, 1, n_bins)`; the n_bins - 1 bin centres are their midpoints. Token ids count
down from `vocab_end`: bin index d (0..n_bins-2) <-> id = vocab_end - 1 - d, so the action ids are the
last n_bins ids below `vocab_end`:

- OpenVLA (Llama): vocab_end = text_config.vocab_size - pad_to_multiple_of (32000): ids 31744..31999,
  ordinary rarely used tokens at the end of the vocabulary.
- MiniVLA (Qwen2 "extra"): vocab_end = len(tokenizer), whose last n_bins tokens are the added
  `<|extra_i|>` tokens (id vocab_end - n_bins + i).

decode: d = clip(vocab_end - id - 1, 0, n_bins - 2); action = centres[d]. The lowest action id
(vocab_end - n_bins, what an action of exactly +1 encodes to) decodes like the next one, to the top
centre. An id outside the action range is an error here (the reference clips it silently).
encode (training): id = vocab_end - digitize(clip(a, -1, 1), bins).
"""

from __future__ import annotations

import numpy as np


class ActionTokenError(ValueError):
    """A token id that is not an action token was about to become an action."""


class ActionTokenizer:
    """Bin index <-> token id <-> normalized action in [-1, 1]."""

    def __init__(self, vocab_end: int, n_bins: int = 256) -> None:
        if n_bins < 2 or vocab_end < n_bins:
            raise ValueError(f"action tokenizer needs vocab_end >= n_bins >= 2, got {vocab_end}, {n_bins}")
        self.vocab_end = int(vocab_end)
        self.n_bins = int(n_bins)
        self.bins = np.linspace(-1.0, 1.0, self.n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        self.first_id = self.vocab_end - self.n_bins  # inclusive
        self.token_ids = np.arange(self.first_id, self.vocab_end, dtype=np.int64)  # the action range

    def __repr__(self) -> str:
        return f"ActionTokenizer(ids {self.first_id}..{self.vocab_end - 1}, {self.n_bins} bins)"

    def is_action(self, token_ids: np.ndarray | int) -> np.ndarray:
        ids = np.asarray(token_ids)
        return (ids >= self.first_id) & (ids < self.vocab_end)

    def decode(self, token_ids: np.ndarray | list[int]) -> np.ndarray:
        """Action token ids (any shape) -> normalized actions float64 of the same shape."""
        ids = np.asarray(token_ids, dtype=np.int64)
        bad = ~self.is_action(ids)
        if bad.any():
            raise ActionTokenError(f"token ids {sorted(set(ids[bad].tolist()))[:8]} are not action tokens "
                                   f"(valid: {self.first_id}..{self.vocab_end - 1})")
        d = np.clip(self.vocab_end - ids - 1, 0, self.n_bins - 2)
        return self.bin_centers[d]

    def encode(self, actions: np.ndarray | list[float]) -> np.ndarray:
        """Normalized actions (clipped to [-1, 1]) -> token ids int64 of the same shape."""
        a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        if not np.all(np.isfinite(a)):
            raise ValueError("cannot encode non-finite actions")
        return (self.vocab_end - np.digitize(a, self.bins)).astype(np.int64)

    def argmax(self, logits: np.ndarray) -> np.ndarray:
        """Greedy choice among the action ids only: logits [B, V] -> ids [B] (never a non-action id)."""
        restricted = logits[:, self.first_id:self.vocab_end]
        if restricted.shape[1] != self.n_bins:
            raise ActionTokenError(f"logits have {logits.shape[1]} entries; the action ids need "
                                   f"{self.vocab_end}")
        if not np.all(np.isfinite(restricted)):
            raise FloatingPointError("the model produced NaN/Inf logits for the action tokens")
        return restricted.argmax(axis=1).astype(np.int64) + self.first_id


def last_ids_tokenizer(padded_vocab_size: int, pad_to_multiple_of: int, n_bins: int = 256) -> ActionTokenizer:
    """OpenVLA's mapping: the last n_bins ids below vocab_size - pad_to_multiple_of."""
    return ActionTokenizer(padded_vocab_size - pad_to_multiple_of, n_bins)


def extra_tokens_tokenizer(tokenizer, n_bins: int = 256, pattern: str = "<|extra_{i}|>") -> ActionTokenizer:
    """MiniVLA's mapping: vocab_end = len(tokenizer), whose last n_bins ids must be extra tokens."""
    vocab_end = len(tokenizer)
    for offset in (0, n_bins - 1):
        token_id = vocab_end - n_bins + offset
        token = tokenizer.id_to_token(token_id)
        if token is None or not (token.startswith(pattern.split("{i}")[0]) and
                                 token.endswith(pattern.split("{i}")[1])):
            raise ActionTokenError(f"the tokenizer's last {n_bins} ids should be {pattern!r} tokens; id "
                                   f"{token_id} is {token!r}")
    return ActionTokenizer(vocab_end, n_bins)
