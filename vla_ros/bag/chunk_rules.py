"""The chunk rules side by side on one bag: `vla-ros replay BAG --out DIR --chunk-rules RULE,RULE,...`
replays the bag once per rule (control.chunk_rule, every other setting the same) into DIR/<rule> and
prints the command jump at chunk switches per rule (before the safety filter, the largest over the 6
axes [m/s or rad/s]), with the switches, the actions dropped on arrival, the late chunks and the HOLD
ticks. The same policy object serves every rule, so the rows differ only by the rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from vla_ros.bag.replay_types import ReplayOptions
from vla_ros.bag.replayer import replay_bag
from vla_ros.control.chunks import RULES
from vla_ros.core.config import NodeConfig
from vla_ros.core.types import Policy


@dataclasses.dataclass(frozen=True)
class RuleRow:
    """One rule's replay: its chunk figures (summary.json's `chunks`) and HOLD ticks."""

    rule: str
    switches: int
    jump_max: float  # -1 without a switch
    jump_p95: float  # -1 without a switch
    dropped_actions: int
    rejected_late: int
    holds: int
    ticks: int


def parse_rules(text: str) -> list[str]:
    """The comma-separated rules of --chunk-rules ('all' = every rule); ValueError naming a bad one."""
    rules = list(RULES) if text.strip() == "all" else [r.strip() for r in text.split(",") if r.strip()]
    bad = [r for r in rules if r not in RULES]
    if bad or not rules:
        raise ValueError(f"--chunk-rules {text!r}: give 'all' or comma-separated rules of {', '.join(RULES)}")
    return list(dict.fromkeys(rules))


def with_rule(config: NodeConfig, rule: str) -> NodeConfig:
    """`config` with control.chunk_rule = rule."""
    return dataclasses.replace(config, control=dataclasses.replace(config.control, chunk_rule=rule))


def rule_row(rule: str, summary: dict) -> RuleRow:
    """The table row of one replay's summary.json."""
    chunks, commands = summary["chunks"], summary["commands"]
    return RuleRow(rule, chunks["chunk_switches"], chunks["chunk_jump_max"], chunks["chunk_jump_p95"],
                   chunks["dropped_actions"], chunks["rejected_chunks_late"], commands["hold"],
                   commands["total"])


def compare_rules(bag: str | Path, out_dir: str | Path, config: NodeConfig, policy: Policy,
                  options: ReplayOptions, rules: Sequence[str]) -> list[RuleRow]:
    """Replay `bag` once per rule into out_dir/<rule>; one row per rule, in the order given."""
    out = Path(out_dir)
    return [rule_row(rule, replay_bag(bag, out / rule, with_rule(config, rule), policy, options).summary)
            for rule in rules]


def table(rows: Sequence[RuleRow]) -> str:
    """The rows as a text table."""
    lines = [f"{'rule':<10} {'switches':>8} {'max jump':>9} {'p95 jump':>9} {'dropped':>8} {'late':>5} "
             f"{'holds':>6} {'ticks':>6}"]
    lines += [f"{r.rule:<10} {r.switches:>8} {r.jump_max:>9.4g} {r.jump_p95:>9.4g} {r.dropped_actions:>8} "
              f"{r.rejected_late:>5} {r.holds:>6} {r.ticks:>6}" for r in rows]
    return "\n".join(lines)
