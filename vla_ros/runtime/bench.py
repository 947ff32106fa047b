"""`vla-ros bench`: per-stage latency of the backends side by side, on one checkpoint, in one process.

    vla-ros bench --checkpoint DIR --backends torch,torch-generate --runs 30 --warmup 3 --json out/bench.json
    vla-ros bench --oft-pair out/bench_pair --runs 5 --warmup 1     # autoregressive vs OpenVLA-OFT
    vla-ros bench --llm-width 7b --layers 2 --precisions fp32,int8,int4 --json out/bench_quant.json

Each row runs the full predict (preprocess, vision, prefill, decode steps, detokenize) N times after W
warm-up calls on the same image and instruction; the table gives median / p90 per stage (ms), per
decode step, end to end (wall clock, and the calling thread's CPU time, which leaves out the time the
process waited for a busy CPU), actions/s, load time and the process's peak RSS after each row's load (rows
share the process, so the increase from row to row is what a row adds). Runs are interleaved
round-robin across rows so that the machine's load changes hit every row alike. The rows are
described in vla_ros.runtime.bench_rows.

OpenVLA-OFT rows (an OFT `--checkpoint`, or the `oft-<backend>` rows of `--oft-checkpoint`) time the
stages preprocess, vision, proprio, actions (the one LLM pass and the head) and unnormalize; one call
yields a chunk, so actions/s = chunk / end-to-end time. With both families in the run, "OFT / AR
actions/s" divides each oft-<backend> row's actions/s by the <backend> row's. `--oft-pair DIR` writes (once)
an autoregressive checkpoint and its OFT twin with the same weights (real tower shapes, a small LLM, one
camera, chunk 8: see bench_pair.py) and runs torch,oft-torch unless --backends says otherwise.

`--llm-width 7b` times no checkpoint but N Llama layers at Llama-2-7B width per weight precision
(fp32, int8, int4: prefill, decode step, weight bytes, ratios against fp32 and fp16) with ONNX Runtime
on the CPU; there --runs defaults to 5, --warmup to 1, --threads (ONNX Runtime's) to 0 = one per
physical core, --json to out/bench_quant.json. See vla_ros.runtime.bench_quant.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vla_ros.core.stats import distribution
from vla_ros.core.types import Instruction, Observation
from vla_ros.model.loader import load_vla
from vla_ros.model.preprocess import RESIZE_METHODS, ImagePreprocessor
from vla_ros.runtime import bench_quant
from vla_ros.runtime.bench_pair import LIBERO_PROPRIO, PairSpec, write_pair
from vla_ros.runtime.bench_rows import (
    OFT_PREFIX,
    BenchOptions,
    RowUnavailableError,
    Runner,
    RunResult,
    make_runner,
)
from vla_ros.runtime.factory import resolve_checkpoint
from vla_ros.runtime.policy import VlaPolicy
from vla_ros.runtime.predict_cli import read_rgb
from vla_ros.runtime.torch_backend import TorchBackend


def summarize(values: list[float]) -> dict[str, float]:
    """Median and p90 in milliseconds of durations in seconds."""
    d = distribution(np.asarray(values, dtype=np.float64) * 1e3)
    return {"median_ms": d["p50"], "p90_ms": d["p90"]}


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    current = peak
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return current, peak


def row_stats(runner: Runner, results: list[RunResult]) -> dict:
    """Per-stage and per-step statistics of one row's runs."""
    stages = {k: summarize([r.stages[k] for r in results]) for k in results[0].stages}
    n_steps = min(len(r.steps) for r in results)
    steps = {f"decode_step_{i + 1}": summarize([r.steps[i] for r in results]) for i in range(n_steps)}
    total = summarize([r.total for r in results])
    cpu = summarize([r.cpu_total for r in results])
    chunk = results[0].chunk
    return {"describe": runner.describe(), "precision": runner.precision(), "kind": runner.kind,
            "chunk": chunk, "stages": stages,
            "decode_steps": steps, "end_to_end": total, "end_to_end_thread_cpu": cpu,
            "actions_per_s": chunk * 1e3 / total["median_ms"], "tokens": results[0].tokens,
            "action": results[0].actions,
            "tokens_stable": all(r.tokens == results[0].tokens for r in results)}


def synthetic_image(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """A camera-sized RGB test image: smooth gradients plus a few blocks (deterministic)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                    (x + y) * 255 // max(width + height - 2, 1)], axis=2).astype(np.uint8)
    for _ in range(4):
        r, c = rng.integers(0, height - 40), rng.integers(0, width - 40)
        img[r:r + 40, c:c + 40] = rng.integers(0, 256, 3, dtype=np.uint8)
    return img


def format_table(result: dict) -> str:
    """Stages as rows, backends as columns: "median / p90" in ms."""
    names = list(result["backends"])
    rows: list[tuple[str, list[str]]] = []
    stage_names: list[str] = []
    for name in names:
        for key in list(result["backends"][name]["stages"]) + list(result["backends"][name]["decode_steps"]):
            if key not in stage_names:
                stage_names.append(key)

    def cell(stats: dict | None) -> str:
        return "-" if stats is None else f"{stats['median_ms']:.2f} / {stats['p90_ms']:.2f}"

    for key in stage_names:
        rows.append((key, [cell(result["backends"][n]["stages"].get(key)
                                or result["backends"][n]["decode_steps"].get(key)) for n in names]))
    rows.append(("end to end", [cell(result["backends"][n]["end_to_end"]) for n in names]))
    rows.append(("end to end, thread CPU", [cell(result["backends"][n]["end_to_end_thread_cpu"])
                                            for n in names]))
    rows.append(("actions/s", [_rate(result["backends"][n]["actions_per_s"]) for n in names]))
    rows.append(("RSS after load MiB", [f"{result['backends'][n]['peak_rss_mb']:.0f}" for n in names]))
    rows.append(("load s", [f"{result['backends'][n]['load_s']:.2f}" for n in names]))
    if "oft_speedup" in result:
        rows.append(("actions per call", [str(result["backends"][n]["chunk"]) for n in names]))
        rows.append(("OFT / AR actions/s", [_ratio(result["oft_speedup"].get(n)) for n in names]))
        rows.append(("  same, thread CPU", [_ratio(result["oft_speedup_cpu"].get(n)) for n in names]))
    if "speedup_vs_torch_generate" in result:
        rows.append(("speed-up vs generate", [f"{result['speedup_vs_torch_generate'].get(n, 0):.2f}x"
                                              for n in names]))
        rows.append(("  same, thread CPU", [f"{result['speedup_vs_torch_generate_cpu'].get(n, 0):.2f}x"
                                            for n in names]))
    same = "same tokens as 1st" if "oft_speedup" not in result else "same result as 1st of its kind"
    rows.append((same, ["yes" if result["backends"][n]["tokens_match_first"] else "NO" for n in names]))
    width0 = max(len(r[0]) for r in rows)
    widths = [max(len(n), *(len(r[1][i]) for r in rows)) for i, n in enumerate(names)]
    lines = ["ms: median / p90".ljust(width0) + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths))]
    lines += [k.ljust(width0) + "  " + "  ".join(v.rjust(w) for v, w in zip(vals, widths))
              for k, vals in rows]
    for n in names:
        lines.append(f"{n}: {result['backends'][n]['describe']}")
    lines += [f"{n}: skipped: {why}" for n, why in result.get("skipped", {}).items()]
    return "\n".join(lines)


def _rate(value: float) -> str:
    """Actions per second: one decimal, three below 1 (a real-size model on a CPU)."""
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def same_result(first: RunResult, other: RunResult) -> bool:
    """Same action tokens (autoregressive, discrete OFT), else the same first action within 1e-4."""
    if first.tokens or other.tokens:
        return first.tokens == other.tokens
    return bool(np.allclose(first.actions, other.actions, rtol=1e-4, atol=1e-4))


def oft_speedups(rows: dict[str, dict], key: str = "end_to_end") -> dict[str, float]:
    """Actions per second of each oft-<backend> row over its <backend> row's (when both ran), from the
    medians of `key` (end_to_end: wall clock; end_to_end_thread_cpu: the thread's CPU time)."""
    def rate(row: dict) -> float:
        return row["chunk"] / max(row[key]["median_ms"], 1e-9)

    return {name: rate(row) / rate(rows[name[len(OFT_PREFIX):]]) for name, row in rows.items()
            if name.startswith(OFT_PREFIX) and name[len(OFT_PREFIX):] in rows}


def run_bench(opts: BenchOptions, backends: list[str], runs: int, warmup: int, rgb: np.ndarray,
              text: str, log=print) -> dict:
    """All rows in one process; returns the JSON-ready result."""
    result: dict = {"checkpoint": opts.checkpoint or "(embedded demo)", "device": opts.device,
                    "resize": opts.resize,
                    "dtype": opts.dtype, "runs": runs, "warmup": warmup, "instruction": text,
                    "image_shape": list(rgb.shape), "torch_threads": torch.get_num_threads(),
                    "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                    "python": platform.python_version(), "torch": torch.__version__, "backends": {}}
    if opts.oft_checkpoint:
        result["oft_checkpoint"] = opts.oft_checkpoint
    runners: dict[str, Runner] = {}
    for name in backends:
        log(f"[bench] {name}: loading")
        rss0, _ = rss_mb()
        t0 = time.perf_counter()
        try:
            runners[name] = make_runner(name, opts)
        except RowUnavailableError as exc:
            result.setdefault("skipped", {})[name] = str(exc)
            log(f"[bench] {name}: skipped: {exc}")
            continue
        load_s = time.perf_counter() - t0
        rss1, peak = rss_mb()
        result["backends"][name] = {"load_s": load_s, "load_rss_delta_mb": rss1 - rss0, "peak_rss_mb": peak}
        for _ in range(warmup):
            runners[name].run(rgb, text)
    if not runners:
        skipped = "; ".join(result.get("skipped", {}).values())
        raise RowUnavailableError(f"no bench row can run here: {skipped}")
    # Round robin: run i of every row back to back, so load changes on the machine hit all rows alike.
    log(f"[bench] {runs} runs of {', '.join(runners)}, interleaved")
    results: dict[str, list[RunResult]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, runner in runners.items():
            results[name].append(runner.run(rgb, text))
    firsts: dict[str, RunResult] = {}
    for name, runner in runners.items():
        row = result["backends"][name]
        row.update(row_stats(runner, results[name]))
        row["tokens_match_first"] = same_result(firsts.setdefault(runner.kind, results[name][0]),
                                                results[name][0])
    result["peak_rss_mb"] = rss_mb()[1]
    if any(runner.kind != "autoregressive" for runner in runners.values()):
        result["oft_speedup"] = oft_speedups(result["backends"])
        result["oft_speedup_cpu"] = oft_speedups(result["backends"], "end_to_end_thread_cpu")
    if "torch-generate" in result["backends"]:
        ref = result["backends"]["torch-generate"]["end_to_end"]["median_ms"]
        result["speedup_vs_torch_generate"] = {n: ref / r["end_to_end"]["median_ms"]
                                               for n, r in result["backends"].items()}
        ref_cpu = result["backends"]["torch-generate"]["end_to_end_thread_cpu"]["median_ms"]
        result["speedup_vs_torch_generate_cpu"] = {
            n: ref_cpu / max(r["end_to_end_thread_cpu"]["median_ms"], 1e-9)
            for n, r in result["backends"].items()}
    return result


def resize_check(opts: BenchOptions, images: list[np.ndarray], text: str) -> dict:
    """How far each resize method is from PIL's bicubic: in pixels and in the actions of a checkpoint.

    The reference is the checkpoint's own pipeline fed with PIL-resized images (what OpenVLA's
    processor does). Needs Pillow, for this comparison only.
    """
    from PIL import Image  # lazy: Pillow is optional, only this comparison needs it

    loaded = load_vla(resolve_checkpoint(opts.checkpoint), dtype=opts.dtype, device=opts.device)
    policy = VlaPolicy.from_loaded(loaded, TorchBackend(loaded.model), opts.unnorm_key)
    size = loaded.preprocess.image_size
    preprocessors = {m: ImagePreprocessor(replace(loaded.preprocess, resize=m)) for m in RESIZE_METHODS
                     if m != "auto"}

    def predict(rgb: np.ndarray, method: str) -> tuple[list[int], np.ndarray]:
        policy.preprocessor = preprocessors[method]
        chunk = policy.predict(Observation(rgb=rgb, stamp=0.0), Instruction(text=text, stamp=0.0))
        return policy.last_tokens.tolist(), chunk.actions[0]

    stats: dict[str, dict] = {m: {"pixel_diffs": [], "token_mismatch": 0, "action_diffs": []}
                              for m in preprocessors}
    for rgb in images:
        pil = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC))
        ref_tokens, ref_action = predict(pil, "pil")  # already S x S: no resize in our pipeline
        for method, pre in preprocessors.items():
            diff = np.abs(pre.resize(rgb).astype(np.int16) - pil.astype(np.int16))
            tokens, action = predict(rgb, method)
            entry = stats[method]
            entry["pixel_diffs"].append(diff)
            entry["token_mismatch"] += int(tokens != ref_tokens)
            entry["action_diffs"].append(float(np.abs(action - ref_action).max()))
    out = {"images": len(images), "image_size": size, "methods": {}}
    for method, entry in stats.items():
        diffs = np.stack(entry["pixel_diffs"])
        out["methods"][method] = {
            "max_pixel_diff": int(diffs.max()), "mean_pixel_diff": float(diffs.mean()),
            "fraction_of_values_differing": float((diffs > 0).mean()),
            "images_with_different_tokens": entry["token_mismatch"],
            "max_action_diff": float(max(entry["action_diffs"]))}
    return out


def sample_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """Camera-like images of assorted sizes: gradients, blocks and sensor noise."""
    rng = np.random.default_rng(seed)
    sizes = [(480, 640), (720, 1280), (240, 320), (224, 224), (300, 400)]
    images = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        img = synthetic_image(h, w, seed=seed + i).astype(np.int16)
        img += rng.normal(0, 4, img.shape).astype(np.int16)
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return images


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-ros bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="", help="checkpoint directory (default: the embedded demo)")
    p.add_argument("--backends", default=None,
                   help="comma-separated rows (default: torch,torch-generate; with --oft-pair: "
                        "torch,oft-torch)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per row (default 30)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 3)")
    p.add_argument("--json", default=None, help="where to write the results (default out/bench.json)")
    p.add_argument("--image", default="", help="image file (default: a synthetic 640x480 image)")
    p.add_argument("--instruction", default="pick up the red block")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (0 = torch's default; default 1); with --llm-width ONNX "
                        "Runtime's (default 0 = one per physical core)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--engine-dir", default="", help="exported graphs / engines (onnxruntime, tensorrt)")
    p.add_argument("--unnorm-key", default="")
    p.add_argument("--resize", default="auto", choices=("auto", "pil", "torch", "cv2"),
                   help="image resize: pil = bit-exact numpy PIL bicubic; torch = within 1 of it, faster")
    p.add_argument("--resize-check", type=int, default=0, metavar="N",
                   help="instead of timing: compare the resize methods with PIL on N images (needs Pillow)")
    p.add_argument("--oft-checkpoint", default="", help="OpenVLA-OFT checkpoint of the oft-<backend> rows")
    p.add_argument("--oft-engine-dir", default="",
                   help="its exported graphs / engines (oft-onnxruntime, oft-tensorrt)")
    p.add_argument("--oft-pair", default="", metavar="DIR",
                   help="write (once, under DIR) and bench an autoregressive checkpoint and its OpenVLA-OFT "
                        "twin with the same weights: real tower shapes, small LLM, one camera")
    p.add_argument("--seed", type=int, default=0, help="--oft-pair, --llm-width: seed of the random weights")
    p.add_argument("--oft-proprio", type=int, default=LIBERO_PROPRIO, choices=(0, LIBERO_PROPRIO),
                   help="--oft-pair: proprio values of the OFT checkpoint (0 = no proprio token)")
    p.add_argument("--oft-chunk", type=int, default=8, help="--oft-pair: actions per OFT chunk")
    p.add_argument("--tiny-towers", action="store_true",
                   help="--oft-pair: tiny towers instead of DINOv2-L + SigLIP-SO400M shapes (quick checks)")
    bench_quant.add_arguments(p)
    return p


def pair_options(args: argparse.Namespace) -> tuple[str, str]:
    """(checkpoint, OFT checkpoint) of the run: the --oft-pair twins (written when missing), else the
    flags'."""
    if not args.oft_pair:
        return args.checkpoint, args.oft_checkpoint
    spec = PairSpec(seed=args.seed, proprio_dim=args.oft_proprio, chunk=args.oft_chunk,
                    real_towers=not args.tiny_towers)
    ar, oft = write_pair(args.oft_pair, spec, log=lambda s: print(s, file=sys.stderr))
    return str(ar), str(oft)


def quant_main(args: argparse.Namespace) -> int:
    """`vla-ros bench --llm-width ...`: the precision table (bench_quant.py)."""
    try:
        result = bench_quant.run_quant_bench(bench_quant.options_from(args),
                                             log=lambda s: print(s, file=sys.stderr))
    except (ValueError, KeyError, RuntimeError, OSError, ImportError) as exc:
        print(f"vla-ros bench: {exc}", file=sys.stderr)
        return 1
    print(bench_quant.format_quant_table(result))
    out = Path(args.json or "out/bench_quant.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.llm_width:
        return quant_main(args)
    args.runs = 30 if args.runs is None else args.runs
    args.warmup = 3 if args.warmup is None else args.warmup
    args.threads = 1 if args.threads is None else args.threads
    args.json = args.json or "out/bench.json"
    if args.runs < 1 or args.warmup < 0:
        print("vla-ros bench: --runs must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = args.backends or ("torch,oft-torch" if args.oft_pair else "torch,torch-generate")
    backends = [b.strip() for b in rows.split(",") if b.strip()]
    try:
        rgb = read_rgb(args.image) if args.image else synthetic_image()
        checkpoint, oft_checkpoint = pair_options(args)
        opts = BenchOptions(checkpoint=checkpoint, device=args.device, dtype=args.dtype,
                            engine_dir=args.engine_dir, unnorm_key=args.unnorm_key, resize=args.resize,
                            oft_checkpoint=oft_checkpoint, oft_engine_dir=args.oft_engine_dir)
        if args.resize_check > 0:
            images = [rgb] if args.image else sample_images(args.resize_check)
            result = resize_check(opts, images, args.instruction)
        else:
            result = run_bench(opts, backends, args.runs, args.warmup, rgb, args.instruction,
                               log=lambda s: print(s, file=sys.stderr))
    except (ValueError, KeyError, RuntimeError, OSError, ImportError) as exc:
        print(f"vla-ros bench: {exc}", file=sys.stderr)
        return 1
    if args.resize_check > 0:
        for method, row in result["methods"].items():
            print(f"{method:>6}: max pixel diff {row['max_pixel_diff']:3d}, "
                  f"mean {row['mean_pixel_diff']:.4f}, "
                  f"values differing {100 * row['fraction_of_values_differing']:.3f}%, images with other "
                  f"tokens {row['images_with_different_tokens']}/{result['images']}, max action diff "
                  f"{row['max_action_diff']:.2e}")
    else:
        print(format_table(result))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0
