"""`vla-ros export CHECKPOINT OUT_DIR`: ONNX graphs of the stages the torch backend runs.

Four graphs are traced (torch.export, opset <= 20) from the modules of `vla_ros.model.stages`:
vision (both towers' pixels -> projected patches), embed (token ids -> embeddings), prefill
(embeddings -> last logits + per-layer K/V) and decode (one token + past K/V -> logits + K/V one
longer), with flat `past_k_i` / `past_v_i` / `present_k_i` / `present_v_i` tensors. Batch is 1.
fp16 graphs compute every Softmax and LayerNormalization in fp32 (Cast islands); the LLM's
RMSNorm already upcasts in the model. `manifest.json` records inputs/outputs (shape, dtype), the
TensorRT optimization profiles, opset, checkpoint hash and tool versions.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
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
from vla_ros.model.spec import CheckpointError
from vla_ros.model.stages import DecodeStage, EmbedStage, PrefillStage, VisionStage, kv_names
from vla_ros.runtime.graph_dir import FORMAT, MANIFEST, sha256_files

FORMAT_VERSION = 1
GRAPHS = ("vision", "embed", "prefill", "decode")
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
             "tokenizer_config.json", "added_tokens.json", "dataset_statistics.json"]
    files = [checkpoint / n for n in names if (checkpoint / n).is_file()]
    return files + sorted(checkpoint.glob("*.safetensors"))


def graph_files(onnx_path: Path) -> list[Path]:
    """An ONNX file and its external-data file(s) (`<name>.data` as torch writes it)."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    locations = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in init.external_data if e.key == "location")
    return [onnx_path] + [onnx_path.parent / loc for loc in sorted(locations)]


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


def _profiles(graph: str, model: Any, patches: int, hidden: int, max_text: int) -> dict[str, dict]:
    """TensorRT min/opt/max shapes of the dynamic inputs of one graph."""
    core = model.core
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


def _graphs_to_keep(path: Path, manifest: dict[str, Any], exporting: Sequence[str]) -> dict[str, Any]:
    """Entries of an earlier export in the same directory that stay valid (same checkpoint and options)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = all(old.get(k) == manifest[k] for k in ("checkpoint_sha256", "dtype", "opset", "model"))
    if not same or not isinstance(old.get("graphs"), dict):
        return {}
    return {name: entry for name, entry in old["graphs"].items() if name in GRAPHS and name not in exporting}


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, dtype: str = "fp32",
                      opset: int = MAX_OPSET, graphs: Sequence[str] = GRAPHS,
                      max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS, log: Log = print,
                      loaded: Any = None) -> dict[str, Any]:
    """Export the stages of a checkpoint to `out_dir`; returns the manifest (also written as JSON).

    `loaded` (a LoadedVla of the same checkpoint, in `dtype`, on the CPU) skips loading it again.
    """
    if dtype not in ("fp32", "fp16"):
        raise ExportError(f"--dtype must be fp32 or fp16, got {dtype!r}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}] (TensorRT 10.x parses up to 20)")
    unknown = set(graphs) - set(GRAPHS)
    if unknown:
        raise ExportError(f"unknown graph(s) {sorted(unknown)}; choose from {list(GRAPHS)}")
    checkpoint, out = Path(checkpoint), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.monotonic()
    if loaded is None:
        log(f"loading {checkpoint} ({dtype})")
        loaded = load_vla(checkpoint, dtype=dtype, device="cpu")
    elif loaded.dtype != dtype or loaded.device != "cpu":
        raise ExportError(f"the loaded model is {loaded.dtype} on {loaded.device}; "
                          f"export needs {dtype} on cpu")
    model, cfg = loaded.model, loaded.spec
    core = model.core
    hidden, patches, n_layers = cfg.llm_hidden, cfg.num_patches, core.num_layers
    max_text = int(max_text_tokens)
    if not 2 <= max_text <= core.max_positions - patches - N_ACTIONS:
        raise ExportError(f"max_text_tokens must be in [2, {core.max_positions - patches - N_ACTIONS}]")
    float_dtype = next(model.parameters()).dtype
    past_names, present_names = kv_names(n_layers, "past"), kv_names(n_layers, "present")
    dim = torch.export.Dim
    seq = dim("seq", min=2, max=min(core.max_positions - N_ACTIONS, patches + max_text))
    tokens = dim("tokens", min=1, max=core.max_positions)
    past = dim("past", min=1, max=core.max_positions - 1)
    sample_past = [torch.zeros(1, core.num_kv_heads, 5, core.head_dim, dtype=float_dtype) for _ in past_names]
    pixels = torch.zeros(1, 3 * cfg.n_towers, cfg.image_size, cfg.image_size, dtype=float_dtype)
    specs: dict[str, tuple] = {
        "vision": (VisionStage(model), (pixels,), ["pixel_values"], ["patch_embeds"], None),
        "embed": (EmbedStage(core), (torch.zeros(1, 6, dtype=torch.int64),), ["token_ids"], ["embeds"],
                  {"token_ids": {1: tokens}}),
        "prefill": (PrefillStage(core), (torch.zeros(1, patches + 8, hidden, dtype=float_dtype),),
                    ["inputs_embeds"], ["logits", *present_names], {"inputs_embeds": {1: seq}}),
        "decode": (DecodeStage(core), (torch.zeros(1, 1, dtype=torch.int64), *sample_past),
                   ["token_ids", *past_names], ["logits", *present_names],
                   {"token_ids": None, "past": tuple({2: past} for _ in past_names)}),
    }
    manifest: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "dtype": dtype, "opset": opset,
        "checkpoint": str(checkpoint.resolve()),
        "config_sha256": sha256_files([checkpoint / "config.json"]),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tools": tool_versions(),
        "model": {"family": loaded.family.name, "num_layers": n_layers, "num_heads": core.num_heads,
                  "num_kv_heads": core.num_kv_heads, "head_dim": core.head_dim, "hidden": hidden,
                  "vocab": cfg.padded_vocab_size, "num_patches": patches, "image_size": cfg.image_size,
                  "n_towers": cfg.n_towers, "max_positions": core.max_positions,
                  "max_text_tokens": max_text},
        "kv": {"past": past_names, "present": present_names},
        "graphs": {},
    }
    log("hashing checkpoint files")
    manifest["checkpoint_sha256"] = sha256_files(checkpoint_files(checkpoint))
    manifest["graphs"] = _graphs_to_keep(out / MANIFEST, manifest, graphs)
    for i, name in enumerate(graphs, 1):
        module, args, in_names, out_names, dyn = specs[name]
        path = out / f"{name}.onnx"
        log(f"[{i}/{len(graphs)}] {name}: tracing and exporting (opset {opset}, {dtype})")
        t0 = time.monotonic()
        try:
            _export_one(module.eval(), args, path, in_names, out_names, dyn, opset)
        except Exception as exc:  # noqa: BLE001 - re-raised with the graph's name
            raise ExportError(f"exporting {name} failed: {type(exc).__name__}: {exc}") from exc
        io, islands = _finish_graph(path, dtype)
        files = graph_files(path)
        size = sum(f.stat().st_size for f in files)
        manifest["graphs"][name] = {
            "file": path.name, "data_files": [f.name for f in files[1:]], "sha256": sha256_files(files),
            **io, "profiles": _profiles(name, model, patches, hidden, max_text), "fp32_islands": islands}
        log(f"    {path.name}: {size / 1e6:.1f} MB, onnx.checker ok"
            f"{f', {islands} Softmax/LayerNorm in fp32' if dtype == 'fp16' else ''}"
            f" ({time.monotonic() - t0:.1f} s)")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    log(f"wrote {out / MANIFEST} ({time.monotonic() - t_all:.1f} s in all)")
    return manifest


def main(argv: list[str]) -> int:
    """CLI entry point of `vla-ros export`."""
    ap = argparse.ArgumentParser(prog="vla-ros export", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="checkpoint directory (OpenVLA HF layout)")
    ap.add_argument("out_dir", help="output directory for the graphs and manifest.json")
    ap.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="graph precision")
    ap.add_argument("--opset", type=int, default=MAX_OPSET, help=f"ONNX opset ({MIN_OPSET}..{MAX_OPSET})")
    ap.add_argument("--graphs", default=",".join(GRAPHS),
                    help="comma-separated subset of " + ",".join(GRAPHS))
    ap.add_argument("--max-text-tokens", type=int, default=DEFAULT_MAX_TEXT_TOKENS,
                    help="longest prompt in tokens that the TensorRT profiles cover")
    args = ap.parse_args(argv)
    try:
        export_checkpoint(args.checkpoint, args.out_dir, args.dtype, args.opset,
                          [g for g in args.graphs.split(",") if g], args.max_text_tokens)
    except (ExportError, CheckpointError) as exc:
        print(f"vla-ros export: {exc}", file=sys.stderr)
        return 1
    return 0
