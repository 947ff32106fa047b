"""Un-normalization of actions with a dataset's statistics, and the gripper convention.

Statistics live in config.json `norm_stats[<dataset>]["action"]` (and in dataset_statistics.json for
fine-tunes): q01, q99 and mask per dimension. Un-normalized = where(mask, 0.5 (a + 1) (q99 - q01) + q01,
a). OpenVLA's mask is False for the gripper, which therefore stays the raw bin centre.

Gripper convention (OpenVLA / Bridge data): 1 = open, 0 = closed; the model gives a bin centre,
about 0.0 or 0.996. `binarize` rounds it to 0 or 1 at 0.5; `invert` uses 1 - g for robots (and the
LIBERO evaluation) where larger means closed. Values are never silently clipped here: range checks
belong to the safety filter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class UnnormKeyError(KeyError):
    """The requested dataset statistics do not exist, or the choice is ambiguous."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


BOUNDS = {"q99": ("q01", "q99"), "minmax": ("min", "max")}  # OFT's BOUNDS_Q99 and BOUNDS


@dataclass(frozen=True)
class ActionStats:
    """Low/high bounds (q01/q99, or min/max) and mask of one dataset's actions (float64 / bool arrays);
    `eps` is added to the span when un-normalizing (OFT: 1e-8; OpenVLA: 0)."""

    key: str
    q01: np.ndarray  # the low bound
    q99: np.ndarray  # the high bound
    mask: np.ndarray
    eps: float = 0.0

    @property
    def dim(self) -> int:
        return int(self.q01.shape[0])


def select_unnorm_key(norm_stats: dict, unnorm_key: str | None) -> str:
    """The dataset key to use: the given one, or the only one; an error lists the choices."""
    keys = sorted(norm_stats)
    if not keys:
        raise UnnormKeyError("the checkpoint has no action statistics (config.json 'norm_stats' or "
                             "dataset_statistics.json); cannot un-normalize actions")
    if not unnorm_key:
        if len(keys) > 1:
            raise UnnormKeyError(f"the checkpoint has action statistics for {len(keys)} datasets; set "
                                 f"unnorm_key to one of: {', '.join(keys)}")
        return keys[0]
    if unnorm_key not in norm_stats:
        raise UnnormKeyError(f"unnorm_key {unnorm_key!r} not in the checkpoint's statistics; available: "
                             f"{', '.join(keys)}")
    return unnorm_key


def action_stats(norm_stats: dict, unnorm_key: str | None = None, bounds: str = "q99", eps: float = 0.0,
                 part: str = "action") -> ActionStats:
    """Parse and check the statistics of one dataset's `part` ("action" or "proprio") with the given
    bounds ("q99": q01/q99, "minmax": min/max)."""
    key = select_unnorm_key(norm_stats, unnorm_key)
    low_name, high_name = BOUNDS[bounds]
    entry = norm_stats[key]
    values = entry.get(part) if isinstance(entry, dict) else None
    where = f"norm_stats[{key!r}][{part!r}]"
    if not isinstance(values, dict) or low_name not in values or high_name not in values:
        raise UnnormKeyError(f"norm_stats[{key!r}] has no {part!r} entry with {low_name} and {high_name}")
    low = np.asarray(values[low_name], dtype=np.float64)
    high = np.asarray(values[high_name], dtype=np.float64)
    mask = np.asarray(values.get("mask", [True] * len(low)), dtype=bool)
    if low.ndim != 1 or low.shape != high.shape or low.shape != mask.shape:
        raise UnnormKeyError(f"{where}: {low_name}, {high_name}, mask must be equal-length lists")
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise UnnormKeyError(f"{where}: {low_name}/{high_name} contain NaN or Inf")
    return ActionStats(key=key, q01=low, q99=high, mask=mask, eps=eps)


def unnormalize(normalized: np.ndarray, stats: ActionStats) -> np.ndarray:
    """[..., D] in [-1, 1] -> robot units: where(mask, 0.5 (a + 1) (high - low + eps) + low, a)."""
    a = np.asarray(normalized, dtype=np.float64)
    if a.shape[-1] != stats.dim:
        raise ValueError(f"actions have {a.shape[-1]} dimensions, the statistics {stats.dim}")
    span = stats.q99 - stats.q01 + stats.eps
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite results are the caller's check
        return np.where(stats.mask, 0.5 * (a + 1.0) * span + stats.q01, a)


def normalize_proprio(proprio: np.ndarray, stats: ActionStats) -> np.ndarray:
    """OFT's proprio normalization: clip(where(mask, 2 (x - low) / (high - low + eps) - 1, x), -1, 1)."""
    x = np.asarray(proprio, dtype=np.float64)
    if x.shape[-1] != stats.dim:
        raise ValueError(f"proprio has {x.shape[-1]} values, the statistics {stats.dim}")
    span = stats.q99 - stats.q01 + stats.eps
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.clip(np.where(stats.mask, 2.0 * (x - stats.q01) / span - 1.0, x), -1.0, 1.0)


def normalize(actions: np.ndarray, stats: ActionStats) -> np.ndarray:
    """Inverse of `unnormalize` (for training data): robot units -> [-1, 1] where masked."""
    a = np.asarray(actions, dtype=np.float64)
    span = np.where(stats.q99 - stats.q01 == 0, 1.0, stats.q99 - stats.q01)
    return np.where(stats.mask, 2.0 * (a - stats.q01) / span - 1.0, a)


@dataclass(frozen=True)
class GripperOptions:
    """What to do with the last action dimension (OpenVLA: 1 open, 0 closed)."""

    binarize: bool = False
    invert: bool = False

    def apply(self, actions: np.ndarray) -> np.ndarray:
        """Returns a copy with the gripper (last column) binarized at 0.5 and/or inverted."""
        out = np.array(actions, dtype=np.float64, copy=True)
        g = out[..., -1]
        if self.binarize:
            g = np.where(g >= 0.5, 1.0, 0.0)
        if self.invert:
            g = 1.0 - g
        out[..., -1] = g
        return out
