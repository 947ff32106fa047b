"""Success rates of simulator episodes, overall and per task kind (eval-demo, train-demo, the demo)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def summarize(kinds: Sequence[str], successes: Sequence[bool],
              means: Mapping[str, Sequence[float | None]] | None = None) -> dict[str, Any]:
    """{"all": row, "by_kind": {kind: row}}; a row has episodes, successes, success_rate and, for each
    entry of `means`, the mean of its per-episode values (None values left out; None when none is left).
    """
    means = means or {}

    def row(rows: list[int]) -> dict[str, Any]:
        wins = sum(bool(successes[i]) for i in rows)
        out: dict[str, Any] = {"episodes": len(rows), "successes": wins,
                               "success_rate": wins / len(rows) if rows else 0.0}
        for name, values in means.items():
            kept = [values[i] for i in rows if values[i] is not None]
            out[name] = float(np.mean(kept)) if kept else None
        return out

    indices = list(range(len(kinds)))
    return {"all": row(indices),
            "by_kind": {k: row([i for i in indices if kinds[i] == k]) for k in sorted(set(kinds))}}
