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


@dataclass(frozen=True)
class ActionStats:
    """q01/q99/mask of one dataset's actions (float64 / bool arrays of the action dimension)."""

    key: str
    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray

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


def action_stats(norm_stats: dict, unnorm_key: str | None = None) -> ActionStats:
    """Parse and check the action statistics of one dataset."""
    key = select_unnorm_key(norm_stats, unnorm_key)
    entry = norm_stats[key]
    action = entry.get("action") if isinstance(entry, dict) else None
    if not isinstance(action, dict) or "q01" not in action or "q99" not in action:
        raise UnnormKeyError(f"norm_stats[{key!r}] has no 'action' entry with q01 and q99")
    q01 = np.asarray(action["q01"], dtype=np.float64)
    q99 = np.asarray(action["q99"], dtype=np.float64)
    mask = np.asarray(action.get("mask", [True] * len(q01)), dtype=bool)
    if q01.ndim != 1 or q01.shape != q99.shape or q01.shape != mask.shape:
        raise UnnormKeyError(f"norm_stats[{key!r}]['action']: q01, q99, mask must be equal-length lists")
    if not (np.all(np.isfinite(q01)) and np.all(np.isfinite(q99))):
        raise UnnormKeyError(f"norm_stats[{key!r}]['action']: q01/q99 contain NaN or Inf")
    return ActionStats(key=key, q01=q01, q99=q99, mask=mask)


def unnormalize(normalized: np.ndarray, stats: ActionStats) -> np.ndarray:
    """[..., D] in [-1, 1] -> robot units: where(mask, 0.5 (a + 1) (q99 - q01) + q01, a)."""
    a = np.asarray(normalized, dtype=np.float64)
    if a.shape[-1] != stats.dim:
        raise ValueError(f"actions have {a.shape[-1]} dimensions, the statistics {stats.dim}")
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite results are the caller's check
        return np.where(stats.mask, 0.5 * (a + 1.0) * (stats.q99 - stats.q01) + stats.q01, a)


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
