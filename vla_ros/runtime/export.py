"""`vla-ros export CHECKPOINT OUT_DIR`: ONNX graphs of the stages the torch backend runs.

The graphs are traced (torch.export, opset <= 20) from the modules of `vla_ros.model.stages`; the
checkpoint's settings file (`vla_settings.json`) decides which. Autoregressive OpenVLA: vision (both
towers' pixels -> projected patches), embed (token ids -> embeddings), prefill (embeddings -> last
logits + per-layer K/V) and decode (one token + past K/V -> logits + K/V one longer), with flat
`past_k_i` / `past_v_i` / `present_k_i` / `present_v_i` tensors; batch 1. OpenVLA-OFT: vision (batch =
cameras; with FiLM a second input `condition` [cameras, D]), embed, proprio (when the checkpoint has
proprio) and actions (the whole OFT sequence -> the chunk: one bidirectional LLM pass, the shifted slot
slice and the head; no K/V cache, dynamic sequence length); the settings file is copied next to them.
`--quantize int8|int4|w8a8` then quantizes the LLM Linears of the LLM graphs (`vla_ros.runtime.quantize`).
fp16 graphs compute every Softmax and LayerNormalization in fp32 (Cast islands); the LLM's
RMSNorm already upcasts in the model. `manifest.json` records inputs/outputs (shape, dtype), the
TensorRT optimization profiles, opset, checkpoint hash, settings and tool versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import TensorProto, helper

from vla_ros.model.loader import load_vla
from vla_ros.model.settings import SETTINGS_FILE, VlaSettings
from vla_ros.model.spec import CheckpointError
from vla_ros.model.stages import (
    DecodeStage,
    EmbedStage,
    PrefillStage,
    ProprioStage,
    VisionStage,
    action_stage,
    kv_names,
)
from vla_ros.runtime.graph_dir import (
    AR_GRAPHS,
    FORMAT,
    MANIFEST,
    OFT_GRAPHS,
    family_graphs,
    graph_files,
    sha256_files,
)
from vla_ros.runtime.quantize import (
    DEFAULT_BLOCK_SIZE,
    LLM_GRAPHS,
    MODES,
    TARGETS,
    QuantizeError,
    check_options,
    quant_key,
    quantization_options,
    quantize_graph_dir,
    summarize,
)

FORMAT_VERSION = 1
ALL_GRAPHS = tuple(dict.fromkeys(AR_GRAPHS + OFT_GRAPHS))
MAX_CAMERAS = 16  # largest camera batch the OFT vision graph takes (more when the checkpoint has more)
MIN_OPSET, MAX_OPSET = 18, 20  # torch.export's exporter starts at 18; TensorRT 10.0-10.13 parse <= 20
FP32_OPS = ("Softmax", "LayerNormalization")  # computed in fp32 inside fp16 graphs
OPT_TEXT_TOKENS = 24  # typical prompt length [tokens]: the profiles' "opt"
DEFAULT_MAX_TEXT_TOKENS = 96
N_ACTIONS = 7
Log = Callable[[str], None]


class ExportError(RuntimeError):
    """The checkpoint could not be exported (the message says which graph and why)."""


def checkpoint_files(checkpoint: Path) -> list[Path]:
    """The files that define a checkpoint's behaviour: config, weights, tokenizer, preprocessing."""
    names = ["config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer.model",
             "tokenizer_config.json", "added_tokens.json", "dataset_statistics.json", SETTINGS_FILE]
    files = [checkpoint / n for n in names if (checkpoint / n).is_file()]
    return files + sorted(checkpoint.glob("*.safetensors"))


def _dtype_name(elem_type: int) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name


def describe_io(model: Any) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of an onnx.ModelProto: name, dtype, shape (ints or symbolic names)."""
    def entry(v: Any) -> dict[str, Any]:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        return {"name": v.name, "dtype": _dtype_name(t.elem_type), "shape": shape}

    return {"inputs": [entry(v) for v in model.graph.input],
            "outputs": [entry(v) for v in model.graph.output]}


def keep_fp32(model: Any, op_types: Sequence[str] = FP32_OPS) -> int:
    """Wrap every fp16 node of `op_types` in Casts so it computes in fp32; returns how many.

    Inputs are cast to float32 and each output back to its original type; types come from the
    graph's value_info (torch writes it for every value).
    """
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    nodes: list[onnx.NodeProto] = []
    wrapped = 0
    for node in graph.node:
        if node.op_type not in op_types or types.get(node.input[0]) != TensorProto.FLOAT16:
            nodes.append(node)
            continue
        tag = f"_fp32island{wrapped}"
        for j, name in enumerate(node.input):
            if name and types.get(name) == TensorProto.FLOAT16:
                nodes.append(helper.make_node("Cast", [name], [f"{name}{tag}"], to=TensorProto.FLOAT,
                                              name=f"{node.name}{tag}_in{j}"))
                node.input[j] = f"{name}{tag}"
        after = []
        for j, name in enumerate(node.output):
            if name:
                node.output[j] = f"{name}{tag}"
                after.append(helper.make_node("Cast", [f"{name}{tag}"], [name],
                                              name=f"{node.name}{tag}_out{j}",
                                              to=types.get(name, TensorProto.FLOAT16)))
        nodes += [node, *after]
        wrapped += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return wrapped


def fp16_compute_nodes(model: Any, op_types: Sequence[str] = FP32_OPS) -> list[str]:
    """Names of `op_types` nodes whose first input is float16 (empty when all run in fp32)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({init.name: init.data_type for init in g.initializer})
    return [f"{n.op_type} {n.name}" for n in g.node
            if n.op_type in op_types and types.get(n.input[0]) != onnx.TensorProto.FLOAT]


def tool_versions() -> dict[str, str]:
    """Versions of the libraries that shape the graphs."""
    out = {}
    for dist in ("torch", "onnx", "onnxscript", "transformers", "timm", "onnxruntime", "vla_ros"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _export_one(module: Any, args: tuple, path: Path, input_names: list[str], output_names: list[str],
                dynamic_shapes: Any, opset: int) -> None:
    path.unlink(missing_ok=True)
    Path(str(path) + ".data").unlink(missing_ok=True)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.export's deprecation chatter, not ours
        torch.onnx.export(module, args, str(path), dynamo=True, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_shapes=dynamic_shapes, external_data=True,
                          verbose=False, optimize=True)


def _finish_graph(path: Path, dtype: str) -> tuple[dict[str, Any], int]:
    """fp32 islands (fp16), save, onnx.checker; returns (inputs/outputs, islands added)."""
    model = onnx.load(str(path), load_external_data=False)
    islands = 0
    if dtype == "fp16":
        islands = keep_fp32(model)
        onnx.save(model, str(path))  # external data references stay as they are
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name} fails onnx.checker: {exc}") from exc
    return describe_io(model), islands


def _ar_profiles(graph: str, core: Any, patches: int, hidden: int, max_text: int) -> dict[str, dict]:
    """TensorRT min/opt/max shapes of the dynamic inputs of one autoregressive graph."""
    limit = core.max_positions
    seq_opt, seq_max = patches + OPT_TEXT_TOKENS, min(patches + max_text, limit - N_ACTIONS)
    kv = [1, core.num_kv_heads, 0, core.head_dim]

    def kv_shape(n: int) -> list[int]:
        return [*kv[:2], n, kv[3]]

    if graph == "embed":
        return {"token_ids": {"min": [1, 1], "opt": [1, OPT_TEXT_TOKENS], "max": [1, max_text]}}
    if graph == "prefill":
        return {"inputs_embeds": {"min": [1, 2, hidden], "opt": [1, seq_opt, hidden],
                                  "max": [1, seq_max, hidden]}}
    if graph == "decode":

        past = {"min": kv_shape(1), "opt": kv_shape(seq_opt + N_ACTIONS // 2),
                "max": kv_shape(seq_max + N_ACTIONS)}
        return {name: past for name in kv_names(core.num_layers, "past")}
    return {}


def oft_fixed_length(settings: VlaSettings, patches: int) -> int:
    """Positions of an OFT sequence besides the prompt ids after BOS: BOS, every camera's patches, the
    proprio token, the zero action slots and </s>."""
    return len(settings.cameras) * patches + (1 if settings.proprio_dim else 0) + settings.n_slots + 2


def _fixed(shape: list[int]) -> dict[str, list[int]]:
    return {"min": shape, "opt": shape, "max": shape}


def _oft_profiles(graph: str, settings: VlaSettings, cfg: Any, max_text: int) -> dict[str, dict]:
    """TensorRT min/opt/max shapes of the dynamic inputs of one OFT graph (`max_text` counts BOS)."""
    hidden, cameras = cfg.llm_hidden, len(settings.cameras)
    if graph == "vision":
        size = cfg.image_size
        out = {"pixel_values": _fixed([cameras, 3 * cfg.n_towers, size, size])}
        return {**out, "condition": _fixed([cameras, hidden])} if settings.film else out
    if graph == "embed":  # BOS, the prompt and </s>
        return {"token_ids": {"min": [1, 2], "opt": [1, OPT_TEXT_TOKENS + 1], "max": [1, max_text + 1]}}
    if graph == "actions":
        fixed = oft_fixed_length(settings, cfg.num_patches)
        return {"inputs_embeds": {"min": [1, fixed + 1, hidden],
                                  "opt": [1, fixed + min(OPT_TEXT_TOKENS, max_text) - 1, hidden],
                                  "max": [1, fixed + max_text - 1, hidden]}}
    return {}


def _check_max_text(max_text: int, core: Any, settings: VlaSettings, patches: int) -> None:
    """The prompt-length limit must leave room for the rest of the family's sequence."""
    taken = oft_fixed_length(settings, patches) - 1 if settings.parallel else patches + N_ACTIONS
    if not 2 <= max_text <= core.max_positions - taken:
        raise ExportError(f"max_text_tokens must be in [2, {core.max_positions - taken}]")


GraphSpec = tuple[Any, tuple, list[str], list[str], Any]  # module, sample inputs, names in/out, dynamic


def _ar_specs(model: Any, cfg: Any, max_text: int, float_dtype: torch.dtype) -> dict[str, GraphSpec]:
    """The autoregressive family's graphs: vision, embed, prefill, decode (batch 1)."""
    core, patches, hidden = model.core, cfg.num_patches, cfg.llm_hidden
    past_names, present_names = kv_names(core.num_layers, "past"), kv_names(core.num_layers, "present")
    dim = torch.export.Dim
    seq = dim("seq", min=2, max=min(core.max_positions - N_ACTIONS, patches + max_text))
    tokens = dim("tokens", min=1, max=core.max_positions)
    past = dim("past", min=1, max=core.max_positions - 1)
    sample_past = [torch.zeros(1, core.num_kv_heads, 5, core.head_dim, dtype=float_dtype) for _ in past_names]
    pixels = torch.zeros(1, 3 * cfg.n_towers, cfg.image_size, cfg.image_size, dtype=float_dtype)
    return {
        "vision": (VisionStage(model), (pixels,), ["pixel_values"], ["patch_embeds"], None),
        "embed": (EmbedStage(core), (torch.zeros(1, 6, dtype=torch.int64),), ["token_ids"], ["embeds"],
                  {"token_ids": {1: tokens}}),
        "prefill": (PrefillStage(core), (torch.zeros(1, patches + 8, hidden, dtype=float_dtype),),
                    ["inputs_embeds"], ["logits", *present_names], {"inputs_embeds": {1: seq}}),
        "decode": (DecodeStage(core), (torch.zeros(1, 1, dtype=torch.int64), *sample_past),
                   ["token_ids", *past_names], ["logits", *present_names],
                   {"token_ids": None, "past": tuple({2: past} for _ in past_names)}),
    }


def _oft_specs(model: Any, cfg: Any, max_text: int, float_dtype: torch.dtype) -> dict[str, GraphSpec]:
    """OpenVLA-OFT's graphs: vision (batch = cameras, FiLM condition), embed, proprio, actions."""
    settings, core, hidden = model.settings, model.core, cfg.llm_hidden
    dim = torch.export.Dim
    cameras = dim("cameras", min=1, max=max(MAX_CAMERAS, len(settings.cameras)))
    fixed = oft_fixed_length(settings, cfg.num_patches)
    seq = dim("seq", min=fixed + 1, max=fixed + max_text - 1)
    tokens = dim("tokens", min=1, max=core.max_positions)
    pixels = torch.zeros(2, 3 * cfg.n_towers, cfg.image_size, cfg.image_size, dtype=float_dtype)  # 2: not 0/1
    vision_in, vision_names, vision_dyn = (pixels,), ["pixel_values"], {"pixel_values": {0: cameras}}
    if settings.film:
        vision_in += (torch.zeros(2, hidden, dtype=float_dtype),)
        vision_names.append("condition")
        vision_dyn["condition"] = {0: cameras}
    output = "actions" if settings.action_head == "l1_regression" else "action_ids"
    specs: dict[str, GraphSpec] = {
        "vision": (VisionStage(model), vision_in, vision_names, ["patch_embeds"], vision_dyn),
        "embed": (EmbedStage(core), (torch.zeros(1, 6, dtype=torch.int64),), ["token_ids"], ["embeds"],
                  {"token_ids": {1: tokens}}),
        "actions": (action_stage(model), (torch.zeros(1, fixed + min(8, max_text - 1), hidden,
                                                      dtype=float_dtype),),
                    ["inputs_embeds"], [output], {"inputs_embeds": {1: seq}}),
    }
    if settings.proprio_dim:
        specs["proprio"] = (ProprioStage(model), (torch.zeros(1, settings.proprio_dim, dtype=float_dtype),),
                            ["proprio"], ["proprio_embeds"], None)
    return specs


def _graphs_to_keep(path: Path, manifest: dict[str, Any], exporting: Sequence[str]) -> dict[str, Any]:
    """Entries of an earlier export in the same directory that stay valid (same checkpoint and options)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    keys = ("checkpoint_sha256", "dtype", "opset", "model", "settings")
    same = all(old.get(k) == manifest.get(k) for k in keys)
    if not same or not isinstance(old.get("graphs"), dict):
        return {}
    wanted = family_graphs(VlaSettings.from_json(manifest["settings"]))
    same_quantization = quant_key(old.get("quantization")) == quant_key(manifest.get("quantization"))
    return {name: entry for name, entry in old["graphs"].items() if name in wanted and name not in exporting
            and (same_quantization or name not in LLM_GRAPHS)}  # towers etc. are never quantized


def _copy_settings(checkpoint: Path, out: Path) -> None:
    """The checkpoint's settings file next to the graphs (a stale one from another export is removed)."""
    source, target = checkpoint / SETTINGS_FILE, out / SETTINGS_FILE
    if source.is_file():
        shutil.copyfile(source, target)
    else:
        target.unlink(missing_ok=True)


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, dtype: str = "fp32",
                      opset: int = MAX_OPSET, graphs: Sequence[str] | None = None,
                      max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS, log: Log = print,
                      loaded: Any = None, quantize: str = "none", block_size: int = DEFAULT_BLOCK_SIZE,
                      target: str = "onnxruntime", calibration: Any = None) -> dict[str, Any]:
    """Export the stages of a checkpoint to `out_dir`; returns the manifest (also written as JSON).

    `graphs`: a subset of the family's graphs (None = all of them). `loaded` (a LoadedVla of the same
    checkpoint, in `dtype`, on the CPU) skips loading it again. `quantize` (int8 | int4 | w8a8, with
    `block_size`, `target` and for w8a8 `calibration`) then quantizes the LLM graphs' Linears
    (`vla_ros.runtime.quantize.quantize_graph_dir`).
    """
    if dtype not in ("fp32", "fp16"):
        raise ExportError(f"--dtype must be fp32 or fp16, got {dtype!r}")
    try:
        check_options(quantize, block_size, target, calibration)
    except QuantizeError as exc:
        raise ExportError(str(exc)) from exc
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}] (TensorRT 10.x parses up to 20)")
    unknown = set(graphs or ()) - set(ALL_GRAPHS)
    if unknown:
        raise ExportError(f"unknown graph(s) {sorted(unknown)}; choose from {list(ALL_GRAPHS)}")
    checkpoint, out = Path(checkpoint), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.monotonic()
    if loaded is None:
        log(f"loading {checkpoint} ({dtype})")
        loaded = load_vla(checkpoint, dtype=dtype, device="cpu")
    elif loaded.dtype != dtype or loaded.device != "cpu":
        raise ExportError(f"the loaded model is {loaded.dtype} on {loaded.device}; "
                          f"export needs {dtype} on cpu")
    model, cfg, settings = loaded.model, loaded.spec, loaded.settings
    core = model.core
    available = family_graphs(settings)
    graphs = list(graphs or available)
    foreign = [g for g in graphs if g not in available]
    if foreign:
        raise ExportError(f"graph(s) {foreign} do not belong to this checkpoint ({loaded.family.name}: "
                          f"{', '.join(available)})")
    max_text = int(max_text_tokens)
    _check_max_text(max_text, core, settings, cfg.num_patches)
    float_dtype = next(model.parameters()).dtype
    make_specs = _oft_specs if settings.parallel else _ar_specs
    specs = make_specs(model, cfg, max_text, float_dtype)
    manifest = _manifest(checkpoint, loaded, dtype, opset, max_text)
    options = quantization_options(quantize, block_size, target)
    manifest["quantization"] = options
    log("hashing checkpoint files")
    manifest["checkpoint_sha256"] = sha256_files(checkpoint_files(checkpoint))
    manifest["graphs"] = _graphs_to_keep(out / MANIFEST, manifest, graphs)
    for i, name in enumerate(graphs, 1):
        log(f"[{i}/{len(graphs)}] {name}: tracing and exporting (opset {opset}, {dtype})")
        manifest["graphs"][name] = _export_graph(name, specs[name], out, opset, dtype, log)
        profiles = (_oft_profiles(name, settings, cfg, max_text) if settings.parallel
                    else _ar_profiles(name, core, cfg.num_patches, cfg.llm_hidden, max_text))
        manifest["graphs"][name]["profiles"] = profiles
    _copy_settings(checkpoint, out)
    manifest["quantization"] = summarize(manifest, options)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if quantize != "none":
        try:
            manifest["quantization"] = quantize_graph_dir(out, quantize, block_size, target, log, calibration,
                                                          loaded=loaded)
        except QuantizeError as exc:
            raise ExportError(f"quantizing failed: {exc}") from exc
        manifest = json.loads((out / MANIFEST).read_text())
    log(f"wrote {out / MANIFEST} ({time.monotonic() - t_all:.1f} s in all)")
    return manifest


def _manifest(checkpoint: Path, loaded: Any, dtype: str, opset: int, max_text: int) -> dict[str, Any]:
    """The manifest's header: format, options, checkpoint, model facts, settings, K/V names."""
    core, cfg = loaded.model.core, loaded.spec
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "dtype": dtype, "opset": opset,
        "checkpoint": str(checkpoint.resolve()),
        "config_sha256": sha256_files([checkpoint / "config.json"]),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tools": tool_versions(),
        "model": {"family": loaded.family.name, "num_layers": core.num_layers, "num_heads": core.num_heads,
                  "num_kv_heads": core.num_kv_heads, "head_dim": core.head_dim, "hidden": cfg.llm_hidden,
                  "vocab": cfg.padded_vocab_size, "num_patches": cfg.num_patches,
                  "image_size": cfg.image_size, "n_towers": cfg.n_towers, "max_positions": core.max_positions,
                  "max_text_tokens": max_text},
        "settings": loaded.settings.to_json(),
        "graphs": {},
    }
    if not loaded.settings.parallel:
        manifest["kv"] = {"past": kv_names(core.num_layers, "past"),
                          "present": kv_names(core.num_layers, "present")}
    return manifest


def _export_graph(name: str, spec: GraphSpec, out: Path, opset: int, dtype: str, log: Log) -> dict[str, Any]:
    """Trace, export and check one graph; returns its manifest entry (without profiles)."""
    module, args, in_names, out_names, dyn = spec
    path = out / f"{name}.onnx"
    t0 = time.monotonic()
    try:
        _export_one(module.eval(), args, path, in_names, out_names, dyn, opset)
    except Exception as exc:  # noqa: BLE001 - re-raised with the graph's name
        raise ExportError(f"exporting {name} failed: {type(exc).__name__}: {exc}") from exc
    io, islands = _finish_graph(path, dtype)
    files = graph_files(path)
    size = sum(f.stat().st_size for f in files)
    nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
    log(f"    {path.name}: {size / 1e6:.1f} MB, {nodes} nodes, onnx.checker ok"
        f"{f', {islands} Softmax/LayerNorm in fp32' if dtype == 'fp16' else ''}"
        f" ({time.monotonic() - t0:.1f} s)")
    return {"file": path.name, "data_files": [f.name for f in files[1:]], "sha256": sha256_files(files),
            **io, "nodes": nodes, "fp32_islands": islands}


def main(argv: list[str], bag_reader: Callable[[str], Any] | None = None) -> int:
    """CLI entry point of `vla-ros export`; `bag_reader` turns a --calibration rosbag into observations
    (given by the CLI, which may import bag/)."""
    ap = argparse.ArgumentParser(prog="vla-ros export", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="checkpoint directory (OpenVLA HF layout, or converted OpenVLA-OFT)")
    ap.add_argument("out_dir", help="output directory for the graphs and manifest.json")
    ap.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="graph precision")
    ap.add_argument("--opset", type=int, default=MAX_OPSET, help=f"ONNX opset ({MIN_OPSET}..{MAX_OPSET})")
    ap.add_argument("--graphs", default="",
                    help="comma-separated subset of the family's graphs (default: all of them: "
                         + ",".join(AR_GRAPHS) + "; OpenVLA-OFT: " + ",".join(OFT_GRAPHS) + ")")
    ap.add_argument("--max-text-tokens", type=int, default=DEFAULT_MAX_TEXT_TOKENS,
                    help="longest prompt in tokens that the TensorRT profiles cover")
    ap.add_argument("--quantize", choices=MODES, default="none",
                    help="quantize the LLM Linears of the LLM graphs: int8 / int4 weight-only (per block), "
                         "w8a8 (SmoothQuant, needs --calibration); towers, heads, embeddings, norms stay "
                         "float")
    ap.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                    help="weights per quantization block along K (power of 2 >= 16; smaller when K is)")
    ap.add_argument("--target", choices=TARGETS, default="onnxruntime",
                    help="who runs the graphs: onnxruntime (MatMulNBits) or tensorrt (QDQ, symmetric)")
    ap.add_argument("--calibration", default=None,
                    help="w8a8: observations to calibrate on: a rosbag (frames of topics.camera with the "
                         "instruction in force), a directory of images (png/jpg) with instructions.txt, "
                         "or a .npz (images, instructions, optional proprio)")
    args = ap.parse_args(argv)
    try:
        calibration = args.calibration
        if calibration is not None and bag_reader is not None and args.quantize == "w8a8":
            calibration = bag_reader(calibration)
        export_checkpoint(args.checkpoint, args.out_dir, args.dtype, args.opset,
                          [g for g in args.graphs.split(",") if g] or None, args.max_text_tokens,
                          quantize=args.quantize, block_size=args.block_size, target=args.target,
                          calibration=calibration)
    except (ExportError, CheckpointError, RuntimeError, ValueError) as exc:
        print(f"vla-ros export: {exc}", file=sys.stderr)
        return 1
    return 0
