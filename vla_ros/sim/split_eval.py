"""eval-demo with the split deployment's link between the policy and control halves: the link flags,
the chunk figures summed over episodes and the side-by-side table of a single-process and a split run."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from vla_ros.control.netem import add_fault_arguments, faults_from_arguments
from vla_ros.sim.harness import EpisodeResult, SplitLink

LINK_FIELDS = ("sent", "lost_on_link", "duplicated_on_link", "reordered_on_link", "delivered", "duplicates",
               "in_flight", "link_lost")


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    """The link flags of eval-demo."""
    group = parser.add_argument_group(
        "split deployment", "the policy behind a faulty link (vla_ros.control.netem, as bench-split); chunks "
        "reach the control half at their delivery time on sim time, between control ticks")
    add_fault_arguments(group, latency_default=None)
    group.add_argument("--link-seed", type=int, default=0,
                       help="seed of the link's faults, combined with each episode's scene seed (default 0)")
    group.add_argument("--compare-split", action="store_true",
                       help="run the same seeds single-process and split, and print both side by side")


def link_from_args(args: argparse.Namespace) -> SplitLink | None:
    """The link the flags describe; None when no link flag was given (single-process). ValueError for
    bad values."""
    given = (args.latency_ms is not None or args.jitter_ms or args.loss or args.duplicate or args.reorder
             or args.compare_split)
    if not given:
        return None
    return SplitLink(faults_from_arguments(args), seed=args.link_seed)


def describe_link(link: SplitLink) -> str:
    """One line: what the link does."""
    f = link.faults
    return (f"link latency {1e3 * f.latency_s:g} +- {1e3 * f.jitter_s:g} ms, loss {100 * f.loss:g}%, "
            f"duplicate {100 * f.duplicate:g}%, reorder {100 * f.reorder:g}% by {1e3 * f.reorder_s:g} ms, "
            f"seed {link.seed}")


def chunk_totals(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Chunk figures summed over episodes (link figures only for a split run)."""
    totals: dict[str, Any] = {"accepted": sum(r.chunks_accepted for r in results),
                              "rejected": sum(r.chunks_rejected for r in results)}
    pairs = [(r, r.split) for r in results if r.split is not None]
    if not pairs:
        return totals
    for name in LINK_FIELDS:
        totals[name] = sum(getattr(stats, name) for _, stats in pairs)
    reasons: dict[str, int] = {}
    for _, stats in pairs:
        for why, count in stats.rejected_by_reason.items():
            reasons[why] = reasons.get(why, 0) + count
    totals["rejected_by_reason"] = dict(sorted(reasons.items()))
    weighted = [(stats.mean_delay_s, r.chunks_accepted) for r, stats in pairs
                if stats.mean_delay_s is not None]
    accepted = sum(n for _, n in weighted)
    totals["mean_delay_s"] = sum(d * n for d, n in weighted) / accepted if accepted else None
    totals["max_delay_s"] = max((s.max_delay_s for _, s in pairs if s.max_delay_s is not None), default=None)
    totals["clock_problems"] = sum(bool(stats.clock_problem) for _, stats in pairs)
    return totals


def format_chunks(totals: Mapping[str, Any]) -> str:
    """`chunk_totals` on one line."""
    line = f"{totals['accepted']} accepted, {totals['rejected']} rejected"
    if "sent" not in totals:
        return line
    reasons = ", ".join(f"{why} {n}" for why, n in totals["rejected_by_reason"].items())
    delay = totals["mean_delay_s"]
    delays = (f"; delay from observation mean {1e3 * delay:.0f} ms, max {1e3 * totals['max_delay_s']:.0f} ms"
              if delay is not None else "")
    return (f"{totals['sent']} sent, {totals['lost_on_link']} lost on the link, "
            f"{totals['duplicated_on_link']} duplicated ({totals['duplicates']} dropped), "
            f"{totals['reordered_on_link']} reordered, {totals['in_flight']} in flight at the end; {line}"
            + (f" ({reasons})" if reasons else "") + delays)


def rate_difference_points(single: Mapping[str, Mapping[str, float]],
                           split: Mapping[str, Mapping[str, float]]) -> float:
    """Overall success rate of the split run minus the single-process one, in percentage points."""
    return 100.0 * (split["all"]["success_rate"] - single["all"]["success_rate"])


def format_comparison(single: Mapping[str, Mapping[str, float]], split: Mapping[str, Mapping[str, float]],
                      single_chunks: Mapping[str, Any], split_chunks: Mapping[str, Any]) -> str:
    """Two `results_table`s (same episodes) side by side, the difference and the chunk figures."""
    lines = [f"{'task':<6} {'episodes':>8} {'single':>8} {'split':>8} {'diff':>7} {'actions':>8} "
             f"{'actions':>8}",
             f"{'':<6} {'':>8} {'rate':>8} {'rate':>8} {'points':>7} {'single':>8} {'split':>8}"]
    for kind, row in single.items():
        other = split[kind]
        diff = 100 * (other["success_rate"] - row["success_rate"])
        lines.append(f"{kind:<6} {int(row['episodes']):>8} {100 * row['success_rate']:>7.1f}% "
                     f"{100 * other['success_rate']:>7.1f}% {diff:>+7.1f} {row['mean_actions']:>8.1f} "
                     f"{other['mean_actions']:>8.1f}")
    lines.append(f"chunks single: {format_chunks(single_chunks)}")
    lines.append(f"chunks split:  {format_chunks(split_chunks)}")
    return "\n".join(lines)
