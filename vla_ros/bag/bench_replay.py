"""Offline replay speed against real time, on a generated camera bag (default 60 s, 30 Hz camera).

    vla-ros bench-replay [--seconds 60] [--policy synthetic|model] [--checkpoint DIR]
        [--backend torch] [--latency-model zero] [--bag EXISTING_BAG] [--json OUT.json]

The generated bag's pictures come from a FrameFactory: moving gradients here, the simulator's
(vla_ros.sim.frames.sim_frames) when a caller that may import sim/ passes it to `main`.

Prints a table (wall time per stage and the real-time factor: bag seconds per wall second, > 1 is
faster than real time) and writes the same figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from vla_ros.bag.io import BagError, BagReader
from vla_ros.bag.latency import LatencyModel
from vla_ros.bag.make_bag import FrameFactory, FrameSource, gradient_factory, write_camera_bag
from vla_ros.bag.replay import make_replay_policy
from vla_ros.bag.replay_types import ReplayError, ReplayOptions
from vla_ros.bag.replayer import replay_bag
from vla_ros.core.config import load_config
from vla_ros.core.schema import ConfigError


def run_benchmark(seconds: float = 60.0, rate_hz: float = 30.0, size: int = 224,
                  policy_name: str = "synthetic", overrides: dict | None = None, latency: str = "zero",
                  bag: str | None = None, workdir: str | None = None, threads: int = 1,
                  frames: FrameSource | None = None) -> dict:
    """Generate (or use) a bag, replay it once, return the figures (frames default: gradients)."""
    try:
        import torch  # lazy: torch is heavy and optional (the synthetic policy needs none)

        torch.set_num_threads(threads)
    except ImportError:
        pass
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="vla_replay_bench_", dir=workdir))
    try:
        gen_s = 0.0
        if bag is None:
            t = time.monotonic()
            frames = frames or gradient_factory(0, size, size)
            bag_path = write_camera_bag(tmp / "bench_bag", frames, seconds, rate_hz)
            gen_s = time.monotonic() - t
        else:
            bag_path = Path(bag)
        with BagReader(bag_path) as reader:
            bag_info = {"path": str(bag_path) if bag else "(generated)", "duration_s": reader.duration_s,
                        "messages": reader.message_count, "storage": reader.storage,
                        "bytes": sum(f.stat().st_size for f in Path(bag_path).rglob("*") if f.is_file())}
        config = load_config(None, overrides or {})
        policy = make_replay_policy(policy_name, config)
        result = replay_bag(bag_path, tmp / "out", config, policy,
                            ReplayOptions(latency=LatencyModel.parse(latency)))
        s = result.summary
        replayed = s["bag"]["replayed_s"]
        t = result.timings_s
        return {
            "bag": bag_info, "bag_generation_s": gen_s, "replayed_s": replayed,
            "policy": s["inference"]["policy"], "latency_model": latency,
            "inferences": s["inference"]["calls"], "policy_runs": s["inference"]["policy_runs"],
            "commands": s["commands"]["total"],
            "wall_s": t, "real_time_factor": {
                "total": replayed / t["total"], "replay_loop": replayed / t["replay_loop"],
                "replay_loop_without_policy": replayed / max(t["replay_loop"] - t["policy_calls"], 1e-9)},
            "policy_call_ms_mean": 1e3 * t["policy_calls"] / max(s["inference"]["policy_runs"], 1),
            "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "torch_threads": threads},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_table(r: dict) -> str:
    """The figures as a table."""
    t, f = r["wall_s"], r["real_time_factor"]
    rows = [("replay loop (read, decode, policy, core, write bag)", t["replay_loop"], f["replay_loop"]),
            ("  of which policy calls", t["policy_calls"], None),
            ("outputs (CSV, summary, plot)", t["outputs"], None),
            ("total", t["total"], f["total"])]
    lines = [f"replay benchmark: {r['replayed_s']:.1f} s bag ({r['bag']['messages']} messages, "
             f"{r['bag']['bytes'] / 1e6:.0f} MB), policy {r['policy']}, latency {r['latency_model']}, "
             f"{r['inferences']} inferences ({r['policy_runs']} run, "
             f"{r['policy_call_ms_mean']:.2f} ms each), "
             f"{r['commands']} commands",
             f"{'stage':<54} {'wall [s]':>9} {'x real time':>12}"]
    for name, wall, factor in rows:
        tail = f" {factor:12.1f}" if factor is not None else ""
        lines.append(f"{name:<54} {wall:9.2f}{tail}")
    lines.append(f"faster than real time: {'yes' if f['total'] > 1 else 'NO'} (factor {f['total']:.2f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None, frames: FrameFactory = gradient_factory) -> int:
    """CLI entry: 0 after printing the table, 2 for a bad bag, config or argument."""
    ap = argparse.ArgumentParser(prog="vla-ros bench-replay",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="generated bag duration [s]")
    ap.add_argument("--rate", type=float, default=30.0, help="camera rate of the generated bag [Hz]")
    ap.add_argument("--size", type=int, default=224, help="image side of the generated bag [px]")
    ap.add_argument("--bag", help="replay this bag instead of generating one")
    ap.add_argument("--policy", choices=("synthetic", "model"), default="synthetic")
    ap.add_argument("--checkpoint", help="policy.checkpoint (with --policy model)")
    ap.add_argument("--backend", help="policy.backend (with --policy model)")
    ap.add_argument("--latency-model", default="zero")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--workdir", help="where the temporary bag and outputs go (default: system temp)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    overrides = {}
    if args.checkpoint:
        overrides["policy.checkpoint"] = args.checkpoint
    if args.backend:
        overrides["policy.backend"] = args.backend
    try:
        result = run_benchmark(args.seconds, args.rate, args.size, args.policy, overrides, args.latency_model,
                               args.bag, args.workdir, args.threads,
                               None if args.bag else frames(0, args.size, args.size))
    except (BagError, ReplayError, ConfigError, ValueError) as exc:
        print(f"bench_replay: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
