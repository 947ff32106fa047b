"""Do two backends act the same? Greedy action tokens and logits of two policies on the same inputs.

Used by the export tests and by scripts/check_ort_agreement.py (torch vs ONNX Runtime on tiny and
real-tower checkpoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class RecordingBackend:
    """Wraps a Backend and keeps the logits of every prefill / decode call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.logits: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def prefill(self, inputs_embeds: np.ndarray) -> tuple[np.ndarray, Any]:
        logits, state = self.inner.prefill(inputs_embeds)
        self.logits.append(np.array(logits, dtype=np.float32))
        return logits, state

    def decode(self, token_ids: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        logits, state = self.inner.decode(token_ids, state)
        self.logits.append(np.array(logits, dtype=np.float32))
        return logits, state


@dataclass
class Agreement:
    """Outcome of comparing a candidate policy with a reference one."""

    samples: int = 0
    same_tokens: int = 0
    max_abs_logit_diff: float = 0.0
    max_logit: float = 0.0
    mismatches: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.same_tokens}/{self.samples} samples with identical action tokens; max |logit "
                f"difference| {self.max_abs_logit_diff:.3g} (largest |logit| {self.max_logit:.3g})")


def compare_policies(reference: Any, candidate: Any, cases: Sequence[tuple[np.ndarray, str]]) -> Agreement:
    """Run both VlaPolicy objects on every (rgb, instruction); compare tokens and every step's logits.

    Both decode their own greedy tokens (no teacher forcing): agreement means the same 7 tokens.
    """
    result = Agreement()
    rec_ref, rec_cand = RecordingBackend(reference.backend), RecordingBackend(candidate.backend)
    saved = reference.backend, candidate.backend
    reference.backend, candidate.backend = rec_ref, rec_cand
    try:
        for i, (rgb, text) in enumerate(cases):
            rec_ref.logits.clear()
            rec_cand.logits.clear()
            tokens_ref, _ = reference.predict_tokens(rgb, text)
            tokens_cand, _ = candidate.predict_tokens(rgb, text)
            result.samples += 1
            if np.array_equal(tokens_ref, tokens_cand):
                result.same_tokens += 1
            else:
                result.mismatches.append(f"case {i} ({text!r}): {tokens_ref.tolist()} vs "
                                         f"{tokens_cand.tolist()}")
            for a, b in zip(rec_ref.logits, rec_cand.logits):
                result.max_abs_logit_diff = max(result.max_abs_logit_diff, float(np.abs(a - b).max()))
                result.max_logit = max(result.max_logit, float(np.abs(a).max()))
    finally:
        reference.backend, candidate.backend = saved
    return result
