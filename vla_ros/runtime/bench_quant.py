"""`vla-ros bench --llm-width 7b`: the LLM's prefill and decode step per weight precision, at real width.

    vla-ros bench --llm-width 7b --layers 2 --precisions fp32,int8,int4 --runs 5 --json out/bench_quant.json
    vla-ros bench --llm-width 7b --layers 1 --precisions fp32 --engines     # + TensorRT-RTX engine bytes

Builds N Llama decoder layers at Llama-2-7B width (hidden 4096, MLP 11008, 32 heads; random weights, a
small vocabulary so that the layers hold the weights, as in the real model) with the project's LmCore,
exports its prefill and decode-step graphs once in fp32 with the exporter `vla-ros export` uses (cached
under --graph-cache), quantizes them per precision with vla_ros.runtime.quantize.quantize_model
(target onnxruntime: weight-only MatMulNBits, accuracy level 4) and runs them with ONNX Runtime on the
CPU. Each run times, for every precision in turn (interleaved, so load changes hit every row alike),
one prefill of --tokens-prefill positions and --decode-steps decode steps (M = 1) after it. Reported per
precision: decode step and prefill median / p90, the bytes of the graph's weights (initializers),
ratios against fp32 and against fp16 (fp16 bytes = fp32 bytes / 2, computed, not run) and the relative
error of the prefill logits against fp32. `--engines` also builds TensorRT-RTX engines of the decode
graph in fp16 and in INT4 (QDQ, target tensorrt) and compares their bytes (no GPU needed to build).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.core.files import build_once
from vla_ros.core.stats import distribution

Log = Callable[[str], None]
PRECISIONS = ("fp32", "int8", "int4", "w8a8")  # fp32 = the exported graph; the rest via quantize_model
BENCH_VOCAB = 512  # a small vocabulary: the embedding table and LM head stay ~1% of the layers' weights
MAX_POSITIONS = 2048
GRAPHS = ("prefill", "decode")
EXPORT_RECORD = "bench_quant_export.json"
# issue 18's targets: decode speed-up over fp32 (at least) and weight bytes over fp16 (at most)
TARGETS = {"int4": {"decode_speedup_min": 4.0, "bytes_vs_fp16_max": 0.30},
           "int8": {"decode_speedup_min": 2.0, "bytes_vs_fp16_max": 0.55}}
ENGINE_TARGET = 0.35  # int4 engine bytes / fp16 engine bytes, at most
NOISY_LOGGERS = ("onnxruntime.quantization", "onnxscript", "onnx_ir")
CALIBRATION_SAMPLES = 2  # w8a8: random prefill inputs (and a decode step after each) to calibrate on


@dataclass(frozen=True)
class LlmWidth:
    """Width of a Llama decoder layer: hidden size, MLP size and attention heads."""

    hidden: int
    mlp: int
    heads: int
    name: str = ""


WIDTHS = {"7b": LlmWidth(4096, 11008, 32, "7b")}  # Llama-2-7B (OpenVLA's LLM)


def parse_width(text: str) -> LlmWidth:
    """"7b" or a hidden size (MLP 2.6875x as in Llama-2-7B, head dim 128, or 16 below 128 per head)."""
    if text.lower() in WIDTHS:
        return WIDTHS[text.lower()]
    try:
        hidden = int(text)
    except ValueError:
        raise ValueError(f"--llm-width must be one of {sorted(WIDTHS)} or a hidden size, "
                         f"got {text!r}") from None
    if hidden < 16 or hidden % 16:
        raise ValueError(f"--llm-width: a hidden size must be a multiple of 16 and >= 16, got {hidden}")
    head_dim = 128 if hidden % 128 == 0 else 16
    mlp = -(-hidden * 11008 // 4096 // 16) * 16
    return LlmWidth(hidden, mlp, hidden // head_dim, str(hidden))


@dataclass
class QuantBenchOptions:
    """What `run_quant_bench` builds and times."""

    width: LlmWidth = WIDTHS["7b"]
    layers: int = 2
    precisions: Sequence[str] = ("fp32", "int8", "int4")
    prefill_tokens: int = 280
    decode_steps: int = 7  # per run, after the prefill (OpenVLA decodes 7 action tokens)
    runs: int = 5
    warmup: int = 1
    threads: int = 0  # ONNX Runtime intra-op threads; 0 = its default (one per physical core)
    block_size: int = 128
    graph_cache: str = ""  # default: <temp dir>/vla_ros_bench_quant
    vocab: int = BENCH_VOCAB
    seed: int = 0
    engines: bool = False  # also build TensorRT-RTX engines (fp16 and int4) of the decode graph

    def check(self) -> None:
        """Refuse bad options before any work."""
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"--precisions: unknown {unknown}; choose from {list(PRECISIONS)}")
        if "fp32" not in self.precisions:
            raise ValueError("--precisions must include fp32 (the ratios are against it)")
        if len(set(self.precisions)) != len(self.precisions):
            raise ValueError("--precisions lists a precision twice")
        if self.layers < 1 or self.runs < 1 or self.warmup < 0 or self.decode_steps < 1:
            raise ValueError("--layers, --runs and --decode-steps must be >= 1, --warmup >= 0")
        if not 2 <= self.prefill_tokens <= MAX_POSITIONS - self.decode_steps - 1:
            raise ValueError(f"--tokens-prefill must be in [2, {MAX_POSITIONS - self.decode_steps - 1}]")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"--block-size must be a power of two >= 16, got {self.block_size}")


def default_cache() -> Path:
    """Where the fp32 graphs are kept between runs when --graph-cache is not given."""
    return Path(tempfile.gettempdir()) / "vla_ros_bench_quant"


def build_core(width: LlmWidth, layers: int, vocab: int = BENCH_VOCAB, seed: int = 0, dtype: str = "fp32"):
    """LmCore over a random Llama CausalLM of this width (transformers' own initialization)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vla_ros.model.llm import LmCore

    cfg = LlamaConfig(hidden_size=width.hidden, intermediate_size=width.mlp, num_attention_heads=width.heads,
                      num_key_value_heads=width.heads, num_hidden_layers=layers, vocab_size=vocab,
                      max_position_embeddings=MAX_POSITIONS)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(cfg).eval()
    if dtype == "fp16":  # before LmCore: its fused matrices and rotary tables take the model's dtype
        lm = lm.to(torch.float16)
    return LmCore(lm, MAX_POSITIONS)


def export_llm(core: Any, out: Path, dtype: str, log: Log) -> dict[str, Path]:
    """The prefill and decode-step graphs of `core`, traced as `vla-ros export` traces them."""
    import torch

    from vla_ros.model.stages import DecodeStage, PrefillStage, kv_names
    from vla_ros.runtime.export import MAX_OPSET, _export_one, _finish_graph  # the exporter's own steps

    n, dim = core.num_layers, torch.export.Dim
    float_dtype = core.rope_cos.dtype
    hidden = core.lm.config.hidden_size
    seq = dim("seq", min=2, max=core.max_positions - 8)
    past = dim("past", min=1, max=core.max_positions - 1)
    sample_past = [torch.zeros(1, core.num_kv_heads, 5, core.head_dim, dtype=float_dtype)
                   for _ in range(2 * n)]
    specs = {
        "prefill": (PrefillStage(core), (torch.zeros(1, 10, hidden, dtype=float_dtype),), ["inputs_embeds"],
                    ["logits", *kv_names(n, "present")], {"inputs_embeds": {1: seq}}),
        "decode": (DecodeStage(core), (torch.zeros(1, 1, dtype=torch.int64), *sample_past),
                   ["token_ids", *kv_names(n, "past")], ["logits", *kv_names(n, "present")],
                   {"token_ids": None, "past": tuple({2: past} for _ in sample_past)}),
    }
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (module, args, ins, outs, dyn) in specs.items():
        t0 = time.monotonic()
        path = out / f"{name}.onnx"
        _export_one(module.eval(), args, path, ins, outs, dyn, MAX_OPSET)
        _finish_graph(path, dtype)  # fp16: Softmax / LayerNorm in fp32 islands; onnx.checker
        log(f"[bench] exported {path} ({time.monotonic() - t0:.1f} s)")
        paths[name] = path
    return paths


def cached_export(opts: QuantBenchOptions, dtype: str, log: Log) -> tuple[dict[str, Path], float]:
    """The graphs in `dtype` from the cache (exported when missing); (paths, seconds spent exporting)."""
    import torch

    w = opts.width
    key = {"hidden": w.hidden, "mlp": w.mlp, "heads": w.heads, "layers": opts.layers, "vocab": opts.vocab,
           "seed": opts.seed, "dtype": dtype, "torch": torch.__version__}
    name = f"llama_h{w.hidden}_m{w.mlp}_a{w.heads}_l{opts.layers}_v{opts.vocab}_s{opts.seed}_{dtype}"
    final = Path(opts.graph_cache or default_cache()) / name
    t0 = time.monotonic()

    def make(tmp: Path) -> None:
        log(f"[bench] building {opts.layers} layer(s) at hidden {w.hidden}, MLP {w.mlp}, {w.heads} heads "
            f"({dtype})")
        core = build_core(w, opts.layers, opts.vocab, opts.seed, dtype)
        export_llm(core, tmp, dtype, log)

    final.parent.mkdir(parents=True, exist_ok=True)
    if not build_once(final, key, make, EXPORT_RECORD):
        log(f"[bench] {dtype} graphs from the cache {final}")
        return {g: final / f"{g}.onnx" for g in GRAPHS}, 0.0
    return {g: final / f"{g}.onnx" for g in GRAPHS}, time.monotonic() - t0


def initializer_bytes(path: Path) -> dict[str, int]:
    """Bytes of a graph's weights: all initializers, and those that MatMul-type nodes consume."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    matmul_inputs = {name for node in model.graph.node
                     if node.op_type in ("MatMul", "Gemm", "MatMulNBits", "DequantizeLinear")
                     for name in node.input}
    total = matmul = 0
    for init in model.graph.initializer:
        size = tensor_bytes(init)
        total += size
        matmul += size if init.name in matmul_inputs else 0
    return {"weight_bytes": total, "matmul_weight_bytes": matmul}


def tensor_bytes(tensor: Any) -> int:
    """Stored bytes of one TensorProto (external data length, raw data, or typed fields)."""
    import onnx

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        info = {e.key: e.value for e in tensor.external_data}
        if "length" in info:
            return int(info["length"])
    if tensor.raw_data:
        return len(tensor.raw_data)
    numel = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
    if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):  # two per byte
        return (numel + 1) // 2
    return numel * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def quantize_graphs(source: dict[str, Path], precision: str, opts: QuantBenchOptions, out: Path,
                    target: str = "onnxruntime", dtype: str = "fp32", log: Log = print
                    ) -> tuple[dict[str, Path], str, dict[str, Any]]:
    """Each graph through quantize_graph, saved with external data under `out`; returns (paths, precision
    as describe() shows it, the quantizer's report per graph)."""
    import onnx

    from vla_ros.runtime.quantize import graph_precision, quantization_options, quantize_graph, summarize

    out.mkdir(parents=True, exist_ok=True)
    calibration = w8a8_calibration(source, opts) if precision == "w8a8" else {}
    paths, reports = {}, {}
    for name, graph in source.items():
        path = out / graph.name
        for stale in (path, path.with_name(path.name + ".data")):
            stale.unlink(missing_ok=True)
        model, reports[name] = quantize_graph(str(graph), precision, opts.block_size, target,
                                              calibration=calibration.get(name), log=log)
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
        del model
        paths[name] = path
    record = summarize({"graphs": {g: {"quantization": r} for g, r in reports.items()}},
                       quantization_options(precision, opts.block_size, target))
    label = graph_precision({"dtype": dtype, "quantization": record})
    log(f"[bench] {precision}: {', '.join(source)} quantized for {target} ({label}) into {out}")
    return paths, label, reports


Feeds = dict[str, list[dict[str, np.ndarray]]]  # graph -> calibration inputs (input name -> array)


def w8a8_calibration(fp32: dict[str, Path], opts: QuantBenchOptions) -> Feeds:
    """Calibration feeds for w8a8: random embeddings (the weights are random too) for the prefill, and a
    decode step on the K/V the fp32 prefill makes of them."""
    from vla_ros.model.stages import kv_names
    from vla_ros.runtime.ort_backend import OrtGraph, OrtOptions

    rng = np.random.default_rng(opts.seed + 1)
    prefill = OrtGraph(fp32["prefill"], OrtOptions(provider="cpu", threads=opts.threads))
    feeds: Feeds = {"prefill": [], "decode": []}
    for _ in range(CALIBRATION_SAMPLES):
        embeds = rng.standard_normal((1, opts.prefill_tokens, opts.width.hidden)).astype(np.float32)
        _, *kv = prefill.run({"inputs_embeds": embeds})
        feeds["prefill"].append({"inputs_embeds": embeds})
        token = rng.integers(0, opts.vocab, size=(1, 1)).astype(np.int64)
        feeds["decode"].append({"token_ids": token, **dict(zip(kv_names(opts.layers, "past"), kv))})
    return feeds


@dataclass
class _Row:
    """One precision: its sessions and samples (wall clock and process CPU seconds)."""

    prefill: Any
    decode: Any
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in SAMPLES})
    logits: np.ndarray | None = None


SAMPLES = ("prefill", "prefill_cpu", "decode_step", "decode_step_cpu")


def _summary(seconds: list[float]) -> dict[str, float]:
    d = distribution(np.asarray(seconds) * 1e3)
    return {"median_ms": d["p50"], "p90_ms": d["p90"], "count": d["count"]}


def _one_run(row: _Row, embeds: np.ndarray, tokens: np.ndarray, past_names: list[str], timed: bool) -> None:
    """A prefill, then the decode steps on its K/V (fixed token ids: every row does the same work)."""
    times = []
    c0, t0 = time.process_time(), time.perf_counter()
    logits, *state = row.prefill.run({"inputs_embeds": embeds})
    times.append(("prefill", time.perf_counter() - t0, time.process_time() - c0))
    for token in tokens:
        c0, t0 = time.process_time(), time.perf_counter()
        _, *state = row.decode.run({"token_ids": token.reshape(1, 1), **dict(zip(past_names, state))})
        times.append(("decode_step", time.perf_counter() - t0, time.process_time() - c0))
    if timed:
        for key, wall, cpu in times:
            row.samples[key].append(wall)
            row.samples[f"{key}_cpu"].append(cpu)
    row.logits = logits


def run_quant_bench(opts: QuantBenchOptions, log: Log = print) -> dict[str, Any]:
    """Export (cached), quantize, load and time every precision; returns the JSON-ready result."""
    import onnxruntime as ort

    from vla_ros.runtime.ort_backend import OrtGraph, OrtOptions

    opts.check()
    for noisy in NOISY_LOGGERS:  # the exporter's and quantizer's INFO chatter (one line per node)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    fp32, export_s = cached_export(opts, "fp32", log)
    cache = fp32["decode"].parent
    result: dict[str, Any] = {
        "mode": "llm_width", "width": asdict(opts.width), "layers": opts.layers, "vocab": opts.vocab,
        "prefill_tokens": opts.prefill_tokens, "decode_steps_per_run": opts.decode_steps, "runs": opts.runs,
        "warmup": opts.warmup, "threads": opts.threads, "block_size": opts.block_size,
        "graph_cache": str(cache), "export_s": export_s, "cpu_count": os.cpu_count(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "onnxruntime": ort.__version__, "python": platform.python_version(), "precisions": {}}
    graph_paths: dict[str, dict[str, Path]] = {}
    for precision in opts.precisions:  # all quantized before any session holds weights (peak memory)
        t0 = time.monotonic()
        label, linears = "fp32", 0
        try:
            if precision == "fp32":
                graph_paths[precision] = fp32
            else:
                graph_paths[precision], label, reports = quantize_graphs(
                    fp32, precision, opts, cache / f"{precision}_b{opts.block_size}", log=log)
                linears = reports["decode"]["nodes"]
        except (ValueError, RuntimeError, NotImplementedError) as exc:
            result.setdefault("skipped", {})[precision] = f"{type(exc).__name__}: {exc}"
            log(f"[bench] {precision}: skipped: {exc}")
            continue
        quantize_s = time.monotonic() - t0 if precision != "fp32" else 0.0
        result["precisions"][precision] = {"precision": label, "quantize_s": quantize_s,
                                           "quantized_linears": linears,
                                           **initializer_bytes(graph_paths[precision]["decode"])}
    if "fp32" not in graph_paths:
        raise RuntimeError(f"the fp32 graphs cannot run: {result['skipped']['fp32']}")
    rows: dict[str, _Row] = {}
    ort_opts = OrtOptions(provider="cpu", threads=opts.threads)
    threads = f" {opts.threads} threads" if opts.threads else ""
    for precision, paths in graph_paths.items():
        entry = result["precisions"][precision]
        t0 = time.monotonic()
        graphs = {g: OrtGraph(paths[g], ort_opts) for g in GRAPHS}
        entry["load_s"] = time.monotonic() - t0
        entry["describe"] = f"onnxruntime {graphs['decode'].provider} {entry['precision']}{threads}"
        rows[precision] = _Row(graphs["prefill"], graphs["decode"])
        log(f"[bench] {precision}: {entry['weight_bytes'] / 1e6:.1f} MB of weights, loaded in "
            f"{entry['load_s']:.1f} s")
    rng = np.random.default_rng(opts.seed)
    embeds = rng.standard_normal((1, opts.prefill_tokens, opts.width.hidden)).astype(np.float32)
    tokens = rng.integers(0, opts.vocab, size=opts.decode_steps).astype(np.int64)
    past_names = [i for i in rows["fp32"].decode.input_names if i != "token_ids"]
    log(f"[bench] {opts.warmup} warm-up + {opts.runs} runs of {', '.join(rows)}, interleaved")
    for i in range(opts.warmup + opts.runs):
        for row in rows.values():
            _one_run(row, embeds, tokens, past_names, timed=i >= opts.warmup)
    _fill_stats(result, rows)
    if opts.engines:
        result["engines"] = engine_bytes(opts, log)
    return result


def _fill_stats(result: dict[str, Any], rows: dict[str, _Row]) -> None:
    """Timings (wall clock, and the process's CPU time, which a busy machine inflates less), ratios
    against fp32 (time, bytes) and fp16 (bytes), logits error, target checks."""
    ref, base = rows["fp32"], result["precisions"]["fp32"]
    ref_ms = {key: _summary(ref.samples[key])["median_ms"] for key in SAMPLES}
    ref_logits = ref.logits.astype(np.float64)
    for precision, row in rows.items():
        entry = result["precisions"][precision]
        for key in SAMPLES:
            entry[key] = _summary(row.samples[key])
            entry[f"{key}_speedup_vs_fp32"] = ref_ms[key] / max(entry[key]["median_ms"], 1e-9)
        entry["decode_speedup_vs_fp32"] = entry.pop("decode_step_speedup_vs_fp32")
        entry["decode_cpu_speedup_vs_fp32"] = entry.pop("decode_step_cpu_speedup_vs_fp32")
        entry["weight_bytes_vs_fp32"] = entry["weight_bytes"] / base["weight_bytes"]
        entry["weight_bytes_vs_fp16"] = entry["weight_bytes"] / (base["weight_bytes"] / 2)
        entry["matmul_weight_bytes_vs_fp16"] = (entry["matmul_weight_bytes"]
                                                / (base["matmul_weight_bytes"] / 2))
        diff = np.abs(row.logits.astype(np.float64) - ref_logits).max()
        entry["prefill_logits_max_abs_error_vs_fp32"] = float(diff)
        entry["prefill_logits_rel_error_vs_fp32"] = float(diff / max(np.abs(ref_logits).max(), 1e-12))
    result["fp16_weight_bytes"] = base["weight_bytes"] / 2
    result["targets"] = {}
    for precision, target in TARGETS.items():
        entry = result["precisions"].get(precision)
        if entry is not None:
            result["targets"][precision] = {
                **target, "decode_speedup": entry["decode_speedup_vs_fp32"],
                "decode_cpu_speedup": entry["decode_cpu_speedup_vs_fp32"],
                "bytes_vs_fp16": entry["weight_bytes_vs_fp16"],
                "met": entry["decode_speedup_vs_fp32"] >= target["decode_speedup_min"]
                and entry["weight_bytes_vs_fp16"] <= target["bytes_vs_fp16_max"]}


def engine_bytes(opts: QuantBenchOptions, log: Log) -> dict[str, Any]:
    """TensorRT-RTX engines of the decode graph in fp16 and INT4 (QDQ from the fp16 graph): their bytes."""
    from vla_ros.runtime.trt_build import BuildError, build_engine

    fp16, _ = cached_export(opts, "fp16", log)
    cache = fp16["decode"].parent
    int4_dir = cache / f"int4_trt_b{opts.block_size}"
    int4, _, _ = quantize_graphs({"decode": fp16["decode"]}, "int4", opts, int4_dir, "tensorrt", "fp16", log)
    kv = [1, opts.width.heads, 0, opts.width.hidden // opts.width.heads]
    past = ([*kv[:2], 1, kv[3]], [*kv[:2], opts.prefill_tokens, kv[3]],
            [*kv[:2], opts.prefill_tokens + opts.decode_steps, kv[3]])
    from vla_ros.model.stages import kv_names

    profiles = {name: past for name in kv_names(opts.layers, "past")}
    out: dict[str, Any] = {"graph": "decode", "flavour": "tensorrt_rtx",
                           "target_int4_vs_fp16_max": ENGINE_TARGET}
    for name, path in (("fp16", fp16["decode"]), ("int4", int4["decode"])):
        try:
            header = build_engine(path, cache / f"decode_{name}.engine", profiles, graph="decode",
                                  flavour="tensorrt_rtx", log=log, workspace_gb=8.0)
        except BuildError as exc:
            out[name] = {"error": str(exc)}
            log(f"[bench] {name} engine: {exc}")
            continue
        out[name] = {"engine_bytes": header.engine_size, "build_s": header.build_seconds,
                     "trt_version": header.trt_version, **initializer_bytes(path)}
    if "engine_bytes" in out.get("fp16", {}) and "engine_bytes" in out.get("int4", {}):
        out["int4_vs_fp16"] = out["int4"]["engine_bytes"] / out["fp16"]["engine_bytes"]
        out["met"] = out["int4_vs_fp16"] <= ENGINE_TARGET
    return out


def format_quant_table(result: dict[str, Any]) -> str:
    """Precisions as columns: times (median / p90 ms), bytes and ratios."""
    names = list(result["precisions"])
    rows_: list[tuple[str, list[str]]] = []

    def col(fn: Callable[[dict], str]) -> list[str]:
        return [fn(result["precisions"][n]) for n in names]

    def ms(stats: dict) -> str:
        return f"{stats['median_ms']:.1f} / {stats['p90_ms']:.1f}"

    rows_.append(("decode step (M=1) ms", col(lambda e: ms(e["decode_step"]))))
    rows_.append(("  process CPU ms", col(lambda e: ms(e["decode_step_cpu"]))))
    rows_.append((f"prefill {result['prefill_tokens']} tokens ms", col(lambda e: ms(e["prefill"]))))
    rows_.append(("  process CPU ms", col(lambda e: ms(e["prefill_cpu"]))))
    rows_.append(("decode speed-up vs fp32", col(lambda e: f"{e['decode_speedup_vs_fp32']:.2f}x")))
    rows_.append(("  same, process CPU", col(lambda e: f"{e['decode_cpu_speedup_vs_fp32']:.2f}x")))
    rows_.append(("prefill speed-up vs fp32", col(lambda e: f"{e['prefill_speedup_vs_fp32']:.2f}x")))
    rows_.append(("  same, process CPU", col(lambda e: f"{e['prefill_cpu_speedup_vs_fp32']:.2f}x")))
    rows_.append(("weight MB (initializers)", col(lambda e: f"{e['weight_bytes'] / 1e6:.1f}")))
    rows_.append(("weight bytes vs fp32", col(lambda e: f"{e['weight_bytes_vs_fp32']:.3f}x")))
    rows_.append(("weight bytes vs fp16", col(lambda e: f"{e['weight_bytes_vs_fp16']:.3f}x")))
    rows_.append(("logits rel. error vs fp32", col(lambda e: f"{e['prefill_logits_rel_error_vs_fp32']:.2e}")))
    rows_.append(("quantize s / load s", col(lambda e: f"{e['quantize_s']:.1f} / {e['load_s']:.1f}")))
    w = result["width"]
    head = (f"{result['layers']} layer(s), hidden {w['hidden']}, MLP {w['mlp']}, {w['heads']} heads, vocab "
            f"{result['vocab']}; {result['runs']} runs x {result['decode_steps_per_run']} decode steps")
    width0 = max(len(r[0]) for r in rows_)
    widths = [max(len(n), *(len(r[1][i]) for r in rows_)) for i, n in enumerate(names)]
    lines = [head, "".ljust(width0) + "  " + "  ".join(n.rjust(wd) for n, wd in zip(names, widths))]
    lines += [k.ljust(width0) + "  " + "  ".join(v.rjust(wd) for v, wd in zip(vals, widths))
              for k, vals in rows_]
    lines += [f"{n}: {result['precisions'][n]['describe']}" for n in names]
    lines += [f"{n}: skipped: {why}" for n, why in result.get("skipped", {}).items()]
    for precision, t in result.get("targets", {}).items():
        lines.append(f"target {precision}: decode >= {t['decode_speedup_min']:.0f}x fp32 "
                     f"({t['decode_speedup']:.2f}x; process CPU {t['decode_cpu_speedup']:.2f}x), "
                     f"bytes <= {t['bytes_vs_fp16_max']:.2f}x fp16 "
                     f"({t['bytes_vs_fp16']:.3f}x): {'met' if t['met'] else 'NOT met'}")
    eng = result.get("engines")
    if eng:
        for name in ("fp16", "int4"):
            e = eng.get(name, {})
            size = f"{e['engine_bytes'] / 1e6:.1f} MB" if "engine_bytes" in e else e.get("error", "-")
            lines.append(f"TensorRT-RTX {name} decode engine: {size}")
        if "int4_vs_fp16" in eng:
            lines.append(f"target int4 engine <= {ENGINE_TARGET:.2f}x fp16 ({eng['int4_vs_fp16']:.3f}x): "
                         f"{'met' if eng['met'] else 'NOT met'}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The --llm-width mode's options of `vla-ros bench`."""
    g = p.add_argument_group("LLM layers at real width per precision (--llm-width; see bench_quant.py)")
    g.add_argument("--llm-width", default="", metavar="7b|HIDDEN",
                   help="instead of the rows: time N Llama layers of this width (7b: hidden 4096, MLP 11008, "
                        "32 heads) per precision with ONNX Runtime on the CPU")
    g.add_argument("--layers", type=int, default=2, help="--llm-width: decoder layers")
    g.add_argument("--precisions", default="fp32,int8,int4",
                   help=f"--llm-width: comma-separated, fp32 among them ({', '.join(PRECISIONS)}; w8a8 is "
                        "calibrated on random inputs)")
    g.add_argument("--tokens-prefill", type=int, default=280, help="--llm-width: positions of the prefill")
    g.add_argument("--decode-steps", type=int, default=7, help="--llm-width: decode steps per run")
    g.add_argument("--block-size", type=int, default=128, help="--llm-width: quantization block size")
    g.add_argument("--graph-cache", default="",
                   help=f"--llm-width: where the exported graphs are kept (default: {default_cache()})")
    g.add_argument("--engines", action="store_true",
                   help="--llm-width: also build TensorRT-RTX fp16 and int4 engines of the decode graph and "
                        "compare their bytes (no GPU needed)")


def options_from(args: argparse.Namespace) -> QuantBenchOptions:
    """QuantBenchOptions from the parsed `vla-ros bench` arguments (runs/warmup/threads: this mode's
    defaults when not given)."""
    return QuantBenchOptions(
        width=parse_width(args.llm_width), layers=args.layers,
        precisions=tuple(p.strip() for p in args.precisions.split(",") if p.strip()),
        prefill_tokens=args.tokens_prefill, decode_steps=args.decode_steps,
        runs=5 if args.runs is None else args.runs, warmup=1 if args.warmup is None else args.warmup,
        threads=0 if args.threads is None else args.threads, block_size=args.block_size,
        graph_cache=args.graph_cache, seed=args.seed, engines=args.engines)
