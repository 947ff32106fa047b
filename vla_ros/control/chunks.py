"""Action chunks in time: where a chunk is placed (alignment), how overlapping chunks combine (the
rules), when the next inference is due, and the command jump measured at each chunk switch.

A chunk of K actions answers one observation. Aligned to that observation, action k spans
[stamp + k*P, stamp + (k+1)*P); aligned to its arrival, it starts when it arrives. The chunks in force
at a time t form a chain: the newest chunk and the older ones back to the first that no longer covers
t (or, for `crossfade`, whose fade has ended). The value in force at t is a weighted sum over the chain:

- replace:   the newest chunk only.
- crossfade: each newer chunk fades in linearly over `crossfade_s` from its takeover; an older chunk
             still in force at the takeover that ends during the fade holds its last action until
             the fade is over; the gripper switches to the newer chunk's value half way.
- blend:     each newer chunk weighs `blend_weight`, what was in force before 1 - blend_weight.
- ensemble:  ACT's temporal ensembling: the chunk at position i of the chain (0 = oldest) weighs
             exp(-ensemble_decay * i), normalized. Sensible only when inference is faster than one
             action period, so that many predictions cover each action.

A chunk of one action (autoregressive models) always replaces, from its arrival under `auto`: exactly
the scheduling of the autoregressive family before chunks were combined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vla_ros.core.config import ControlConfig

ALIGNMENTS = ("auto", "observation", "arrival")
RULES = ("crossfade", "replace", "blend", "ensemble")
ENSEMBLE_CAVEAT = "only sensible when inference is faster than one action period"


@dataclass(frozen=True)
class ChunkSettings:
    """How chunks are aligned, combined and re-planned (the `control.chunk_*` parameters)."""

    rule: str = "crossfade"
    alignment: str = "auto"  # auto: observation for chunks of > 1 action, arrival for 1-action chunks
    crossfade_s: float = 0.1  # [s], 0 = plain replacement
    blend_weight: float = 0.5  # weight of the newer chunk where two overlap
    ensemble_decay: float = 0.01  # m in exp(-m * i), i = 0 for the oldest prediction
    replan_fraction: float = 0.5  # share of the current chunk played before the next inference is due

    def __post_init__(self) -> None:
        """Raises ValueError naming the bad setting."""
        if self.rule not in RULES:
            raise ValueError(f"chunk rule must be one of {list(RULES)}, got {self.rule!r}")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"chunk alignment must be one of {list(ALIGNMENTS)}, got {self.alignment!r}")
        for name, lo, hi in (("crossfade_s", 0.0, math.inf), ("blend_weight", 0.0, 1.0),
                             ("ensemble_decay", 0.0, math.inf), ("replan_fraction", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(f"chunk setting {name} must be a number in [{lo}, {hi}], got {value!r}")

    def rule_for(self, count: int) -> str:
        """The rule a chunk of `count` actions is combined by (one action: always replace)."""
        return self.rule if count > 1 else "replace"

    def aligns_to_observation(self, count: int) -> bool:
        """Whether a chunk of `count` actions is played from its observation's stamp."""
        return self.alignment == "observation" or (self.alignment == "auto" and count > 1)


PLAIN = ChunkSettings(rule="replace", alignment="arrival")  # every chunk from its arrival, replacing


def chunk_settings(control: ControlConfig) -> ChunkSettings:
    """The chunk settings of the node's `control` parameters."""
    return ChunkSettings(rule=control.chunk_rule, alignment=control.chunk_alignment,
                         crossfade_s=control.crossfade_s, blend_weight=control.blend_weight,
                         ensemble_decay=control.ensemble_decay, replan_fraction=control.replan_fraction)


def describe(settings: ChunkSettings) -> str:
    """One line for the start-up log: the rule, its parameter, the alignment (and the ensemble caveat)."""
    detail = {"crossfade": f"crossfade over {settings.crossfade_s:g} s", "replace": "replace",
              "blend": f"blend, newer chunk weight {settings.blend_weight:g}",
              "ensemble": f"temporal ensemble, decay {settings.ensemble_decay:g} ({ENSEMBLE_CAVEAT})",
              }[settings.rule]
    return (f"action chunks: {detail}; aligned to {settings.alignment}; next inference after "
            f"{settings.replan_fraction:g} of a chunk")


def chain_weights(settings: ChunkSettings, rule: str, since: list[float], t: float) -> list[float]:
    """Weights of a chain of chunks (oldest first) at time t; `since`: when each took over [s]."""
    n = len(since)
    if rule == "replace" or n == 1:
        return [0.0] * (n - 1) + [1.0]
    if rule == "ensemble":
        raw = [math.exp(-settings.ensemble_decay * i) for i in range(n)]
        total = sum(raw)
        return [w / total for w in raw]
    weights = [0.0] * n
    kept = 1.0  # what the newer chunks leave to the older ones
    for i in range(n - 1, 0, -1):
        new = fade(settings.crossfade_s, t - since[i]) if rule == "crossfade" else settings.blend_weight
        weights[i] = kept * new
        kept *= 1.0 - new
    weights[0] = kept
    return weights


def chain_gripper(settings: ChunkSettings, rule: str, since: list[float], grippers: list[float],
                  t: float) -> float:
    """The gripper value of a chain (oldest first) at time t: crossfade switches half way through the
    fade, replace takes the newest, blend and ensemble weigh the values as the motion."""
    if rule == "crossfade":
        value = grippers[0]
        for start, gripper in zip(since[1:], grippers[1:]):
            if fade(settings.crossfade_s, t - start) >= 0.5:
                value = gripper
        return value
    weights = chain_weights(settings, rule, since, t)
    return float(sum(w * g for w, g in zip(weights, grippers))) if len(grippers) > 1 else grippers[0]


def fade(duration: float, elapsed: float) -> float:
    """Linear fade-in weight `elapsed` seconds into a fade of `duration` seconds (0 = a step)."""
    if elapsed >= duration:
        return 1.0
    return elapsed / duration if elapsed > 0.0 else 0.0


@dataclass(frozen=True)
class Arrival:
    """What became of the last chunk offered to the scheduler."""

    stamp: float  # the chunk's observation stamp [s]
    delay_s: float  # arrival time - observation stamp [s]
    skipped: int  # actions whose span had fully passed when it arrived (dropped)
    late: bool  # every action had passed: rejected
    takeover: float  # when it took over: its arrival, or the last tick if that was later [s]
