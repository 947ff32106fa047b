"""`vla-ros build-engine ONNX_DIR`: TensorRT engines from the exported ONNX graphs.

Uses only the API subset common to TensorRT 10.x and 11.x (and TensorRT-RTX, which builds engines
without a GPU and so proves the graphs in CI): strongly typed networks (precision comes from the
ONNX graph), one optimization profile per engine with min/opt/max shapes from the export
manifest, a persistent timing cache, and a vla_ros header in front of every engine
(see engine_file.py).

Quantized exports build when they were made for TensorRT (`vla-ros export --quantize int4 --target
tensorrt`: symmetric INT4 DequantizeLinear -> MatMul, which TensorRT runs as weight-only INT4; W8A8:
INT8 Q/DQ). Graphs quantized for ONNX Runtime hold its MatMulNBits operator, which TensorRT has no
kernel for: they are refused before any build, with the export option that makes buildable ones.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vla_ros.model.settings import SETTINGS_FILE
from vla_ros.runtime.engine_file import NO_GPU, EngineHeader, current_gpu, sha256_file, write_engine
from vla_ros.runtime.graph_dir import AR_GRAPHS, MANIFEST, OFT_GRAPHS

FLAVOURS = ("tensorrt", "tensorrt_rtx")
Shape = Sequence[int]
Profiles = Mapping[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)
Log = Callable[[str], None]


class BuildError(RuntimeError):
    """A graph could not be parsed or built; the message carries TensorRT's own errors."""


ORT_ONLY_OPS = ("MatMulNBits", "GatherBlockQuantized")  # com.microsoft ops of ORT's weight-only quantizer


def ort_only_nodes(onnx_path: str | Path) -> dict[str, int]:
    """How many nodes of each ONNX-Runtime-only quantized operator a graph holds (weights not read; empty
    when the onnx package is missing: an engine-only install checks the manifest's record alone)."""
    try:
        import onnx  # lazy: optional on a machine that only builds engines
    except ImportError:
        return {}
    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - an unreadable file is left to TensorRT's parser, which reports it
        return {}
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in ORT_ONLY_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def refuse_ort_quantized(onnx_path: str | Path, quantization: Mapping[str, Any] | None = None) -> None:
    """BuildError when a graph was quantized for ONNX Runtime (MatMulNBits nodes, or the manifest's
    `quantization` record says target onnxruntime): TensorRT cannot build it."""
    record = quantization or {}
    counts = ort_only_nodes(onnx_path)
    for_ort = record.get("target") == "onnxruntime" and record.get("mode") in ("int4", "int8")
    if not counts and not for_ort:
        return
    mode = record.get("mode") or "int4"
    found = ", ".join(f"{n} {op}" for op, n in counts.items()) or "MatMulNBits"
    fix = ("--quantize int4 --target tensorrt (symmetric INT4 Q/DQ)" if mode == "int4"
           else "--quantize w8a8 --target tensorrt (TensorRT's INT8 is W8A8)")
    raise BuildError(f"{onnx_path}: quantized for ONNX Runtime ({found}: `--quantize {mode} --target "
                     f"onnxruntime`), which TensorRT cannot build. Export for TensorRT instead: "
                     f"vla-ros export CHECKPOINT DIR {fix}")


def import_tensorrt(prefer: str | None = None) -> tuple[Any, str]:
    """(module, flavour): `tensorrt` when installed, else `tensorrt_rtx`.

    `prefer` (or the environment variable VLA_ROS_TRT_FLAVOUR) picks one flavour explicitly.
    """
    wanted = prefer or os.environ.get("VLA_ROS_TRT_FLAVOUR") or ""
    if wanted and wanted not in FLAVOURS:
        raise BuildError(f"unknown TensorRT flavour {wanted!r}; choose one of {list(FLAVOURS)}")
    errors = []
    for name in ([wanted] if wanted else list(FLAVOURS)):
        try:
            return importlib.import_module(name), name
        except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised raw
            errors.append(f"{name}: {exc}")
    raise BuildError("TensorRT is not available (" + "; ".join(errors) + "). On Jetson it comes with "
                     "JetPack; elsewhere install NVIDIA's tensorrt wheels, or tensorrt-rtx-cu12 to "
                     "build without a GPU")


def make_logger(trt: Any, echo_level: str = "warning", log: Log = print) -> Any:
    """A TensorRT ILogger that keeps errors for our messages and echoes up to `echo_level`."""
    levels = {"error": 1, "warning": 2, "info": 3, "verbose": 4}

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level <= 1:
                self.errors.append(msg)
            if level <= levels.get(echo_level, 2):
                log(f"    [TensorRT {getattr(severity, 'name', level)}] {msg}")

    return _Logger()


def _make_progress(trt: Any, log: Log) -> Any | None:
    """An IProgressMonitor printing the builder's top phases (TensorRT >= 10.0), or None."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Progress(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.depth: dict[str, int] = {}
            self.start: dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            depth = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self.depth[phase_name] = depth
            self.start[phase_name] = time.monotonic()
            if depth <= 1:
                log(f"    {'  ' * depth}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            if self.depth.pop(phase_name, 2) == 0:
                log(f"    {phase_name} done in {time.monotonic() - self.start.pop(phase_name, 0.0):.1f} s")

    return _Progress()


def _parser_errors(parser: Any) -> list[str]:
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = getattr(err, "node_name", lambda: "")() or f"node {err.node()}"
        op = getattr(err, "node_operator", lambda: "")()
        out.append(f"{node}{f' ({op})' if op else ''}: {err.desc()}")
    return out


def _read_timing_cache(path: Path | None, log: Log) -> bytes:
    if path is None or not path.exists():
        return b""
    data = path.read_bytes()
    log(f"  timing cache {path} ({len(data)} bytes)")
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def build_engine(onnx_path: str | Path, engine_path: str | Path, profiles: Profiles, *,
                 graph: str = "", workspace_gb: float = 4.0, timing_cache: str | Path | None = None,
                 flavour: str | None = None, log: Log = print, echo_level: str = "warning",
                 onnx_sha256: str | None = None) -> EngineHeader:
    """Parse one ONNX file into a strongly typed network, build it, write the engine with its header.

    `profiles` gives (min, opt, max) for every input with a dynamic dimension. Raises BuildError.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    cache_path = Path(timing_cache) if timing_cache else None
    refuse_ort_quantized(onnx_path)
    trt, flavour_used = import_tensorrt(flavour)
    logger = make_logger(trt, echo_level, log)
    t_start = time.monotonic()
    builder = trt.Builder(logger)
    if builder is None:
        raise BuildError(f"{trt.__name__}.Builder failed (no usable CUDA device?): {logger.errors}")
    typing_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 1 << int(typing_flag) if typing_flag is not None else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    log(f"  parsing {onnx_path.name}")
    if not parser.parse_from_file(str(onnx_path)):
        raise BuildError(f"{onnx_path}: TensorRT's ONNX parser failed:\n  "
                         + "\n  ".join(_parser_errors(parser) or logger.errors))
    log(f"  network: {network.num_layers} layers, {network.num_inputs} inputs, "
        f"{network.num_outputs} outputs")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    used: dict[str, dict[str, list[int]]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        if tensor.name in profiles:
            lo, opt, hi = (list(map(int, s)) for s in profiles[tensor.name])
            _check_profile(tensor.name, dims, lo, opt, hi)
        elif any(d < 0 for d in dims):
            raise BuildError(f"{onnx_path}: input {tensor.name!r} has dynamic shape {dims} but the "
                             "manifest gives no min/opt/max for it")
        else:
            lo = opt = hi = dims
        profile.set_shape(tensor.name, lo, opt, hi)
        used[tensor.name] = {"min": lo, "opt": opt, "max": hi}
    config.add_optimization_profile(profile)

    gpu_name, cc = current_gpu()
    if flavour_used == "tensorrt_rtx":
        cache = None  # TensorRT-RTX picks kernels when the engine is loaded: it has no timing cache
    else:
        if gpu_name == NO_GPU and cache_path is not None and cache_path.exists():
            log("  no GPU: the timing cache is not read (nothing is timed without a GPU)")
            cache_data = b""
        else:
            cache_data = _read_timing_cache(cache_path, log)
        cache = config.create_timing_cache(cache_data)
        if not config.set_timing_cache(cache, False):
            log("  timing cache was made on another device or version: starting a fresh one")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
    monitor = _make_progress(trt, log)
    if monitor is not None and hasattr(config, "progress_monitor"):
        config.progress_monitor = monitor

    log(f"  building {graph or onnx_path.stem} with {flavour_used} {trt.__version__} "
        f"(strongly typed: {typing_flag is not None})")
    logger.errors.clear()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"{onnx_path}: TensorRT could not build the engine:\n  "
                         + "\n  ".join(logger.errors or ["(no error message)"]))
    if cache is not None and cache_path is not None:
        _write_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
    header = EngineHeader(
        graph=graph or onnx_path.stem, trt_flavour=flavour_used, trt_version=str(trt.__version__),
        gpu_name=gpu_name, compute_capability=cc, onnx_file=onnx_path.name,
        onnx_sha256=onnx_sha256 or sha256_file(onnx_path),
        build_time_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(time.monotonic() - t_start, 3), strongly_typed=typing_flag is not None,
        profiles=used)
    write_engine(engine_path, header, serialized)
    log(f"  wrote {engine_path} ({header.engine_size / 1e6:.1f} MB) in {header.build_seconds:.1f} s")
    return header


def _check_profile(name: str, dims: list[int], lo: list[int], opt: list[int], hi: list[int]) -> None:
    if not len(lo) == len(opt) == len(hi) == len(dims):
        raise BuildError(f"profile of {name!r}: ranks differ from the graph's {dims}")
    for d, a, b, c in zip(dims, lo, opt, hi):
        if not 0 < a <= b <= c or (d >= 0 and not a == b == c == d):
            raise BuildError(f"profile of {name!r}: need 0 < min <= opt <= max matching the graph's "
                             f"{dims}, got min {lo} opt {opt} max {hi}")


def load_manifest(onnx_dir: str | Path) -> dict[str, Any]:
    """The export manifest of a graph directory (see export.py)."""
    path = Path(onnx_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BuildError(f"cannot read {path}: {exc} (export the checkpoint first: vla-ros export)") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("graphs"), dict):
        raise BuildError(f"{path}: not a vla_ros export manifest (no 'graphs')")
    return manifest


def graph_profiles(entry: Mapping[str, Any]) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """min/opt/max per dynamic input of one manifest graph entry."""
    return {name: (p["min"], p["opt"], p["max"]) for name, p in entry.get("profiles", {}).items()}


def engine_name(graph: str) -> str:
    """File name of a graph's engine."""
    return f"{graph}.engine"


def build_all(onnx_dir: str | Path, out_dir: str | Path | None = None, *, fp16: bool = False,
              workspace_gb: float = 4.0, timing_cache: str | Path | None = None,
              graphs: Sequence[str] | None = None, flavour: str | None = None,
              log: Log = print, echo_level: str = "warning") -> dict[str, EngineHeader]:
    """Build every graph of an export directory; engines (and copies of the manifest and the settings
    file) go to `out_dir`."""
    onnx_dir = Path(onnx_dir)
    out = Path(out_dir) if out_dir else onnx_dir
    manifest = load_manifest(onnx_dir)
    if fp16 and manifest.get("dtype") != "fp16":
        raise BuildError(f"--fp16: {onnx_dir} holds {manifest.get('dtype')} graphs. Networks are strongly "
                         "typed (TensorRT 11 has no FP16 builder flag): precision comes from the ONNX "
                         "graph, so export with `vla-ros export CHECKPOINT DIR --dtype fp16`")
    cache = Path(timing_cache) if timing_cache else out / "timing.cache"
    selected = list(graphs) if graphs else list(manifest["graphs"])
    missing = [name for name in selected if name not in manifest["graphs"]]
    if missing:
        raise BuildError(f"graph(s) {missing} not in {onnx_dir / MANIFEST}")
    quantization = manifest.get("quantization") if isinstance(manifest.get("quantization"), dict) else None
    for name in selected:  # every graph checked before the first build
        refuse_ort_quantized(onnx_dir / manifest["graphs"][name]["file"], quantization)
    built: dict[str, EngineHeader] = {}
    for i, name in enumerate(selected, 1):
        entry = manifest["graphs"][name]
        log(f"[{i}/{len(selected)}] {name}")
        built[name] = build_engine(
            onnx_dir / entry["file"], out / engine_name(name), graph_profiles(entry), graph=name,
            workspace_gb=workspace_gb, timing_cache=cache, flavour=flavour, log=log,
            echo_level=echo_level, onnx_sha256=entry.get("sha256"))
    if out.resolve() != onnx_dir.resolve():
        shutil.copyfile(onnx_dir / MANIFEST, out / MANIFEST)
        _copy_settings(onnx_dir, out)
    return built


def _copy_settings(onnx_dir: Path, out: Path) -> None:
    """The export's settings file (OpenVLA-OFT) next to the engines; a stale one is removed."""
    if (onnx_dir / SETTINGS_FILE).is_file():
        shutil.copyfile(onnx_dir / SETTINGS_FILE, out / SETTINGS_FILE)
    else:
        (out / SETTINGS_FILE).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    """CLI entry point of `vla-ros build-engine`."""
    ap = argparse.ArgumentParser(prog="vla-ros build-engine", description=__doc__.splitlines()[0])
    ap.add_argument("onnx_dir", help="directory written by `vla-ros export` (manifest.json + *.onnx)")
    ap.add_argument("--out", default="", help="engine directory (default: ONNX_DIR)")
    ap.add_argument("--fp16", action="store_true",
                    help="require fp16 graphs (precision comes from the graph: export with --dtype fp16)")
    ap.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace limit [GiB]")
    ap.add_argument("--timing-cache", default="", help="timing cache file (default: OUT/timing.cache)")
    ap.add_argument("--graphs", default="",
                    help="comma-separated subset of the exported graphs (default: all: "
                    + ",".join(AR_GRAPHS) + "; OpenVLA-OFT: " + ",".join(OFT_GRAPHS) + ")")
    ap.add_argument("--flavour", choices=FLAVOURS, default=None,
                    help="TensorRT module (default: tensorrt, else tensorrt_rtx)")
    ap.add_argument("--verbose", action="store_true", help="echo TensorRT's info messages")
    args = ap.parse_args(argv)
    if not 0.0 < args.workspace_gb <= 1024.0:
        print("vla-ros build-engine: --workspace-gb must be in (0, 1024]", file=sys.stderr)
        return 2
    try:
        built = build_all(args.onnx_dir, args.out or None, fp16=args.fp16, workspace_gb=args.workspace_gb,
                          timing_cache=args.timing_cache or None,
                          graphs=[g for g in args.graphs.split(",") if g] or None, flavour=args.flavour,
                          echo_level="info" if args.verbose else "warning")
    except BuildError as exc:
        print(f"vla-ros build-engine: {exc}", file=sys.stderr)
        return 1
    first = next(iter(built.values()))
    print(f"built {len(built)} engine(s) with {first.trt_flavour} {first.trt_version} for "
          f"{first.gpu_name}")
    return 0
