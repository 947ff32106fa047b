"""`vla-ros replay BAG --out DIR`: deterministic offline replay of a bag through the policy and safety filter.

The timeline is described in vla_ros/bag/replayer.py. Replay wall time is about (policy runs) x (model
time) plus a few ms per message; --skip-superseded runs fewer policy calls.

Outputs in DIR (written under a temporary name, renamed when complete): replay/ (mcap bag: the input
topics, the commands as vla_ros/EndEffectorCommand and VlaStatus), commands.csv, inferences.csv,
plot.png, summary.json, and with --compare: compare.txt, compare.json (exit 1 on a regression).
With --chunk-rules (see chunk_rules.py): one such directory per rule, DIR/<rule>, a table of the command
jumps at chunk switches per rule on stdout and in DIR/chunk_rules.json.
--split runs the policy and control halves joined by the vla_ros/ActionChunk message (zero link latency;
the chunks go to the output bag on split.chunk_topic); --control-only runs the control half alone on the
chunks recorded in the bag, without a policy. Both add the link counts to summary.json and VlaStatus.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from vla_ros.bag.chunk_rules import compare_rules, parse_rules, table
from vla_ros.bag.compare import load_reference, parse_tolerance
from vla_ros.bag.io import BagError
from vla_ros.bag.latency import LatencyModel
from vla_ros.bag.replay_types import STATUS_TOPIC, CompareSpec, ReplayError, ReplayOptions
from vla_ros.bag.replayer import replay_bag
from vla_ros.core.config import NodeConfig, load_config
from vla_ros.core.schema import ConfigError, parse_assignments
from vla_ros.core.types import Policy
from vla_ros.model.spec import CheckpointError
from vla_ros.runtime.factory import BackendUnavailableError, make_policy
from vla_ros.runtime.synthetic import SyntheticPolicy


def make_replay_policy(name: str, config: NodeConfig) -> Policy:
    """The policy a replay runs: 'model' (make_policy from the config) or 'synthetic' (test double)."""
    if name == "synthetic":  # one action per call, as the autoregressive model; latency is the model's
        return SyntheticPolicy(latency_s=0.0, chunk_len=1)
    try:
        return make_policy(config.policy)
    except (CheckpointError, BackendUnavailableError) as exc:
        raise ReplayError(f"cannot load the policy: {exc} (or use --policy synthetic)") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="vla-ros replay", description="Deterministic offline replay of a rosbag through the policy and "
        "the safety filter; writes a bag, CSV, plot and summary, and compares against a reference.")
    ap.add_argument("bag", help="rosbag2 directory (mcap or sqlite3), or a .mcap / .db3 file")
    ap.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    ap.add_argument("--config", help="node config YAML (plain or ros__parameters form)")
    ap.add_argument("--param", "--set", dest="param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a config value, e.g. safety.max_translation_step_m=0.01 (repeatable)")
    ap.add_argument("--checkpoint", help="policy.checkpoint override")
    ap.add_argument("--backend", help="policy.backend override (torch, onnxruntime, tensorrt)")
    ap.add_argument("--policy", choices=("model", "synthetic"), default="model",
                    help="model: the configured VLA; synthetic: the deterministic test double")
    ap.add_argument("--latency-model", default="zero", metavar="zero|fixed:S|measured|trace:PATH",
                    help="simulated inference latency (default zero)")
    ap.add_argument("--disarmed", action="store_true", help="do not arm the core (replay a disarmed node)")
    ap.add_argument("--instruction", help="instruction in force from the start (bags without instructions)")
    ap.add_argument("--stamp-source", choices=("receive", "header"), default="receive",
                    help="image stamp: the bag's log time (receipt, as the node does) or header.stamp")
    ap.add_argument("--namespace", default="/", help="namespace resolving the config's relative topic names")
    ap.add_argument("--status-topic", default=STATUS_TOPIC, help="topic of the VlaStatus written to the bag")
    ap.add_argument("--compare", metavar="REF",
                    help="an earlier replay's output dir, or a command topic of the bag (topic:/name)")
    ap.add_argument("--tolerance",
                    help="absolute per-DoF tolerance: 1e-6, or 'trans=0.001,rot=0.01,gripper=0.05'")
    ap.add_argument("--max-violations", type=float, default=0.0,
                    help="allowed fraction of ticks over tolerance per DoF (default 0)")
    ap.add_argument("--max-unmatched", type=float, default=None,
                    help="allowed fraction of ticks without a reference (default 0 for replay outputs, "
                    "1 for topics)")
    ap.add_argument("--skip-superseded", action="store_true",
                    help="skip simulated policy calls whose chunk is replaced before the next control tick "
                    "(faster; exact only when calls take longer than a tick)")
    ap.add_argument("--chunk-rules", metavar="RULE,RULE|all",
                    help="replay once per chunk rule (crossfade, replace, blend, ensemble) into OUT/<rule> "
                    "and print the command jumps at chunk switches per rule (not with --compare)")
    ap.add_argument("--strict", action="store_true", help="abort on the first rejected input message")
    ap.add_argument("--no-plot", action="store_true", help="skip plot.png")
    ap.add_argument("--force", action="store_true", help="replace an existing output directory")
    halves = ap.add_mutually_exclusive_group()
    halves.add_argument("--split", action="store_true",
                        help="run the policy half and the control half joined by the vla_ros/ActionChunk "
                        "message (serialized, deserialized, zero link latency; split.watch_cameras "
                        "decides what feeds the image watchdog); the chunks go to the output bag on "
                        "split.chunk_topic")
    halves.add_argument("--control-only", action="store_true",
                        help="replay the control half alone: the ActionChunk messages recorded on "
                        "split.chunk_topic at their receive times; no policy is loaded")
    prog = ap.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="progress bar on stderr (default: when stderr is a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    return ap


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    """The replay options of the command line (reads the --compare reference)."""
    latency = LatencyModel.parse(args.latency_model)
    spec = None
    if args.compare:
        tolerance = parse_tolerance(args.tolerance)
        reference, exact = load_reference(args.compare, args.bag)
        max_unmatched = args.max_unmatched if args.max_unmatched is not None else (0.0 if exact else 1.0)
        spec = CompareSpec(reference, exact, tolerance, args.max_violations, max_unmatched)
    return ReplayOptions(
        latency=latency, armed=not args.disarmed,
        stamp_source=args.stamp_source, namespace=args.namespace, status_topic=args.status_topic,
        instruction=args.instruction,
        progress=sys.stderr.isatty() if args.progress is None else args.progress, strict=args.strict,
        plot=not args.no_plot, overwrite=args.force, compare=spec, skip_superseded=args.skip_superseded,
        mode="split" if args.split else "control" if args.control_only else "node")


def chunk_rules_main(args: argparse.Namespace, config: NodeConfig, policy: Policy, options: ReplayOptions,
                     rules: list[str]) -> int:
    """--chunk-rules: one replay per rule, the table on stdout and in OUT/chunk_rules.json."""
    rows = compare_rules(args.bag, args.out, config, policy, options, rules)
    figures = {"latency_model": options.latency.describe(), "rows": [dataclasses.asdict(r) for r in rows]}
    (Path(args.out) / "chunk_rules.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"{Path(args.bag).name}: latency {options.latency.describe()}, jumps in m/s or rad/s (largest "
          "axis, before the safety filter)")
    print(table(rows))
    return 0


def chunk_line(chunks: dict) -> str:
    """The summary line's chunk figures ('' without a chunk switch)."""
    if not chunks["chunk_switches"]:
        return ""
    return (f", {chunks['chunk_switches']} chunk switches (command jump max {chunks['chunk_jump_max']:.4g}, "
            f"p95 {chunks['chunk_jump_p95']:.4g} m/s|rad/s), {chunks['dropped_actions']} actions dropped")


def control_only_conflict(args: argparse.Namespace) -> str | None:
    """The option given that a control-only replay (no policy) cannot honour, or None."""
    given = {"--chunk-rules": args.chunk_rules, "--skip-superseded": args.skip_superseded,
             "--latency-model": args.latency_model != "zero", "--policy": args.policy != "model",
             "--checkpoint": args.checkpoint is not None, "--backend": args.backend is not None}
    return next((flag for flag, set_ in given.items() if set_), None)


def link_line(summary: dict) -> str:
    """The summary line's chunk link figures ('' for a single-node replay)."""
    link = summary.get("link")
    if link is None:
        return ""
    return (f", link: {link['received']} chunks received, {link['lost']} lost, "
            f"{link['duplicates']} duplicated, {link['reordered']} reordered")


def main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 = done (and no regression), 1 = regression against --compare, 2 = bad input."""
    args = build_parser().parse_args(argv)
    try:
        overrides = parse_assignments(args.param)
        if args.checkpoint is not None:
            overrides["policy.checkpoint"] = args.checkpoint
        if args.backend is not None:
            overrides["policy.backend"] = args.backend
        config = load_config(args.config, overrides)
        rules = parse_rules(args.chunk_rules) if args.chunk_rules else []
        if rules and args.compare:
            raise ValueError("--chunk-rules and --compare cannot be combined")
        conflict = control_only_conflict(args) if args.control_only else None
        if conflict is not None:
            raise ValueError(f"--control-only runs no policy: {conflict} does not apply")
        options = options_from_args(args)
        if Path(args.out).exists() and not args.force:
            raise BagError(f"output {args.out!r} exists already; use --force to replace it")
        policy = None if args.control_only else make_replay_policy(args.policy, config)
        if rules:
            assert policy is not None
            return chunk_rules_main(args, config, policy, options, rules)
        result = replay_bag(args.bag, args.out, config, policy, options)
    except (BagError, ReplayError, ConfigError, ValueError) as exc:
        print(f"vla-ros replay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vla-ros replay: interrupted; nothing was written", file=sys.stderr)
        return 130
    s = result.summary
    replayed = s["bag"]["replayed_s"]
    print(f"replayed {replayed:.2f} s of {s['bag']['name']} in {result.wall_s:.2f} s "
          f"({replayed / max(result.wall_s, 1e-9):.1f}x real time): {s['commands']['total']} commands "
          f"({s['commands']['hold']} HOLD), {s['interventions']['commands_changed']} changed by the safety "
          f"filter, {s['inference']['calls']} {'chunks' if args.control_only else 'inferences'}"
          f"{chunk_line(s['chunks'])}{link_line(s)} -> "
          f"{os.fspath(result.out_dir)}", file=sys.stderr)
    if result.compare is not None:
        print(result.compare.table())
        return 1 if result.compare.regression else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
