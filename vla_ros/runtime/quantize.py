"""Quantized LLM graphs: INT8 / INT4 weight-only and W8A8 (SmoothQuant) for ONNX Runtime and TensorRT.

Only the LLM's Linears (q/k/v/o/gate/up/down, fused or not) of the LLM graphs (prefill, decode; OFT:
actions) are quantized; towers, projector, embeddings, norms, the logits MatMul (lm_head), the OFT action
head and the proprio projector keep the graph's float type. A MatMul counts as an LLM Linear when the
torch exporter's record of it (node metadata `pkg.torch.onnx.fx_node`) names a decoder layer's weight
(`fused_qkv_weight_3`, `layers_3_mlp_down_proj_weight`, ...); graphs without that record (written by
hand) fall back to every MatMul with a constant 2-D weight, minus `exclude`.

| mode | onnxruntime target                              | tensorrt target                                  |
|------|-------------------------------------------------|--------------------------------------------------|
| int4 | MatMulNBits bits=4, symmetric, accuracy_level 4 | DQ(INT4 sym, blocked along K) -> MatMul, opset 21 |
| int8 | MatMulNBits bits=8, symmetric, accuracy_level 4 | refused: TensorRT's INT8 is W8A8                 |
| w8a8 | SmoothQuant (alpha 0.5), then QDQ int8: symmetric per-channel weights, symmetric per-tensor  |
|      | activations; the same graph for both targets                                                   |

Made with ONNX Runtime's quantizers (MatMulNBitsQuantizer, quantize_static). SmoothQuant is applied to
the float graph by hand: ONNX Runtime's own `SmoothQuant` option needs Intel Neural Compressor and
smooths every MatMul it finds; here 1/s goes into the RMSNorm weight that feeds q/k/v and gate/up and s
into those Linears' weight rows (exactly the same function, before quantization).

API (other modules code against these names):
    quantize_model(model, mode, block_size=128, target="onnxruntime", exclude=(), ...) -> onnx.ModelProto
    quantize_graph(model, mode, ...) -> (onnx.ModelProto, dict report)      # the same, with a report
    quantize_graph_dir(graph_dir, mode, block_size=128, target="onnxruntime", log=print, calibration=None)
        -> the manifest's "quantization" record (the directory's float LLM graphs are rewritten in place)
    graph_precision(manifest) -> str     e.g. "fp32", "fp16+int4(b128)", "fp32+int8(b64)", "fp32+w8a8"
    check_options(mode, block_size, target, calibration) -> None    (QuantizeError before any work)
    llm_linear_nodes(model) -> [node names]; dequantized_weights(model) -> {node name: W [K, N] float32}
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vla_ros.runtime.graph_dir import graph_precision  # re-exported: part of this module's API

MODES = ("none", "int8", "int4", "w8a8")
TARGETS = ("onnxruntime", "tensorrt")
DEFAULT_BLOCK_SIZE = 128
MIN_BLOCK_SIZE = 16  # MatMulNBits' smallest block
LLM_GRAPHS = ("prefill", "decode", "actions")  # the graphs whose LLM Linears are quantized
SMOOTHQUANT_ALPHA = 0.5
ACCURACY_LEVEL = 4  # MatMulNBits: int8 activations per block inside the CPU kernel (the fast path)
INT4_OPSET, INT4_IR_VERSION = 21, 10  # ONNX INT4 tensors need opset 21 and IR version 10
DEFAULT_CALIBRATION_SAMPLES = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
INSTRUCTIONS_FILE = "instructions.txt"
FX_NODE_KEY = "pkg.torch.onnx.fx_node"
Log = Callable[[str], None]
Feed = dict[str, np.ndarray]  # one run's inputs of a graph, by input name

# The weight names torch.export gives the decoder layers' Linears (LmCore fuses q/k/v and gate/up).
_LLM_WEIGHT = re.compile(r"(?:^|_)(?:fused_(?:qkv|gate_up)_weight_\d+"
                         r"|layers_\d+_(?:self_attn_[qkvo]_proj|mlp_(?:gate|up|down)_proj)_weight)$")
_NOT_LLM = re.compile(r"(?:^|_)(?:vision|projector|lm_head|embed|head|proprio|film)_")
_FX_ARGS = re.compile(r"args = \(([^)]*)\)")


class QuantizeError(ValueError):
    """A bad quantization option, an unsupported combination, or a graph that cannot be quantized."""


# ----------------------------------------------------------------------------------------- options
def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def check_options(mode: str, block_size: int = DEFAULT_BLOCK_SIZE, target: str = "onnxruntime",
                  calibration: Any = None) -> None:
    """Refuse a bad option or an unsupported combination (before any work), with the reason."""
    if mode not in MODES:
        raise QuantizeError(f"--quantize must be one of {', '.join(MODES)}, got {mode!r}")
    if target not in TARGETS:
        raise QuantizeError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if mode == "none":
        if calibration is not None:
            raise QuantizeError("--calibration is only used with --quantize w8a8")
        return
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or \
            not _power_of_two(int(block_size)) or block_size < MIN_BLOCK_SIZE:
        raise QuantizeError(f"--block-size must be a power of 2 >= {MIN_BLOCK_SIZE} (MatMulNBits and "
                            f"TensorRT's block dequantization), got {block_size!r}")
    if mode == "int8" and target == "tensorrt":
        raise QuantizeError("TensorRT has no INT8 weight-only GEMM (its INT8 quantizes activations and "
                            "weights): use --quantize w8a8 for TensorRT, or --target onnxruntime for int8 "
                            "weight-only")
    if mode == "w8a8":
        if calibration is None:
            raise QuantizeError("--quantize w8a8 needs --calibration (a rosbag, a directory of images plus "
                                f"{INSTRUCTIONS_FILE}, or a .npz) to measure the activations")
        if isinstance(calibration, (str, Path)):
            path = Path(calibration)
            if not path.exists():
                raise QuantizeError(f"--calibration {path} does not exist")
            if not (path.is_dir() or path.suffix == ".npz"):
                raise QuantizeError(f"--calibration {path}: give a directory of images (+ "
                                    f"{INSTRUCTIONS_FILE}) or a .npz file (a rosbag is not read here)")
            load_calibration(path, max_samples=1)  # readable, with what it needs
    elif calibration is not None:
        raise QuantizeError(f"--calibration is only used with --quantize w8a8 ({mode} is weight-only: no "
                            f"activations to calibrate)")


# ---------------------------------------------------------------------------------- which MatMuls
def _initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in graph.initializer}


def _const_weight(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> onnx.TensorProto | None:
    """The 2-D float initializer B of a MatMul [K, N], else None."""
    if node.op_type != "MatMul" or len(node.input) < 2:
        return None
    init = inits.get(node.input[1])
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
    return init if init is not None and len(init.dims) == 2 and init.data_type in floats else None


def _fx_weight_names(node: onnx.NodeProto) -> list[str] | None:
    """The argument names of the torch call a node came from (None: no torch export record)."""
    for prop in node.metadata_props:
        if prop.key == FX_NODE_KEY:
            match = _FX_ARGS.search(prop.value)
            return re.findall(r"%(\w+)", match.group(1)) if match else []
    return None


def llm_linear_nodes(model: onnx.ModelProto, exclude: Iterable[str] = ()) -> list[str]:
    """Names of the MatMuls (constant 2-D weight) that are the LLM's Linears, in graph order."""
    graph, excluded = model.graph, set(exclude)
    inits = _initializers(graph)
    candidates = [n for n in graph.node if _const_weight(n, inits) is not None and n.name not in excluded]
    records = {n.name: _fx_weight_names(n) for n in candidates}
    if all(r is None for r in records.values()):  # a graph without torch's records: every constant MatMul
        return [n.name for n in candidates]
    return [n.name for n in candidates if records[n.name] and
            any(_LLM_WEIGHT.search(a) and not _NOT_LLM.search(a) for a in records[n.name])]


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give unnamed nodes unique names (the quantizers select and exclude by name)."""
    taken = {n.name for n in graph.node}
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def effective_block_size(block_size: int, ks: Sequence[int], divide: bool = False) -> int:
    """`block_size`, or the largest power of 2 below it that is <= every K (`divide`: that divides every K,
    as TensorRT's block dequantization needs); QuantizeError when that is below 16."""
    block = block_size
    while block >= MIN_BLOCK_SIZE and any(block > k or (divide and k % block) for k in ks):
        block //= 2
    if block < MIN_BLOCK_SIZE:
        need = "divides" if divide else "fits"
        raise QuantizeError(f"no block size >= {MIN_BLOCK_SIZE} {need} every Linear's K ({sorted(set(ks))}); "
                            f"exclude the short ones")
    return block


# ------------------------------------------------------------------------------------ one graph
@dataclass
class _Plan:
    nodes: list[str]
    ks: list[int]
    float_matmuls: int  # constant-weight MatMuls left in float


def _plan(model: onnx.ModelProto, exclude: Iterable[str], include: Sequence[str] | None) -> _Plan:
    graph = model.graph
    _name_nodes(graph)
    inits = _initializers(graph)
    by_name = {n.name: n for n in graph.node}
    constant = [n.name for n in graph.node if _const_weight(n, inits) is not None]
    if include is not None:
        unknown = [n for n in include if n not in constant]
        if unknown:
            raise QuantizeError(f"include: {unknown} are not MatMuls with a constant 2-D weight")
        nodes = [n for n in include if n not in set(exclude)]
    else:
        nodes = llm_linear_nodes(model, exclude)
    ks = [int(_const_weight(by_name[n], inits).dims[0]) for n in nodes]
    return _Plan(nodes, ks, len(constant) - len(nodes))


def _model_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers (the weights) of a model held in memory."""
    total = 0
    for init in model.graph.initializer:
        if init.raw_data:
            total += len(init.raw_data)
        else:
            total += numpy_helper.to_array(init).nbytes
    return total


def quantize_graph(model: onnx.ModelProto | str | Path, mode: str, block_size: int = DEFAULT_BLOCK_SIZE,
                   target: str = "onnxruntime", exclude: Iterable[str] = (),
                   include: Sequence[str] | None = None, calibration: Sequence[Feed] | None = None,
                   log: Log | None = None, alpha: float = SMOOTHQUANT_ALPHA
                   ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Quantize one graph's LLM Linears; returns (new model, report). A ModelProto passed in is copied.

    `calibration` (w8a8 only): feeds of this graph (input name -> array) run to measure activations.
    `include`: node names to quantize instead of the LLM Linears found from the export's records.
    """
    if mode == "w8a8" and not calibration:
        raise QuantizeError("w8a8 needs calibration feeds for this graph")
    check_options(mode, block_size, target, calibration if mode == "w8a8" else None)
    if isinstance(model, (str, Path)):
        model = onnx.load(str(model))
    else:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        model = copy
    t0 = time.monotonic()
    bytes_before = _model_bytes(model)
    plan = _plan(model, exclude, include)
    report: dict[str, Any] = {"mode": mode, "target": target, "nodes": len(plan.nodes),
                              "float_matmuls": plan.float_matmuls, "bytes_before": bytes_before}
    if mode == "none" or not plan.nodes:
        report.update(bytes_after=bytes_before, seconds=time.monotonic() - t0, block_size=None)
        return model, report
    if mode == "w8a8":
        model, smoothed = _w8a8(model, plan.nodes, calibration, alpha)
        report.update(block_size=None, smoothed_groups=smoothed, alpha=alpha,
                      calibration_feeds=len(calibration),
                      format="QDQ int8 (weights per channel, activations per tensor, symmetric)")
    else:
        block = effective_block_size(int(block_size), plan.ks, divide=target == "tensorrt")
        if block != block_size and log:
            why = "divides" if target == "tensorrt" else "fits in"
            log(f"    block size {block_size}: using {block}, the largest that {why} every Linear's K "
                f"({', '.join(str(k) for k in sorted(set(plan.ks)))})")
        model = _weight_only(model, plan.nodes, 4 if mode == "int4" else 8, block, target)
        report.update(block_size=block, format=("MatMulNBits" if target == "onnxruntime" else "QDQ INT4"),
                      accuracy_level=ACCURACY_LEVEL if target == "onnxruntime" else None)
    report.update(bytes_after=_model_bytes(model), seconds=time.monotonic() - t0,
                  opset=_ai_onnx_opset(model), ir_version=int(model.ir_version))
    return model, report


def quantize_model(model: onnx.ModelProto | str | Path, mode: str, block_size: int = DEFAULT_BLOCK_SIZE,
                   target: str = "onnxruntime", exclude: Iterable[str] = (),
                   include: Sequence[str] | None = None, calibration: Sequence[Feed] | None = None,
                   log: Log | None = None) -> onnx.ModelProto:
    """One graph with its LLM Linears quantized (see quantize_graph; the input model is not changed)."""
    return quantize_graph(model, mode, block_size, target, exclude, include, calibration, log)[0]


def _ai_onnx_opset(model: onnx.ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _weight_only(model: onnx.ModelProto, nodes: list[str], bits: int, block: int, target: str
                 ) -> onnx.ModelProto:
    """ONNX Runtime's MatMulNBitsQuantizer (RTN, symmetric) on exactly `nodes`."""
    from onnxruntime.quantization import QuantFormat

    config_class, quantizer_class = _nbits_quantizer()

    qdq = target == "tensorrt"
    config = config_class(
        block_size=block, is_symmetric=True, accuracy_level=None if qdq else ACCURACY_LEVEL,
        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator, op_types_to_quantize=("MatMul",),
        quant_axes=(("MatMul", 0),), bits=bits)
    selected = set(nodes)
    others = [n.name for n in model.graph.node if n.name not in selected]  # (nodes_to_include adds only)
    quiet = logging.getLogger("onnxruntime.quantization")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the opset-21 upgrade warning is expected (recorded in the manifest)
    try:
        quantizer = quantizer_class(model, nodes_to_exclude=others, algo_config=config)
        quantizer.process()
    finally:
        quiet.setLevel(level)
    out = quantizer.model.model
    if qdq:  # INT4 tensors: opset 21 and IR 10 (the quantizer upgrades both; make sure)
        for opset in out.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version < INT4_OPSET:
                opset.version = INT4_OPSET
        out.ir_version = max(out.ir_version, INT4_IR_VERSION)
    done = _quantized_names(out)
    missing = [n for n in nodes if n not in done]
    if missing:
        raise QuantizeError(f"the quantizer left {len(missing)} Linear(s) in float, e.g. {missing[0]}")
    return out


def _nbits_quantizer() -> tuple[Any, Any]:
    """ONNX Runtime's weight-only quantizer classes; undoes the logging.basicConfig(INFO) its module runs at
    import (which would turn on every library's INFO chatter in this process)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    return DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer


def _quantized_names(model: onnx.ModelProto) -> set[str]:
    """Original names of the MatMuls the weight-only quantizer replaced (`<name>_Q4`, `<name>_Q8`)."""
    names = set()
    for node in model.graph.node:
        if node.op_type == "MatMulNBits" or (node.op_type == "DequantizeLinear" and "_DQ_Q" in node.name):
            names.add(re.sub(r"(_DQ)?_Q[248]$", "", node.name))
    return names


# ------------------------------------------------------------------------------------------ w8a8
def _save_for_session(model: onnx.ModelProto, path: Path) -> Path:
    """Save with the weights in one external file (any size; what ORT and the quantizers read)."""
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return path


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    if any(t == 0 for t in types.values()) or not g.value_info:
        inferred = onnx.shape_inference.infer_shapes(model)
        types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info})
    return types


def activation_maxima(model: onnx.ModelProto, tensors: Sequence[str], feeds: Iterable[dict[str, np.ndarray]]
                      ) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |x| of `tensors` over the feeds (the float graph in ONNX Runtime)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    types = _value_types(probe)
    outputs = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in outputs:
            elem_type = types.get(name, TensorProto.FLOAT)
            probe.graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
    maxima: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="vla_ros_probe_") as tmp:
        path = _save_for_session(probe, Path(tmp) / "probe.onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for feed in feeds:
            values = session.run(list(tensors), feed)
            for name, value in zip(tensors, values):
                m = np.abs(value.astype(np.float32)).reshape(-1, value.shape[-1]).max(axis=0)
                maxima[name] = m if name not in maxima else np.maximum(maxima[name], m)
    return maxima


def smooth_groups(model: onnx.ModelProto, nodes: Sequence[str]) -> list[tuple[str, str, str, list[str]]]:
    """The Linears whose input is `norm_weight * x` (RMSNorm's last Mul): (activation, Mul node, norm weight,
    MatMul nodes), one group per activation, only when every consumer of it is one of `nodes`."""
    graph = model.graph
    inits = _initializers(graph)
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    selected = set(nodes)
    groups, seen = [], set()
    by_name = {n.name: n for n in graph.node}
    for name in nodes:
        act = by_name[name].input[0]
        if act in seen:
            continue
        seen.add(act)
        mul = producer.get(act)
        users = consumers.get(act, [])
        if mul is None or mul.op_type != "Mul" or any(u.name not in selected for u in users):
            continue
        k = int(_const_weight(by_name[name], inits).dims[0])
        norm = [i for i in mul.input if i in inits and list(inits[i].dims) == [k]]
        if len(norm) == 1:
            groups.append((act, mul.name, norm[0], [u.name for u in users]))
    return groups


def _smooth(model: onnx.ModelProto, groups: list, maxima: dict[str, np.ndarray], alpha: float) -> None:
    """s = max|x|^alpha / max|W|^(1 - alpha) per input channel: norm weight / s, weight rows * s."""
    graph = model.graph
    inits = _initializers(graph)
    by_name = {n.name: n for n in graph.node}
    uses: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    for act, mul_name, norm_name, matmuls in groups:
        weights = [inits[by_name[m].input[1]] for m in matmuls]
        w_max = np.max([np.abs(numpy_helper.to_array(w).astype(np.float32)).max(axis=1) for w in weights],
                       axis=0)
        x_max = maxima[act].astype(np.float32)
        s = np.power(np.maximum(x_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha)
        s = np.where((x_max > 0) & (w_max > 0), np.clip(s, 1e-4, 1e4), 1.0).astype(np.float32)
        _rescale(graph, inits[norm_name], by_name[mul_name], 1.0 / s, uses)
        for m, w in zip(matmuls, weights):
            _rescale(graph, w, by_name[m], s[:, None], uses)


def _rescale(graph: onnx.GraphProto, init: onnx.TensorProto, node: onnx.NodeProto, factor: np.ndarray,
             uses: dict[str, int]) -> None:
    """init * factor for `node`: in place when `node` is its only user, else as a new initializer."""
    array = numpy_helper.to_array(init)
    shared = uses.get(init.name, 0) > 1
    scaled = numpy_helper.from_array((array.astype(np.float32) * factor).astype(array.dtype),
                                     f"{init.name}_smooth_{node.name}" if shared else init.name)
    if not shared:
        init.CopyFrom(scaled)
        return
    graph.initializer.append(scaled)
    uses[init.name] -= 1
    node.input[list(node.input).index(init.name)] = scaled.name


class _FeedReader:
    """CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _w8a8(model: onnx.ModelProto, nodes: list[str], feeds: Sequence[dict[str, np.ndarray]], alpha: float
          ) -> tuple[onnx.ModelProto, int]:
    """SmoothQuant on the float graph, then ONNX Runtime's static QDQ int8 on exactly `nodes`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    groups = smooth_groups(model, nodes)
    if groups:
        maxima = activation_maxima(model, [g[0] for g in groups], feeds)
        _smooth(model, groups, maxima, alpha)
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # quantize_static's pre-processing advice goes to the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="vla_ros_w8a8_") as tmp:
            src = _save_for_session(model, Path(tmp) / "smoothed.onnx")
            dst = Path(tmp) / "w8a8.onnx"
            quantize_static(
                str(src), str(dst), _FeedReader(feeds), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul"], per_channel=True, activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8, nodes_to_quantize=list(nodes), use_external_data_format=True,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "MatMulConstBOnly": True,
                               "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                               "OpTypesToExcludeOutputQuantization": ["MatMul"]})
            out = onnx.load(str(dst))
    finally:
        quiet.setLevel(level)
    return out, len(groups)


# ------------------------------------------------------------------------------- dequantization
def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """uint8 [..., bytes] -> uint8 [..., bytes * 8 / bits], low bits first."""
    if bits == 8:
        return packed
    return np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1)


def dequantized_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """W [K, N] float32 of every quantized Linear (MatMulNBits or DequantizeLinear weights), by the
    original MatMul's name: what the graph computes with, to compare with the float weights."""
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    out: dict[str, np.ndarray] = {}
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MatMulNBits":
            k, n, bits, block = attrs["K"], attrs["N"], attrs["bits"], attrs["block_size"]
            q = _unpack(inits[node.input[1]], bits).reshape(n, -1)  # [N, k_blocks * block]
            scales = inits[node.input[2]].astype(np.float32).reshape(n, -1)
            if len(node.input) > 3 and node.input[3]:
                zp = _unpack(inits[node.input[3]], bits).reshape(n, -1)[:, :scales.shape[1]]
                zp = zp.astype(np.float32)
            else:
                zp = np.full_like(scales, 2 ** (bits - 1))
            blocks = q.reshape(n, scales.shape[1], block).astype(np.float32)
            w = ((blocks - zp[..., None]) * scales[..., None]).reshape(n, -1)[:, :k]
            out[re.sub(r"_Q[248]$", "", node.name)] = w.T.copy()
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].ndim == 2:
            q = inits[node.input[0]].astype(np.float32)
            scale = inits[node.input[1]].astype(np.float32)
            zp = inits[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else 0.0
            axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
            if block:  # blocked along `axis`
                scale, zp = (np.repeat(a, block, axis=axis)[:q.shape[0]] if np.ndim(a) else a
                             for a in (scale, zp))
            elif scale.ndim == 1:  # per channel along `axis`
                shape = [1, 1]
                shape[axis] = -1
                scale = scale.reshape(shape)
                zp = np.reshape(zp, shape) if np.ndim(zp) else zp
            users = [u for u in graph.node if node.output[0] in u.input and u.op_type == "MatMul"]
            if re.search(r"_DQ_Q[248]$", node.name) or not users:  # the weight-only quantizer's name
                name = re.sub(r"_DQ_Q[248]$", "", node.name)
            else:  # quantize_static keeps the MatMul's name
                name = users[0].name
            out[name] = (q - zp) * scale
    return out


# --------------------------------------------------------------------------------- calibration set
@dataclass
class CalibrationSample:
    """One observation: images (one per camera, RGB uint8 HxWx3), the instruction, raw proprio (or None)."""

    images: list[np.ndarray]
    instruction: str
    proprio: np.ndarray | None = None


def _as_sample(item: Any) -> CalibrationSample:
    """A CalibrationSample, or any object with images, instruction (or text) and proprio attributes."""
    if isinstance(item, CalibrationSample):
        return item
    text = getattr(item, "instruction", None) or getattr(item, "text", None)
    return CalibrationSample(list(item.images), str(text), getattr(item, "proprio", None))


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise QuantizeError(f"--calibration: cannot read the image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_calibration(source: str | Path, max_samples: int = DEFAULT_CALIBRATION_SAMPLES
                     ) -> list[CalibrationSample]:
    """Observations from a directory (images *.png/*.jpg + instructions.txt, one line per image or one
    for all) or a .npz (`images` [N, H, W, 3] or [N, cameras, H, W, 3] uint8, `instructions` [N] or [1],
    optional `proprio` [N, P])."""
    path = Path(source)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:max_samples]
        text_file = path / INSTRUCTIONS_FILE
        if not images or not text_file.is_file():
            raise QuantizeError(f"--calibration {path}: needs images ({', '.join(IMAGE_SUFFIXES)}) and "
                                f"{INSTRUCTIONS_FILE} (one instruction per line)")
        texts = [t.strip() for t in text_file.read_text().splitlines() if t.strip()]
        if not texts:
            raise QuantizeError(f"{text_file} holds no instruction")
        return [CalibrationSample([_read_rgb(p)], texts[i % len(texts)]) for i, p in enumerate(images)]
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data or "instructions" not in data:
                raise QuantizeError(f"{path}: needs arrays `images` and `instructions`")
            images = np.asarray(data["images"])
            texts = [str(t) for t in np.atleast_1d(data["instructions"])]
            proprio = np.asarray(data["proprio"], dtype=np.float64) if "proprio" in data else None
        if images.dtype != np.uint8 or images.ndim not in (4, 5) or images.shape[-1] != 3:
            raise QuantizeError(f"{path}: `images` must be uint8 [N, H, W, 3] or [N, cameras, H, W, 3], "
                                f"got {images.dtype} {images.shape}")
        n = min(len(images), max_samples)
        return [CalibrationSample(list(images[i]) if images.ndim == 5 else [images[i]], texts[i % len(texts)],
                                  None if proprio is None else proprio[i]) for i in range(n)]
    raise QuantizeError(f"--calibration {path}: give a directory of images or a .npz file")


def _host(value: Any) -> np.ndarray:
    """A backend's K/V tensor (torch tensor or numpy array) as a float32 numpy array."""
    if hasattr(value, "detach"):
        return value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


class _Recorder:
    """A backend that runs another one and keeps the inputs of its LLM stages (prefill, decode, actions)."""

    def __init__(self, backend: Any, past_names: Sequence[str]) -> None:
        self._backend = backend
        self._past = list(past_names)
        self.feeds: dict[str, list[dict[str, np.ndarray]]] = {g: [] for g in LLM_GRAPHS}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def prefill(self, inputs_embeds: np.ndarray) -> Any:
        self.feeds["prefill"].append({"inputs_embeds": np.array(inputs_embeds, dtype=np.float32)})
        return self._backend.prefill(inputs_embeds)

    def decode(self, token_ids: np.ndarray, state: Any) -> Any:
        feed = {"token_ids": np.array(token_ids, dtype=np.int64)}
        feed.update({name: _host(v) for name, v in zip(self._past, state)})
        self.feeds["decode"].append(feed)
        return self._backend.decode(token_ids, state)

    def actions(self, inputs_embeds: np.ndarray) -> Any:
        self.feeds["actions"].append({"inputs_embeds": np.array(inputs_embeds, dtype=np.float32)})
        return self._backend.actions(inputs_embeds)


def record_llm_inputs(policy: Any, recorder: _Recorder, samples: Sequence[CalibrationSample],
                      settings: Any, log: Log) -> dict[str, list[dict[str, np.ndarray]]]:
    """Run the float policy over the samples; the LLM graphs' inputs it produced, per graph."""
    cameras, proprio_dim = len(settings.cameras), settings.proprio_dim
    for i, sample in enumerate(samples):
        if settings.parallel:
            images = (sample.images * cameras)[:cameras] if len(sample.images) < cameras else sample.images
            proprio = sample.proprio
            if proprio_dim and (proprio is None or len(proprio) != proprio_dim):
                proprio = np.zeros(proprio_dim)
            policy.predict_arrays(list(images[:cameras]), sample.instruction,
                                  proprio if proprio_dim else None)
        else:
            policy.predict_tokens(sample.images[0], sample.instruction)
        if (i + 1) % 8 == 0 or i + 1 == len(samples):
            log(f"    calibration: {i + 1}/{len(samples)} observations")
    if settings.parallel and any(len(s.images) < cameras for s in samples):
        log(f"    calibration: fewer images than the {cameras} cameras: repeated them")
    if proprio_dim and any(s.proprio is None or len(s.proprio) != proprio_dim for s in samples):
        log(f"    calibration: no {proprio_dim}-value proprio in some observations: used zeros")
    return recorder.feeds


def _cast_feeds(feeds: list[Feed], model: onnx.ModelProto) -> list[Feed]:
    """Feeds in the graph's input dtypes (fp16 graphs take fp16)."""
    dtypes = {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
              for i in model.graph.input}
    return [{k: v.astype(dtypes[k], copy=False) for k, v in f.items() if k in dtypes} for f in feeds]


def calibration_feeds(graph_dir: Path, manifest: dict[str, Any], calibration: Any, log: Log,
                      loaded: Any = None, checkpoint: str | Path | None = None
                      ) -> dict[str, list[dict[str, np.ndarray]]]:
    """The LLM graphs' inputs over the calibration observations, from the float model: torch when `loaded`
    (a LoadedVla) is given, else the directory's own float graphs in ONNX Runtime (before they change) with
    the tokenizer and preprocessing of `checkpoint` (default: the one the manifest names)."""
    from vla_ros.core.config import PolicyConfig
    from vla_ros.runtime.graph_dir import check_same_checkpoint, manifest_settings

    samples = [_as_sample(c) for c in calibration] if isinstance(calibration, list) else \
        load_calibration(calibration)
    if not samples:
        raise QuantizeError("--calibration holds no observation")
    settings = manifest_settings(manifest)
    past = manifest.get("kv", {}).get("past", [])
    checkpoint = Path(checkpoint or manifest.get("checkpoint", ""))
    cfg = PolicyConfig(checkpoint=str(checkpoint), engine_dir=str(graph_dir))
    if loaded is not None:
        from vla_ros.runtime import factory
        from vla_ros.runtime.torch_backend import TorchBackend

        recorder = _Recorder(TorchBackend(loaded.model), past)
        policy = factory.policy_for(loaded, recorder, cfg)
        source = "torch"
    else:
        from vla_ros.runtime.graph_dir import policy_for
        from vla_ros.runtime.ort_backend import OrtBackend

        if not (checkpoint / "config.json").is_file():
            raise QuantizeError(f"w8a8 calibration needs the checkpoint's tokenizer and preprocessing: "
                                f"{checkpoint} is not a checkpoint directory (pass checkpoint=...)")
        check_same_checkpoint(manifest, checkpoint, graph_dir)
        recorder = _Recorder(OrtBackend(graph_dir), past)
        policy = policy_for(checkpoint, recorder, cfg)
        source = "onnxruntime (float graphs)"
    log(f"    calibration: {len(samples)} observations through the float model ({source})")
    return record_llm_inputs(policy, recorder, samples, settings, log)


# ------------------------------------------------------------------------------- export directory
def _files_bytes(files: Sequence[Path]) -> int:
    return sum(f.stat().st_size for f in files if f.is_file())


def quant_key(record: dict[str, Any] | None) -> tuple:
    """What must match for graphs of an earlier export to be kept: mode, target, block size."""
    if not record or record.get("mode", "none") == "none":
        return ("none",)
    block = record.get("block_size") if record["mode"] != "w8a8" else None
    return (record["mode"], record.get("target"), block)


def quantization_options(mode: str, block_size: int, target: str) -> dict[str, Any]:
    """The options part of the manifest's record (compared by export when it keeps earlier graphs)."""
    return {"mode": mode, "target": target, "block_size": block_size if mode in ("int4", "int8") else None}


def summarize(manifest: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The manifest's top-level "quantization" record from the per-graph entries."""
    graphs = {g: e["quantization"] for g, e in manifest.get("graphs", {}).items() if "quantization" in e}
    if options.get("mode", "none") == "none" and not graphs:
        return {"mode": "none", "target": options.get("target", "onnxruntime"), "block_size": None}
    record = dict(options)
    ort_target = options["target"] == "onnxruntime"
    record.update({
        "symmetric": True,
        "format": {"int4": "MatMulNBits" if ort_target else "QDQ INT4 (DequantizeLinear)",
                   "int8": "MatMulNBits", "w8a8": "QDQ int8 (SmoothQuant)"}.get(options["mode"]),
        "accuracy_level": ACCURACY_LEVEL if options["mode"] in ("int4", "int8") and ort_target else None,
        "graphs": sorted(graphs),
        "nodes": {g: r["nodes"] for g, r in graphs.items()},
        "block_sizes": {g: r.get("block_size") for g, r in graphs.items()},
        "opsets": {g: r.get("opset") for g, r in graphs.items()},
        "bytes_before": sum(r["bytes_before"] for r in graphs.values()),
        "bytes_after": sum(r["bytes_after"] for r in graphs.values()),
        "seconds": round(sum(r["seconds"] for r in graphs.values()), 3),
        "kept_float": "towers, projector, embeddings, norms, lm_head, OFT action head and proprio projector",
    })
    calib = [r["calibration"] for r in graphs.values() if "calibration" in r]
    if calib:
        record["calibration"] = calib[0]
    return record


def _save_graph(model: onnx.ModelProto, graph_dir: Path, file: str) -> list[Path]:
    """Replace `file` (and its external data) with `model`; the weights go to `<file>.data`."""
    from vla_ros.runtime.graph_dir import graph_files

    final = graph_dir / file
    tmp_dir = Path(tempfile.mkdtemp(prefix=".quantize_", dir=graph_dir))
    try:
        _save_for_session(model, tmp_dir / file)
        onnx.checker.check_model(str(tmp_dir / file))
        for old in graph_files(final):
            old.unlink(missing_ok=True)
        for new in tmp_dir.iterdir():
            new.replace(graph_dir / new.name)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return graph_files(final)


def quantize_graph_dir(graph_dir: str | Path, mode: str, block_size: int = DEFAULT_BLOCK_SIZE,
                       target: str = "onnxruntime", log: Log = print, calibration: Any = None,
                       loaded: Any = None, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Quantize the float LLM graphs of an export directory in place; returns the manifest's record.

    `calibration` (w8a8): a directory / .npz path or a list of CalibrationSample; `loaded` (a LoadedVla of
    the checkpoint) runs the calibration in torch instead of the directory's float graphs; `checkpoint`: the
    checkpoint directory when the manifest's path is not it any more (w8a8 reads its tokenizer).
    """
    from vla_ros.runtime.graph_dir import MANIFEST, graph_files, read_manifest, sha256_files

    check_options(mode, block_size, target, calibration)
    graph_dir = Path(graph_dir)
    manifest = read_manifest(graph_dir)
    options = quantization_options(mode, block_size, target)
    old = manifest.get("quantization")
    done = [g for g, e in manifest["graphs"].items() if "quantization" in e]
    if done and quant_key(old) != quant_key(options):
        raise QuantizeError(f"{graph_dir} already holds {graph_precision(manifest)} graphs "
                            f"({', '.join(done)}): export the checkpoint again to quantize differently")
    todo = [g for g in LLM_GRAPHS if g in manifest["graphs"] and g not in done]
    if mode == "none" or not todo:
        manifest["quantization"] = summarize(manifest, options)
        (graph_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return manifest["quantization"]
    feeds: dict[str, list] = {}
    calib_record: dict[str, Any] = {}
    if mode == "w8a8":
        t0 = time.monotonic()
        feeds = calibration_feeds(graph_dir, manifest, calibration, log, loaded, checkpoint)
        calib_record = {"source": str(calibration) if not isinstance(calibration, list) else "samples",
                        "observations": len(feeds["prefill"]) + len(feeds["actions"]),
                        "alpha": SMOOTHQUANT_ALPHA, "seconds": round(time.monotonic() - t0, 3)}
    for i, name in enumerate(todo, 1):
        entry = manifest["graphs"][name]
        path = graph_dir / entry["file"]
        before = _files_bytes(graph_files(path))
        log(f"[quantize {i}/{len(todo)}] {name}: {mode} for {target} ({before / 1e6:.1f} MB)")
        t0 = time.monotonic()
        graph_feeds = None
        if mode == "w8a8":
            graph_feeds = _cast_feeds(feeds.get(name, []), onnx.load(str(path), load_external_data=False))
            if not graph_feeds:
                raise QuantizeError(f"the calibration produced no input for the {name} graph")
        model, report = quantize_graph(path, mode, block_size, target, calibration=graph_feeds, log=log)
        files = _save_graph(model, graph_dir, entry["file"])
        after = _files_bytes(files)
        seconds = time.monotonic() - t0
        report.update(bytes_before=before, bytes_after=after, seconds=round(seconds, 3))
        if calib_record:
            report["calibration"] = calib_record
        entry.update(data_files=[f.name for f in files[1:]], sha256=sha256_files(files),
                     nodes=len(model.graph.node), quantization=report)
        log(f"    {report['nodes']} Linears quantized ({report['float_matmuls']} constant-weight MatMuls "
            f"kept float), {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB ({after / max(before, 1):.2f}x), "
            f"{seconds:.1f} s")
        manifest["quantization"] = summarize(manifest, options)
        (graph_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))  # after every graph: never stale
    return manifest["quantization"]


__all__ = ["MODES", "TARGETS", "DEFAULT_BLOCK_SIZE", "LLM_GRAPHS", "QuantizeError", "CalibrationSample",
           "check_options", "quantize_model", "quantize_graph", "quantize_graph_dir", "graph_precision",
           "llm_linear_nodes", "dequantized_weights", "load_calibration", "effective_block_size", "quant_key",
           "activation_maxima", "smooth_groups", "summarize", "quantization_options"]
