"""Quantized export (vla_ros.runtime.quantize): which MatMuls are quantized, the weights' round trip, ONNX
Runtime runs the graphs close to fp32, W8A8 with SmoothQuant, the manifest record, refused options."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import onnx
import pytest
from export_fixtures import exported, random_cases, tiny_checkpoint
from oft_fixtures import oft_cases, oft_checkpoint, oft_export
from onnx import TensorProto, helper, numpy_helper

from vla_ros.runtime.export import ExportError, export_checkpoint
from vla_ros.runtime.export import main as export_main
from vla_ros.runtime.graph_dir import read_manifest
from vla_ros.runtime.quantize import (
    CalibrationSample,
    QuantizeError,
    activation_maxima,
    check_options,
    dequantized_weights,
    effective_block_size,
    graph_precision,
    llm_linear_nodes,
    load_calibration,
    quantize_graph,
    quantize_graph_dir,
    quantize_model,
    smooth_groups,
)

ort = pytest.importorskip("onnxruntime")
LLM_WEIGHTS = ("fused_qkv_weight", "o_proj_weight", "fused_gate_up_weight", "down_proj_weight")


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory):
    return exported(tmp_path_factory, tiny_checkpoint())


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _fx_weight(node: onnx.NodeProto) -> str:
    """The torch weight name the exporter recorded for a MatMul (its second argument)."""
    record = next(p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.fx_node")
    return record.split("args = (")[1].split(",")[1].strip(" %)")


def _session(model: onnx.ModelProto):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _prefill_feeds(n: int, hidden: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"inputs_embeds": (0.05 * rng.normal(size=(1, 40, hidden))).astype(np.float32)} for _ in range(n)]


def _matmul(k: int, n: int, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """A one-MatMul graph without torch's records, and its weight [K, N]."""
    w = np.random.default_rng(seed).normal(size=(k, n)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "s", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "s", n])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model, w


def test_only_the_llm_linears_of_the_llm_graphs_are_quantized(fp32_dir):
    for graph in ("prefill", "decode"):
        model = onnx.load(str(fp32_dir / f"{graph}.onnx"))
        inits = {i.name: i for i in model.graph.initializer}
        constant = {n.name: _fx_weight(n) for n in model.graph.node
                    if n.op_type == "MatMul" and n.input[1] in inits}
        chosen = llm_linear_nodes(model)
        assert len(chosen) == 2 * 4  # 2 layers x (qkv, o, gate_up, down)
        assert all(any(w in constant[n] for w in LLM_WEIGHTS) for n in chosen)
        kept = set(constant) - set(chosen)
        assert [constant[n] for n in kept] == ["p_core_lm_lm_head_weight"]
        quantized = quantize_model(model, "int4")
        ops = Counter(n.op_type for n in quantized.graph.node)
        assert ops["MatMulNBits"] == 8 and set(dequantized_weights(quantized)) == set(chosen)
        head = next(n for n in quantized.graph.node if n.name in kept)  # lm_head: float MatMul
        assert head.op_type == "MatMul"
        assert {i.name: i.data_type for i in quantized.graph.initializer}[head.input[1]] == TensorProto.FLOAT
        gathers = [n for n in quantized.graph.node if n.op_type == "Gather"]
        assert all(n.op_type != "GatherBlockQuantized" for n in quantized.graph.node) and \
            len(gathers) == sum(n.op_type == "Gather" for n in model.graph.node)  # embeddings stay float


def test_oft_actions_graph_keeps_the_action_head_float_and_stays_close(tmp_path_factory, tmp_path):
    source = oft_export(tmp_path_factory, "libero")
    checkpoint = oft_checkpoint(tmp_path_factory, "libero")
    model = onnx.load(str(source / "actions.onnx"))
    names = {n.name: _fx_weight(n) for n in model.graph.node if n.op_type == "MatMul"
             and n.input[1] in {i.name for i in model.graph.initializer}}
    chosen = llm_linear_nodes(model)
    assert len(chosen) == 8 and all("core_lm_model_layers" in names[n] or "fused" in names[n] for n in chosen)
    assert sorted(names[n] for n in set(names) - set(chosen)) == sorted(
        w for w in names.values() if w.startswith("p_head_model"))  # fc1, 2 resnet blocks, fc2
    out = _copy(source, tmp_path / "int8")
    before = {g: read_manifest(out)["graphs"][g]["sha256"] for g in ("vision", "embed", "proprio", "actions")}
    record = quantize_graph_dir(out, "int8", log=lambda _: None)
    after = read_manifest(out)["graphs"]
    assert record["nodes"] == {"actions": 8}
    assert all(after[g]["sha256"] == before[g] for g in ("vision", "embed", "proprio"))  # untouched
    assert after["actions"]["sha256"] != before["actions"]

    from vla_ros.core.config import PolicyConfig
    from vla_ros.runtime.graph_dir import policy_for
    from vla_ros.runtime.ort_backend import OrtBackend

    def actions(directory):
        policy = policy_for(checkpoint, OrtBackend(directory), PolicyConfig(checkpoint=str(checkpoint),
                                                                            backend="onnxruntime"))
        return np.array([policy.predict_arrays(i, t, p).normalized for i, t, p in oft_cases(3, 2, 8)])

    reference, quantized = actions(source), actions(out)
    # measured: max 0.072 on normalized actions spanning +-3.1 (random tiny weights)
    assert np.abs(quantized - reference).max() < 0.15
    assert np.abs(quantized - reference).max() > 0  # it did change the numbers


@pytest.mark.parametrize("mode, target, bits", [("int8", "onnxruntime", 8), ("int4", "onnxruntime", 4),
                                                ("int4", "tensorrt", 4)])
def test_weight_round_trip_is_within_the_rtn_bound(mode, target, bits):
    model, w = _matmul(256, 96)
    for block in (32, 128):
        quantized = quantize_model(model, mode, block, target)
        restored = dequantized_weights(quantized)["mm"]
        absmax = np.abs(w).reshape(256 // block, block, -1).max(axis=1)
        error = np.abs(restored - w).reshape(256 // block, block, -1).max(axis=1)
        # symmetric RTN, scale = block max / 2^(bits-1): the largest value clips by at most one step
        assert np.all(error <= absmax / 2 ** (bits - 1) * 1.001)
        assert np.all(error > 0)
    int8 = np.abs(dequantized_weights(quantize_model(model, "int8", 32))["mm"] - w).max()
    int4 = np.abs(dequantized_weights(quantize_model(model, "int4", 32))["mm"] - w).max()
    assert int8 < int4 / 10


def test_int4_formats_hold_the_same_weights_and_onnx_runtime_runs_both():
    model, w = _matmul(128, 64, seed=3)
    ort_graph, ort_report = quantize_graph(model, "int4", 64, "onnxruntime")
    trt_graph, trt_report = quantize_graph(model, "int4", 64, "tensorrt")
    assert np.array_equal(dequantized_weights(ort_graph)["mm"], dequantized_weights(trt_graph)["mm"])
    node = next(n for n in ort_graph.graph.node if n.op_type == "MatMulNBits")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["accuracy_level"] == 4 and attrs["block_size"] == 64 and attrs["bits"] == 4
    assert ort_report["opset"] == 20 and trt_report["opset"] == 21 and trt_graph.ir_version >= 10
    dq = next(n for n in trt_graph.graph.node if n.op_type == "DequantizeLinear")
    assert len(dq.input) == 2  # symmetric: no zero point (TensorRT needs it)
    assert {i.name: i.data_type for i in trt_graph.graph.initializer}[dq.input[0]] == TensorProto.INT4
    x = np.random.default_rng(0).normal(size=(1, 5, 128)).astype(np.float32)
    reference = x @ w
    for graph in (ort_graph, trt_graph):
        y = _session(graph).run(None, {"x": x})[0]
        assert np.abs(y - reference).max() < 0.2 * np.abs(reference).max()
    assert model.graph.node[0].op_type == "MatMul"  # the input model is not changed


def test_block_size_choice():
    assert effective_block_size(128, [4096, 11008]) == 128
    assert effective_block_size(128, [64, 256]) == 64  # tiny: the largest block that fits K
    assert effective_block_size(128, [192, 768], divide=True) == 64  # TensorRT: must divide K
    with pytest.raises(QuantizeError, match="no block size"):
        effective_block_size(128, [8, 64])


@pytest.mark.parametrize("args, message", [
    (("int3", 128, "onnxruntime"), "--quantize must be one of"),
    (("int4", 128, "openvino"), "--target must be one of"),
    (("int4", 100, "onnxruntime"), "power of 2"),
    (("int4", 8, "onnxruntime"), "power of 2 >= 16"),
    (("int8", 128, "tensorrt"), "use --quantize w8a8"),
    (("w8a8", 128, "onnxruntime"), "needs --calibration"),
])
def test_bad_options_and_refused_combinations(args, message, tmp_path):
    with pytest.raises(QuantizeError, match=message):
        check_options(*args)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=message):  # before any work: nothing loaded, nothing written
        export_checkpoint(tmp_path / "no_checkpoint", out, quantize=args[0], block_size=args[1],
                          target=args[2])
    assert not out.exists()


def test_calibration_only_with_w8a8_and_must_be_readable(tmp_path, capsys):
    with pytest.raises(QuantizeError, match="only used with --quantize w8a8"):
        check_options("int4", 128, "onnxruntime", tmp_path)
    with pytest.raises(QuantizeError, match="does not exist"):
        check_options("w8a8", 128, "onnxruntime", tmp_path / "missing")
    (tmp_path / "run.bag").write_bytes(b"")
    with pytest.raises(QuantizeError, match="directory of images"):
        check_options("w8a8", 128, "tensorrt", tmp_path / "run.bag")
    with pytest.raises(ExportError, match="instructions.txt"):  # checked before loading the checkpoint
        export_checkpoint(tmp_path / "no_checkpoint", tmp_path / "out", quantize="w8a8", calibration=tmp_path)
    code = export_main([str(tmp_path), str(tmp_path / "out"), "--quantize", "int8", "--target", "tensorrt"])
    assert code == 1 and "w8a8" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_calibration_sets_from_a_directory_and_an_npz(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 20, 30, 3), dtype=np.uint8)
    for i, rgb in enumerate(images):
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (tmp_path / "instructions.txt").write_text("pick up the red block\nopen the drawer\n")
    samples = load_calibration(tmp_path)
    assert [s.instruction for s in samples] == ["pick up the red block", "open the drawer",
                                                "pick up the red block"]
    assert np.array_equal(samples[1].images[0], images[1])
    np.savez(tmp_path / "set.npz", images=images[:, None].repeat(2, axis=1), instructions=np.array(["go"]),
             proprio=np.ones((3, 8)))
    samples = load_calibration(tmp_path / "set.npz", max_samples=2)
    assert len(samples) == 2 and len(samples[0].images) == 2 and samples[1].proprio.shape == (8,)
    (tmp_path / "instructions.txt").unlink()
    with pytest.raises(QuantizeError, match="instructions.txt"):
        load_calibration(tmp_path)


def test_export_flags_write_the_manifest_record_and_smaller_graphs(fp32_dir, tmp_path):
    checkpoint = tiny_checkpoint()
    lines: list[str] = []
    _copy(fp32_dir, tmp_path / "int4")  # its vision and embed graphs are kept: never quantized
    manifest = export_checkpoint(checkpoint, tmp_path / "int4", graphs=["prefill", "decode"], quantize="int4",
                                 log=lines.append)
    record = manifest["quantization"]
    assert record["mode"] == "int4" and record["target"] == "onnxruntime" and record["block_size"] == 128
    assert record["nodes"] == {"prefill": 8, "decode": 8}
    assert record["block_sizes"] == {"prefill": 64, "decode": 64}
    assert record["bytes_after"] < 0.75 * record["bytes_before"]
    assert graph_precision(manifest) == "fp32+int4(b64)"
    assert any("using 64" in line for line in lines) and any("8 Linears quantized" in line for line in lines)
    on_disk = read_manifest(tmp_path / "int4")
    assert on_disk["quantization"] == record
    for name in ("prefill", "decode"):
        entry = on_disk["graphs"][name]
        size = sum((tmp_path / "int4" / f).stat().st_size for f in [entry["file"], *entry["data_files"]])
        assert size == entry["quantization"]["bytes_after"] < entry["quantization"]["bytes_before"]
        onnx.checker.check_model(str(tmp_path / "int4" / entry["file"]))
    assert on_disk["graphs"]["vision"] == read_manifest(fp32_dir)["graphs"]["vision"]
    with pytest.raises(QuantizeError, match="already holds fp32\\+int4"):
        quantize_graph_dir(tmp_path / "int4", "int8", log=lambda _: None)
    assert quantize_graph_dir(tmp_path / "int4", "int4", log=lambda _: None) == record  # nothing left to do
    # exporting one graph again keeps the other quantized graphs and quantizes the new one
    again = export_checkpoint(checkpoint, tmp_path / "int4", graphs=["prefill"], quantize="int4",
                              log=lambda _: None)
    assert again["quantization"]["nodes"] == {"prefill": 8, "decode": 8}
    plain = export_checkpoint(checkpoint, tmp_path / "int4", graphs=["prefill"], log=lambda _: None)
    assert set(plain["graphs"]) == {"prefill", "vision", "embed"}  # the int4 decode graph is not kept
    assert graph_precision(plain) == "fp32"


def test_quantized_autoregressive_graphs_run_close_to_fp32(fp32_dir, tmp_path):
    prefill = onnx.load(str(fp32_dir / "prefill.onnx"))
    feeds = _prefill_feeds(3, 64)
    reference = [_session(prefill).run(["logits"], f)[0] for f in feeds]

    def error(model):
        out = [_session(model).run(["logits"], f)[0] for f in feeds]
        return max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(out, reference))

    int8, int4 = error(quantize_model(prefill, "int8")), error(quantize_model(prefill, "int4"))
    assert 0 < int8 < 0.1 and int8 < int4 < 1.0  # measured 0.03 and 0.4 (random tiny weights)


def test_w8a8_smoothquant_is_exact_before_quantization_and_runs_in_onnx_runtime(fp32_dir, tmp_path):
    prefill = onnx.load(str(fp32_dir / "prefill.onnx"))
    calibration, held_out = _prefill_feeds(4, 64, seed=1), _prefill_feeds(2, 64, seed=2)
    groups = smooth_groups(prefill, llm_linear_nodes(prefill))
    assert len(groups) == 4  # per layer: input norm -> qkv, post-attention norm -> gate_up
    assert all(norm.endswith("layernorm.weight") for _, _, norm, _ in groups)
    maxima = activation_maxima(prefill, [g[0] for g in groups], calibration)
    assert all(m.shape == (64,) and np.all(m > 0) for m in maxima.values())

    from vla_ros.runtime import quantize as q

    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(prefill)
    q._smooth(smoothed, groups, maxima, 0.5)
    reference = [_session(prefill).run(["logits"], f)[0] for f in held_out]
    same = [_session(smoothed).run(["logits"], f)[0] for f in held_out]
    assert max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(same, reference)) < 1e-4
    def norm(model):
        return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == groups[0][2]))

    assert not np.allclose(norm(smoothed), norm(prefill))  # 1/s went into the RMSNorm weight

    w8a8, report = quantize_graph(prefill, "w8a8", calibration=calibration)
    ops = Counter(n.op_type for n in w8a8.graph.node)
    assert report["nodes"] == 8 and report["smoothed_groups"] == 4
    assert ops["QuantizeLinear"] == 8 and ops["DequantizeLinear"] == 16  # 8 activations + 8 weights
    out = [_session(w8a8).run(["logits"], f)[0] for f in held_out]
    assert 0 < max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(out, reference)) < 0.15


def test_w8a8_graph_dir_calibrates_on_observations(fp32_dir, tmp_path):
    out = _copy(fp32_dir, tmp_path / "w8a8")
    samples = [CalibrationSample([rgb], text) for rgb, text in random_cases(3, seed=4)]
    with pytest.raises(QuantizeError, match="not a checkpoint directory"):
        quantize_graph_dir(out, "w8a8", calibration=samples, log=lambda _: None, checkpoint=tmp_path)
    lines: list[str] = []
    record = quantize_graph_dir(out, "w8a8", calibration=samples, log=lines.append,
                                checkpoint=tiny_checkpoint())
    assert record["calibration"]["observations"] == 3 and record["calibration"]["alpha"] == 0.5
    assert graph_precision(json.loads((out / "manifest.json").read_text())) == "fp32+w8a8"
    assert record["nodes"] == {"prefill": 8, "decode": 8} and record["bytes_after"] < record["bytes_before"]
    assert any("calibration: 3/3" in line for line in lines)


def test_graph_precision_strings():
    assert graph_precision({"dtype": "fp16"}) == "fp16"
    assert graph_precision({"dtype": "fp32", "quantization": {"mode": "none"}}) == "fp32"
    int4 = {"mode": "int4", "target": "onnxruntime", "block_size": 128, "block_sizes": {"prefill": 128}}
    assert graph_precision({"dtype": "fp16", "quantization": int4}) == "fp16+int4(b128)"
    int4_trt = {"mode": "int4", "target": "tensorrt", "block_sizes": {"prefill": 64, "decode": 64}}
    assert graph_precision({"dtype": "fp32", "quantization": int4_trt}) == "fp32+int4(b64) qdq"
    assert graph_precision({"dtype": "fp32", "quantization": {"mode": "w8a8"}}) == "fp32+w8a8"


def test_graphs_without_export_records_quantize_every_constant_matmul_but_the_excluded():
    model, _ = _matmul(64, 32)
    assert llm_linear_nodes(model) == ["mm"] and llm_linear_nodes(model, exclude=["mm"]) == []
    _, report = quantize_graph(model, "int8", exclude=["mm"])
    assert report["nodes"] == 0 and report["float_matmuls"] == 1
