"""`vla-ros bench-chunks`: the chunk rules side by side on a synthetic chunked policy played through
ControlCore (no ROS, no model).

The robot should follow a smooth reference motion (sinusoids on the 6 axes, the gripper toggling). The
policy sees the observation time and the robot's pose, and predicts a chunk of K actions: the reference's
deltas over the chunk, a correction back towards the reference spread over the chunk, and a per-chunk
velocity bias (a real model's error, different in every chunk, which is what makes chunk switches jump).
One inference runs at a time; it starts when `ControlCore.wants_inference` says so and its result
arrives after a jittered latency. The robot integrates the filtered commands. Each rule sees the same
latencies and biases, so the rows differ only by the rule.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass

import numpy as np

from vla_ros.control.chunks import ALIGNMENTS, ENSEMBLE_CAVEAT, RULES, ChunkSettings
from vla_ros.control.core import ControlCore
from vla_ros.core.limits import SafetyLimits
from vla_ros.core.types import ActionChunk

INSTRUCTION = "follow the reference"
AMPLITUDE = np.array([0.05, 0.04, 0.03, 0.15, 0.1, 0.2])  # reference amplitude per axis [m, rad]
FREQUENCY_HZ = np.array([0.25, 0.2, 0.3, 0.15, 0.2, 0.1])
PHASE = np.array([0.0, 1.0, 2.0, 0.5, 1.5, 2.5])
GRIPPER_HZ = 0.1  # the gripper opens and closes every 5 s
ROTATION_BIAS = 2.0  # a chunk's rotation bias [rad/s] per m/s of its translation bias


@dataclass(frozen=True)
class BenchSettings:
    """The scenario every rule is run on."""

    rate_hz: float = 50.0
    period_s: float = 0.05
    chunk: int = 8
    latency_s: float = 0.36  # default: 0.9 * chunk * period
    jitter: float = 0.1  # latency spread, uniform +-jitter * latency
    bias_mps: float = 0.01  # standard deviation of a chunk's translation velocity bias [m/s]
    duration_s: float = 30.0
    seed: int = 0


@dataclass(frozen=True)
class RuleResult:
    """One row of the table."""

    rule: str
    switches: int
    jump_max: float  # [m/s or rad/s], the largest over the 6 axes, before the safety filter
    jump_p95: float
    tracking_error_mm: float  # mean |position - reference position|
    dropped_actions: int
    rejected_late: int
    holds: int
    ticks: int


def reference(t: float) -> np.ndarray:
    """The reference pose offset [6] at time t [s] (m, rad)."""
    return AMPLITUDE * np.sin(2.0 * math.pi * FREQUENCY_HZ * t + PHASE)


def reference_gripper(t: float) -> float:
    return 1.0 if math.sin(2.0 * math.pi * GRIPPER_HZ * t) >= 0.0 else 0.0


def predict(stamp: float, pose: np.ndarray, bias: np.ndarray, bench: BenchSettings) -> ActionChunk:
    """The synthetic policy's chunk for an observation at `stamp` of the robot at `pose` [6]."""
    times = stamp + bench.period_s * np.arange(bench.chunk + 1)
    path = np.stack([reference(float(t)) for t in times])
    correction = (path[0] - pose) / bench.chunk
    actions = np.empty((bench.chunk, 7))
    actions[:, :6] = np.diff(path, axis=0) + correction + bias * bench.period_s
    actions[:, 6] = [reference_gripper(float(t)) for t in times[:-1]]
    return ActionChunk(actions, stamp, INSTRUCTION)


def draws(bench: BenchSettings) -> tuple[np.ndarray, np.ndarray]:
    """Latency [s] and velocity bias [6] of every inference the run can make (the same for each rule)."""
    rng = np.random.default_rng(bench.seed)
    count = int(bench.duration_s / max(bench.latency_s * (1.0 - bench.jitter), 1e-3)) + 2
    latencies = bench.latency_s * (1.0 + bench.jitter * rng.uniform(-1.0, 1.0, size=count))
    scale = np.array([1.0, 1.0, 1.0, ROTATION_BIAS, ROTATION_BIAS, ROTATION_BIAS]) * bench.bias_mps
    return latencies, rng.normal(size=(count, 6)) * scale


def run_rule(bench: BenchSettings, chunking: ChunkSettings) -> RuleResult:
    """Play the scenario with one chunk rule."""
    tick_s = 1.0 / bench.rate_hz
    core = ControlCore(SafetyLimits(), tick_s, bench.period_s, chunking=chunking)
    core.set_armed(True)
    core.on_instruction(INSTRUCTION, 0.0)
    latencies, biases = draws(bench)
    pose, calls = reference(0.0), 0
    pending: tuple[float, ActionChunk] | None = None  # (arrival time, chunk) of the inference running
    jumps, errors = [], []
    for k in range(1, int(round(bench.duration_s * bench.rate_hz)) + 1):
        now = k * tick_s
        if pending is not None and pending[0] <= now:
            core.on_chunk(pending[1], pending[0])
            pending = None
        core.on_image(now)
        switches = core.chunk_report.switches
        command = core.tick(now)
        pose = pose + np.concatenate([command.translation, command.rotation])
        errors.append(float(np.linalg.norm(pose[:3] - reference(now)[:3])))
        report = core.chunk_report
        if report.switches > switches:
            jumps.append(report.jump_last)
        if pending is None and core.wants_inference(now):
            pending = (now + float(latencies[calls]), predict(now, pose, biases[calls], bench))
            calls += 1
    counters = core.counters
    return RuleResult(chunking.rule, len(jumps), max(jumps, default=0.0),
                      float(np.percentile(jumps, 95)) if jumps else 0.0, 1000.0 * float(np.mean(errors)),
                      counters["dropped_actions"], counters["rejected_chunks_late"], counters["holds"],
                      counters["commands"])


def table(results: list[RuleResult]) -> str:
    """The results as a text table."""
    lines = [f"{'rule':<10} {'switches':>8} {'max jump':>9} {'p95 jump':>9} {'track mm':>9} "
             f"{'dropped':>8} {'late':>5} {'holds':>6}"]
    lines += [f"{r.rule:<10} {r.switches:>8} {r.jump_max:>9.4f} {r.jump_p95:>9.4f} "
              f"{r.tracking_error_mm:>9.2f} {r.dropped_actions:>8} {r.rejected_late:>5} {r.holds:>6}"
              for r in results]
    return "\n".join(lines)


def overlap_note(bench: BenchSettings, chunking: ChunkSettings) -> str | None:
    """Why no chunk can take over from one in force (one inference at a time), or None when some can."""
    duration = bench.chunk * bench.period_s
    replan = chunking.replan_fraction * duration
    if chunking.aligns_to_observation(bench.chunk):
        needed, rule = bench.latency_s + max(bench.latency_s, replan), "latency + max(latency, replan)"
    else:
        needed, rule = bench.latency_s + replan, "latency + replan"
    if needed < duration:
        return None
    return (f"note: with one inference at a time a chunk arrives before the last one ends only if {rule} < "
            f"K * period ({needed:.3f} s >= {duration:.3f} s here): expect holds and few switches; try "
            "--alignment arrival --replan-fraction 0, or a lower --latency")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vla-ros bench-chunks", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=50.0, help="control rate [Hz] (default 50)")
    p.add_argument("--period", type=float, default=0.05, help="action period [s] (default 0.05)")
    p.add_argument("--chunk", type=int, default=8, help="actions per chunk K (default 8)")
    p.add_argument("--latency", type=float, default=None,
                   help="mean inference latency [s] (default 0.9 * chunk * period)")
    p.add_argument("--jitter", type=float, default=0.1, help="latency spread, +- this fraction (default 0.1)")
    p.add_argument("--bias", type=float, default=0.01,
                   help="std of a chunk's velocity error [m/s]; rotation twice that in rad/s (default 0.01)")
    p.add_argument("--duration", type=float, default=30.0, help="simulated time per rule [s] (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    p.add_argument("--alignment", choices=ALIGNMENTS, default="auto")
    p.add_argument("--replan-fraction", type=float, default=0.5)
    p.add_argument("--crossfade", type=float, default=0.1, help="crossfade duration [s] (default 0.1)")
    p.add_argument("--blend-weight", type=float, default=0.5)
    p.add_argument("--ensemble-decay", type=float, default=0.01)
    p.add_argument("--json", metavar="FILE", help="also write the settings and the rows as JSON")
    return p.parse_args(argv)


def bench_settings(args: argparse.Namespace) -> BenchSettings:
    """The scenario of the command line; raises ValueError for impossible values."""
    latency = 0.9 * args.chunk * args.period if args.latency is None else args.latency
    if not (args.rate > 0 and args.period > 0 and args.chunk >= 1 and latency > 0 and args.duration > 0
            and 0.0 <= args.jitter < 1.0 and args.bias >= 0.0):
        raise ValueError("rate, period, chunk, latency and duration must be positive, jitter in [0, 1), "
                         "bias >= 0")
    return BenchSettings(args.rate, args.period, args.chunk, latency, args.jitter, args.bias, args.duration,
                         args.seed)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        bench = bench_settings(args)
        chunkings = [ChunkSettings(rule=rule, alignment=args.alignment, crossfade_s=args.crossfade,
                                   blend_weight=args.blend_weight, ensemble_decay=args.ensemble_decay,
                                   replan_fraction=args.replan_fraction) for rule in args.rules]
    except ValueError as exc:
        print(f"vla-ros bench-chunks: {exc}", file=sys.stderr)
        return 2
    print(f"{bench.rate_hz:g} Hz control, K={bench.chunk} actions of {bench.period_s:g} s, latency "
          f"{bench.latency_s:.3f} s +-{100 * bench.jitter:g} %, {bench.duration_s:g} s per rule, aligned to "
          f"{args.alignment}, next inference after {args.replan_fraction:g} of a chunk")
    results = [run_rule(bench, chunking) for chunking in chunkings]
    print(table(results))
    print("jumps: |velocity after - before| at a chunk switch, before the safety filter [m/s or rad/s]; "
          "track: mean distance to the reference [mm]")
    note = overlap_note(bench, chunkings[0])
    if note:
        print(note)
    if "ensemble" in args.rules:
        print(f"ensemble: {ENSEMBLE_CAVEAT}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"settings": asdict(bench), "chunking": [asdict(c) for c in chunkings],
                       "results": [asdict(r) for r in results]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
