"""`vla-ros quant-accuracy CHECKPOINT`: how far quantized graphs move the actions from full precision.

The checkpoint is exported once in fp32 and once per quantization mode (ONNX Runtime graphs, cached
under --work); the same N observations (the verb: simulator frames, see vla_ros.sim.observations;
`main` alone: random ones) run through every set with ONNX Runtime. Per mode: token agreement with
fp32 (share of action tokens equal, share of cases with all of them equal; autoregressive family and
OFT's discrete variant), action error against fp32 per dimension in normalized units (mean and max
|difference|; OFT: over the whole chunk), latency per call (preprocessing to normalized actions) and
graph bytes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.core.files import build_once
from vla_ros.core.stats import distribution

MODES = ("int8", "int4", "w8a8")
TARGET = "onnxruntime"
MARKER = "quant_accuracy.json"  # what a cached export under --work was made from
AR_DIMENSIONS = ("x", "y", "z", "roll", "pitch", "yaw", "grip")
WORDS = ("pick", "up", "the", "red", "blue", "green", "cube", "ball", "bowl", "move", "to", "grab", "lift",
         "reach", "yellow", "cylinder", "above", "table")
CALIBRATION_SEED_OFFSET = 100_000  # w8a8 calibrates on observations of other seeds than the measured ones
Log = Callable[[str], None]
Bounds = "tuple[np.ndarray, np.ndarray] | None"


class QuantAccuracyError(RuntimeError):
    """Bad options, or the quantized export is not available."""


# ----------------------------------------------------------------------------- comparisons
def token_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Action tokens [N, T] of the reference and a candidate: share of tokens equal, share of cases with
    all T equal, the share equal per token position and the cases that differ."""
    ref, cand = np.asarray(reference), np.asarray(candidate)
    if ref.shape != cand.shape or ref.ndim != 2 or ref.shape[0] == 0:
        raise ValueError(f"token arrays must both be [N, T] with N > 0, got {ref.shape} and {cand.shape}")
    equal = ref == cand
    return {"tokens_equal": float(equal.mean()), "cases_all_equal": float(equal.all(axis=1).mean()),
            "per_position_equal": [float(v) for v in equal.mean(axis=0)],
            "cases_differing": [int(i) for i in np.flatnonzero(~equal.all(axis=1))]}


def action_error(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Normalized actions [N, A] or chunks [N, K, A] of the reference and a candidate: mean and max
    |difference| per action dimension (over cases and chunk steps) and over all dimensions."""
    ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim not in (2, 3) or ref.shape[0] == 0:
        raise ValueError(f"actions must both be [N, A] or [N, K, A] with N > 0, got {ref.shape} and "
                         f"{cand.shape}")
    diff = np.abs(ref - cand).reshape(-1, ref.shape[-1])
    return {"mean_abs": [float(v) for v in diff.mean(axis=0)],
            "max_abs": [float(v) for v in diff.max(axis=0)],
            "mean_abs_all": float(diff.mean()), "max_abs_all": float(diff.max())}


# ----------------------------------------------------------------------------- observations
@dataclass
class Case:
    """One observation: camera images (checkpoint's order), instruction, raw proprio (or None)."""

    images: list[np.ndarray]
    text: str
    proprio: np.ndarray | None = None


CaseSource = Callable[[int, int, int, Bounds], "list[Case]"]  # (n, seed, cameras, proprio bounds) -> cases
Calibration = tuple[dict, Callable[[], list]]  # (what it is, for the cache record; the samples, made lazily)


def uniform_proprio(rng: np.random.Generator, bounds: tuple[np.ndarray, np.ndarray] | None
                    ) -> np.ndarray | None:
    """A proprio vector uniform within (low, high), or None without bounds."""
    if bounds is None:
        return None
    low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
    return rng.uniform(np.minimum(low, high), np.maximum(low, high))


def random_cases(n: int, seed: int = 0, cameras: int = 1,
                 proprio_bounds: tuple[np.ndarray, np.ndarray] | None = None) -> list[Case]:
    """n random observations: noise images of random sizes, instructions of random words, proprio uniform
    within `proprio_bounds` (low, high)."""
    rng = np.random.default_rng([seed, 18])
    cases = []
    for _ in range(n):
        images = [rng.integers(0, 256, size=(int(rng.integers(64, 320)), int(rng.integers(64, 320)), 3),
                               dtype=np.uint8) for _ in range(cameras)]
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 8))))
        cases.append(Case(images, text, uniform_proprio(rng, proprio_bounds)))
    return cases


# ----------------------------------------------------------------------------- running
@dataclass
class ModeRun:
    """Outputs of one graph set on every case."""

    normalized: np.ndarray  # float64 [N, A] (autoregressive) or [N, K, A] (OFT)
    tokens: np.ndarray | None  # int64 [N, T]: action token ids (None: OFT's L1 head has none)
    latency_s: np.ndarray  # [N] seconds per call


def policy_kind(policy: Any) -> str:
    """"oft" for a chunk policy (predict_arrays), "autoregressive" for VlaPolicy (predict_tokens)."""
    return "oft" if hasattr(policy, "predict_arrays") else "autoregressive"


def run_policy(policy: Any, cases: Sequence[Case], progress: Callable[[int], None] | None = None) -> ModeRun:
    """Every case through `policy` (VlaPolicy or OftPolicy): normalized actions, tokens, seconds."""
    oft = policy_kind(policy) == "oft"
    normalized, tokens, seconds = [], [], []
    for i, case in enumerate(cases):
        t0 = time.perf_counter()
        if oft:
            out = policy.predict_arrays(case.images, case.text, case.proprio)
            normalized.append(out.normalized)
            ids = np.asarray(policy.last_ids, dtype=np.int64) if policy.settings.action_head == "discrete" \
                else np.zeros(0, dtype=np.int64)
        else:
            ids, _ = policy.predict_tokens(case.images[0], case.text)
            normalized.append(policy.action_tokenizer.decode(ids))
        seconds.append(time.perf_counter() - t0)
        tokens.append(np.array(ids, dtype=np.int64))
        if progress is not None:
            progress(i)
    has_tokens = all(t.size for t in tokens)
    return ModeRun(np.asarray(normalized, dtype=np.float64), np.stack(tokens) if has_tokens else None,
                   np.asarray(seconds))


def ort_policy(checkpoint: str | Path, graph_dir: Path, threads: int = 1) -> Any:
    """The checkpoint's policy over the graphs in `graph_dir` with ONNX Runtime (dtype: the graphs')."""
    from vla_ros.core.config import PolicyConfig
    from vla_ros.runtime.factory import make_policy
    from vla_ros.runtime.graph_dir import read_manifest

    dtype = read_manifest(graph_dir).get("dtype", "fp32")
    return make_policy(PolicyConfig(checkpoint=str(checkpoint), backend="onnxruntime",
                                    engine_dir=str(graph_dir), dtype=dtype, threads=threads, warmup_runs=2))


def graph_bytes(graph_dir: Path) -> int:
    """Bytes of the ONNX graphs and their external data in an export directory."""
    files = [f for f in graph_dir.iterdir() if f.is_file() and f.suffix in (".onnx", ".data")]
    return sum(f.stat().st_size for f in files)


# ----------------------------------------------------------------------------- exports
def export_record(checkpoint: Path, mode: str, block_size: int, calibration: dict | None = None
                  ) -> dict[str, Any]:
    """What a cached export must have been made from to be reused (w8a8: and its calibration set)."""
    from vla_ros.runtime.export import checkpoint_files
    from vla_ros.runtime.graph_dir import sha256_files

    record = {"checkpoint": str(checkpoint.resolve()),
              "checkpoint_sha256": sha256_files(checkpoint_files(checkpoint)), "mode": mode,
              "block_size": None if mode == "fp32" else block_size, "target": TARGET}
    if mode == "w8a8":
        record["calibration"] = calibration
    return record


def quantize_copy(source: Path, out: Path, mode: str, block_size: int, log: Log,
                  calibration: list | None = None) -> None:
    """A copy of the fp32 export `source` at `out` with its LLM Linears quantized (`mode`; w8a8 calibrated
    on `calibration`, a list of vla_ros.runtime.quantize.CalibrationSample)."""
    from vla_ros.runtime.quantize import quantize_graph_dir

    shutil.copytree(source, out)
    quantize_graph_dir(out, mode, block_size, TARGET, log,
                       calibration=calibration if mode == "w8a8" else None)


def prepare_export(checkpoint: Path, mode: str, block_size: int, work: Path, log: Log,
                   calibration: Calibration | None = None) -> Path:
    """work/<mode>: the fp32 export, or work/fp32 with its LLM Linears quantized; reused when made from the
    same checkpoint files with the same options. `calibration` (w8a8): (record, samples) where samples()
    makes the CalibrationSample list only when needed."""
    from vla_ros.runtime.export import export_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    final = work / mode
    record = export_record(checkpoint, mode, block_size, calibration[0] if calibration else None)
    t0 = time.monotonic()

    def make(tmp: Path) -> None:
        log(f"[{mode}] exporting to {final}")
        if mode == "fp32":
            export_checkpoint(checkpoint, tmp, dtype="fp32", log=lambda m: log(f"    {m}"))
        else:
            samples = calibration[1]() if calibration and mode == "w8a8" else None
            quantize_copy(work / "fp32", tmp, mode, block_size, lambda m: log(f"    {m}"), samples)

    if not build_once(final, record, make, MARKER):
        log(f"[{mode}] reusing the export in {final}")
        return final
    log(f"[{mode}] ready in {time.monotonic() - t0:.1f} s: {graph_bytes(final) / 1e6:.2f} MB of graphs")
    return final


# ----------------------------------------------------------------------------- the measurement
def latency_summary(seconds: np.ndarray) -> dict[str, float]:
    """Mean, median and 90th percentile in milliseconds."""
    d = distribution(1e3 * np.asarray(seconds, dtype=np.float64))
    return {"mean_ms": d["mean"], "median_ms": d["p50"], "p90_ms": d["p90"]}


def compare_runs(reference: ModeRun, candidate: ModeRun) -> dict[str, Any]:
    """Token agreement (when both have tokens) and action error of a candidate against the reference."""
    tokens = None
    if reference.tokens is not None and candidate.tokens is not None:
        tokens = token_agreement(reference.tokens, candidate.tokens)
    return {"token_agreement": tokens,
            "action_error": action_error(reference.normalized, candidate.normalized)}


def calibration_for(make_cases: CaseSource, source: str, n: int, seed: int, cameras: int,
                    bounds: tuple[np.ndarray, np.ndarray] | None) -> Calibration:
    """W8A8's calibration set: n observations of `make_cases` from seed + CALIBRATION_SEED_OFFSET (never
    the measured ones), as (record, lazy samples)."""
    record = {"observations": source, "seed": seed + CALIBRATION_SEED_OFFSET, "samples": n}

    def samples() -> list:
        from vla_ros.runtime.quantize import CalibrationSample

        cases = make_cases(n, seed + CALIBRATION_SEED_OFFSET, cameras, bounds)
        return [CalibrationSample(c.images, c.text, c.proprio) for c in cases]

    return record, samples


def measure(checkpoint: str | Path, modes: Sequence[str], block_size: int = 128, n_cases: int = 50,
            seed: int = 0, work: str | Path | None = None, threads: int = 1, log: Log = print,
            make_cases: CaseSource = random_cases, source: str = "random",
            calibration_cases: int = 32) -> dict[str, Any]:
    """Export, run and compare on `make_cases(n, seed, cameras, proprio_bounds)` (named `source` in the
    report); returns the report (as written to --json). Empty checkpoint: the embedded demo model."""
    from vla_ros.runtime.factory import resolve_checkpoint

    checkpoint = resolve_checkpoint(str(checkpoint))
    temporary = None if work else tempfile.TemporaryDirectory(prefix="vla_ros_quant_")
    work_dir = Path(work) if work else Path(temporary.name)  # type: ignore[union-attr]
    try:
        fp32_dir = prepare_export(checkpoint, "fp32", block_size, work_dir, log)
        policy = ort_policy(checkpoint, fp32_dir, threads)
        cameras, bounds = _inputs_of(policy)
        t0 = time.monotonic()
        cases = make_cases(n_cases, seed, cameras, bounds)
        log(f"{n_cases} {source} observations ({cameras} camera(s){', proprio' if bounds else ''}, seed "
            f"{seed}) in {time.monotonic() - t0:.1f} s")
        calibration = calibration_for(make_cases, source, calibration_cases, seed, cameras, bounds)
        dirs = {"fp32": fp32_dir}
        dirs.update({m: prepare_export(checkpoint, m, block_size, work_dir, log, calibration) for m in modes})
        report: dict[str, Any] = {
            "checkpoint": str(checkpoint.resolve()), "family": policy_kind(policy),
            "policy": policy.describe(), "dimensions": _dimension_names(policy), "cases": n_cases,
            "seed": seed, "observations": source, "block_size": block_size, "target": TARGET,
            "threads": threads, "modes": {}}
        if "w8a8" in modes:
            report["calibration"] = calibration[0]
        reference: ModeRun | None = None
        every = max(1, n_cases // 5)
        for mode, graph_dir in dirs.items():
            if mode != "fp32":
                policy = ort_policy(checkpoint, graph_dir, threads)

            def progress(i: int, mode: str = mode) -> None:
                if (i + 1) % every == 0 or i + 1 == n_cases:
                    log(f"[{mode}] {i + 1}/{n_cases} cases")

            run = run_policy(policy, cases, progress)
            entry: dict[str, Any] = {"graph_dir": str(graph_dir), "graph_bytes": graph_bytes(graph_dir),
                                     "describe": policy.describe(), "latency": latency_summary(run.latency_s)}
            if reference is None:
                reference = run
                entry.update(token_agreement=None, action_error=None)
            else:
                entry.update(compare_runs(reference, run))
            report["modes"][mode] = entry
        return report
    finally:
        if temporary is not None:
            temporary.cleanup()


def _inputs_of(policy: Any) -> tuple[int, tuple[np.ndarray, np.ndarray] | None]:
    """The cameras a policy takes and its proprio bounds (None without proprio)."""
    if policy_kind(policy) != "oft":
        return 1, None
    stats = policy.proprio_stats
    return policy.inputs.cameras, None if stats is None else (stats.q01, stats.q99)


def _dimension_names(policy: Any) -> list[str]:
    dims = policy.settings.action_dim if policy_kind(policy) == "oft" else policy.n_actions
    return list(AR_DIMENSIONS) if dims == len(AR_DIMENSIONS) else [f"a{i}" for i in range(dims)]


def format_report(report: dict[str, Any]) -> str:
    """The summary table (one row per mode) and the per-dimension error table."""
    bins = " (OpenVLA's bin width: 2/256 = 0.0078)" if report.get("family") == "autoregressive" else ""
    lines = [f"{report.get('policy', '')}: {report['cases']} {report['observations']} cases, block "
             f"{report['block_size']}, {report['threads']} thread(s); errors in normalized units{bins}", "",
             f"{'mode':<6} {'tokens eq':>9} {'all eq':>7} {'mean|err|':>9} {'max|err|':>9} "
             f"{'ms/call':>8} {'speedup':>7} {'MB':>7}"]
    base_ms = report["modes"]["fp32"]["latency"]["median_ms"]
    for mode, row in report["modes"].items():
        tokens, error = row.get("token_agreement"), row.get("action_error")
        eq = f"{100 * tokens['tokens_equal']:>8.1f}%" if tokens else f"{'-':>9}"
        all_eq = f"{100 * tokens['cases_all_equal']:>6.1f}%" if tokens else f"{'-':>7}"
        mean = f"{error['mean_abs_all']:>9.4f}" if error else f"{'-':>9}"
        worst = f"{error['max_abs_all']:>9.4f}" if error else f"{'-':>9}"
        ms = row["latency"]["median_ms"]
        lines.append(f"{mode:<6} {eq} {all_eq} {mean} {worst} {ms:>8.2f} {base_ms / ms:>6.2f}x "
                     f"{row['graph_bytes'] / 1e6:>7.2f}")
    names = report.get("dimensions", [])
    compared = [(m, r["action_error"]) for m, r in report["modes"].items() if r.get("action_error")]
    if compared and names:
        lines += ["", "action error per dimension: mean |err| / max |err|",
                  f"{'mode':<6} " + " ".join(f"{n:>13}" for n in names)]
        for mode, error in compared:
            cells = [f"{a:.4f}/{b:.4f}" for a, b in zip(error["mean_abs"], error["max_abs"])]
            lines.append(f"{mode:<6} " + " ".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)


def parse_modes(text: str) -> list[str]:
    """The --modes list, checked (non-empty, known, no repeats)."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes or len(set(modes)) != len(modes):
        raise QuantAccuracyError(f"--modes must be distinct names from {list(MODES)}, got {text!r}")
    return modes


def check_options(args: argparse.Namespace) -> list[str]:
    """The modes of the arguments; QuantAccuracyError for a bad option (before any work)."""
    modes = parse_modes(args.modes)
    if args.cases < 1 or args.calibration_cases < 1 or args.threads < 0:
        raise QuantAccuracyError("--cases and --calibration-cases must be at least 1, --threads at least 0")
    from vla_ros.runtime.quantize import QuantizeError
    from vla_ros.runtime.quantize import check_options as check_quantize

    for mode in modes:  # w8a8's calibration set is made here: [] stands for it
        try:
            check_quantize(mode, args.block_size, TARGET, [] if mode == "w8a8" else None)
        except QuantizeError as exc:
            raise QuantAccuracyError(str(exc)) from exc
    return modes


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vla-ros quant-accuracy", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="checkpoint directory ('demo': the embedded demo model)")
    ap.add_argument("--modes", default="int8,int4",
                    help=f"comma-separated, from {','.join(MODES)} (default int8,int4)")
    ap.add_argument("--block-size", type=int, default=128, help="quantization block along K (default 128)")
    ap.add_argument("--cases", type=int, default=50, help="observations (default 50)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the observations (default 0)")
    ap.add_argument("--work", default="",
                    help="directory for the exports, reused by later runs (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=1,
                    help="ONNX Runtime intra-op threads (0 = its default; default 1, as the node's)")
    ap.add_argument("--calibration-cases", type=int, default=32,
                    help="w8a8: observations to calibrate on, other seeds than the measured (default 32)")
    ap.add_argument("--json", default="", help="write the report here")
    return ap


def main(argv: list[str], make_cases: CaseSource = random_cases, source: str = "random") -> int:
    """CLI entry point of `vla-ros quant-accuracy` (observations from `make_cases`, named `source`)."""
    args = build_parser().parse_args(argv)
    try:
        modes = check_options(args)
        checkpoint = "" if args.checkpoint == "demo" else args.checkpoint
        report = measure(checkpoint, modes, args.block_size, args.cases, args.seed, args.work or None,
                         args.threads, lambda m: print(m, flush=True), make_cases, source,
                         args.calibration_cases)
    except QuantAccuracyError as exc:
        print(f"vla-ros quant-accuracy: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError, ImportError, KeyError) as exc:  # export, quantizer, ORT
        print(f"vla-ros quant-accuracy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print()
    print(format_report(report))
    if args.json:
        from vla_ros.core.files import write_json

        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0
