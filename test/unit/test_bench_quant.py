"""Issue 18, speed and size: `vla-ros bench --llm-width`, the precision in describe(), and build-engine with
quantized graphs (refused for ONNX Runtime's MatMulNBits, built from INT4 Q/DQ with TensorRT-RTX)."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from export_fixtures import HAVE_TRT_RTX, NO_TRT_RTX, exported, tiny_checkpoint

from vla_ros.runtime import bench, bench_quant, ort_backend, trt_backend, trt_build
from vla_ros.runtime.bench import run_bench, synthetic_image
from vla_ros.runtime.bench_rows import BenchOptions
from vla_ros.runtime.engine_file import read_engine
from vla_ros.runtime.graph_dir import MANIFEST
from vla_ros.runtime.ort_backend import OrtBackend, OrtOptions
from vla_ros.runtime.quantize import graph_precision, quantize_graph_dir

TINY = ["--llm-width", "64", "--layers", "1", "--block-size", "32", "--tokens-prefill", "16",
        "--decode-steps", "2", "--runs", "2", "--warmup", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_quant_graphs")


@pytest.fixture(scope="module")
def quantized_for_ort(tmp_path_factory):
    """The tiny checkpoint's export with its LLM graphs quantized to int4 for ONNX Runtime (MatMulNBits)."""
    out = tmp_path_factory.mktemp("int4_ort") / "graphs"
    shutil.copytree(exported(tmp_path_factory, tiny_checkpoint(), "fp32"), out)
    quantize_graph_dir(out, "int4", block_size=32, target="onnxruntime", log=lambda _: None)
    return out


def test_width_bench_times_every_precision_and_writes_the_json(tmp_path, graph_cache, capsys):
    out = tmp_path / "quant.json"
    rc = bench.main([*TINY, "--precisions", "fp32,int8,int4,w8a8", "--graph-cache", str(graph_cache),
                     "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    rows = data["precisions"]
    assert list(rows) == ["fp32", "int8", "int4", "w8a8"] and "skipped" not in data
    assert data["width"]["hidden"] == 64 and data["layers"] == 1 and data["prefill_tokens"] == 16
    fp32_bytes = rows["fp32"]["weight_bytes"]
    for row in rows.values():
        for key in ("decode_step", "decode_step_cpu", "prefill", "prefill_cpu"):
            assert row[key]["median_ms"] > 0 and row[key]["p90_ms"] >= row[key]["median_ms"]
        assert row["decode_step"]["count"] == 2 * 2 and row["prefill"]["count"] == 2  # runs x steps, runs
        assert row["weight_bytes"] >= row["matmul_weight_bytes"] > 0
        assert row["weight_bytes_vs_fp16"] == pytest.approx(2 * row["weight_bytes_vs_fp32"])
        assert row["weight_bytes_vs_fp32"] == pytest.approx(row["weight_bytes"] / fp32_bytes)
        assert row["decode_speedup_vs_fp32"] == pytest.approx(
            rows["fp32"]["decode_step"]["median_ms"] / row["decode_step"]["median_ms"])
        assert row["describe"].startswith(f"onnxruntime CPUExecutionProvider {row['precision']}")
    assert rows["fp32"]["precision"] == "fp32" and rows["fp32"]["prefill_logits_rel_error_vs_fp32"] == 0
    assert rows["int4"]["precision"] == "fp32+int4(b32)" and rows["w8a8"]["precision"] == "fp32+w8a8"
    # quantized weights are smaller and change the logits a little (random weights, one layer)
    assert rows["int4"]["matmul_weight_bytes"] < rows["int8"]["matmul_weight_bytes"] \
        < rows["fp32"]["matmul_weight_bytes"]
    for name in ("int8", "int4", "w8a8"):
        assert 0 < rows[name]["prefill_logits_rel_error_vs_fp32"] < 0.2
        assert rows[name]["quantized_linears"] == 4  # q/k/v fused, o, gate/up fused, down
    assert set(data["targets"]) == {"int8", "int4"}
    assert isinstance(data["targets"]["int4"]["met"], bool)
    table = capsys.readouterr().out
    assert "decode step (M=1) ms" in table and "weight bytes vs fp16" in table and "target int4" in table
    # the graphs are the project's own decode stage, quantized with MatMulNBits
    fp32 = graph_cache / data["graph_cache"].rsplit("/", 1)[-1]
    names = [i.name for i in onnx.load(str(fp32 / "decode.onnx"), load_external_data=False).graph.input]
    assert names == ["token_ids", "past_k_0", "past_v_0"]
    int4 = onnx.load(str(fp32 / "int4_b32" / "decode.onnx"), load_external_data=False)
    assert [n.op_type for n in int4.graph.node].count("MatMulNBits") == 4


@pytest.mark.parametrize("argv, message", [
    (["--precisions", "int4"], "must include fp32"),
    (["--precisions", "fp32,int3"], "unknown ['int3']"),
    (["--block-size", "48"], "power of two"),
    (["--llm-width", "13x"], "--llm-width must be one of"),
    (["--tokens-prefill", "1"], "--tokens-prefill must be in"),
])
def test_width_bench_refuses_bad_options_before_any_work(argv, message, tmp_path, capsys):
    rc = bench.main([*TINY, *argv, "--graph-cache", str(tmp_path), "--json", str(tmp_path / "x.json")])
    assert rc == 1
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing exported


def test_parse_width():
    assert bench_quant.parse_width("7b") == bench_quant.LlmWidth(4096, 11008, 32, "7b")
    width = bench_quant.parse_width("256")
    assert (width.hidden, width.heads, width.mlp % 16) == (256, 2, 0) and width.mlp >= 256 * 2.6875


def test_describe_carries_the_graphs_precision(quantized_for_ort):
    manifest = json.loads((quantized_for_ort / MANIFEST).read_text())
    precision = graph_precision(manifest)
    assert precision.startswith("fp32+int4(b")
    backend = OrtBackend(quantized_for_ort, OrtOptions(threads=1))
    assert backend.describe() == f"onnxruntime CPUExecutionProvider {precision} 1 threads"


def test_bench_rows_carry_the_precision(quantized_for_ort):
    opts = BenchOptions(checkpoint=str(tiny_checkpoint()), engine_dir=str(quantized_for_ort))
    result = run_bench(opts, ["onnxruntime", "torch"], runs=1, warmup=0, rgb=synthetic_image(),
                       text="pick up the red block", log=lambda _: None)
    rows = result["backends"]
    precision = graph_precision(json.loads((quantized_for_ort / MANIFEST).read_text()))
    assert rows["onnxruntime"]["precision"] == precision and precision in rows["onnxruntime"]["describe"]
    assert rows["torch"]["precision"] == "fp32"


@pytest.mark.parametrize("dtype, record, text", [
    ("fp32", None, "fp32"),
    ("fp16", {"mode": "none", "target": "onnxruntime", "block_size": None}, "fp16"),
    ("fp16", {"mode": "int4", "target": "tensorrt", "block_size": 128}, "fp16+int4(b128) qdq"),
    ("fp32", {"mode": "int8", "target": "onnxruntime", "block_size": 128,
              "block_sizes": {"prefill": 64, "decode": 128}}, "fp32+int8(b64/128)"),
    ("fp32", {"mode": "w8a8", "target": "tensorrt", "block_size": None}, "fp32+w8a8"),
])
def test_backends_describe_precision_as_quantize_writes_it(dtype, record, text):
    """Both backends and quantize use the one graph_precision (runtime/graph_dir.py)."""
    manifest = {"dtype": dtype, **({"quantization": record} if record else {})}
    assert graph_precision(manifest) == text
    assert trt_backend.graph_precision is ort_backend.graph_precision is graph_precision


def test_build_engine_refuses_matmulnbits_graphs_naming_the_tensorrt_target(quantized_for_ort, tmp_path,
                                                                             capsys):
    rc = trt_build.main([str(quantized_for_ort), "--out", str(tmp_path / "engines")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "quantized for ONNX Runtime" in err and "--target tensorrt" in err
    assert not (tmp_path / "engines").exists()  # refused before any build
    decode = quantized_for_ort / "decode.onnx"
    assert trt_build.ort_only_nodes(decode)["MatMulNBits"] > 0
    with pytest.raises(trt_build.BuildError, match="MatMulNBits.*--target tensorrt"):
        trt_build.build_engine(decode, tmp_path / "decode.engine", {}, log=lambda _: None)


def test_build_engine_refuses_by_the_manifest_record_alone(tmp_path, monkeypatch):
    """Without the onnx package (an engine-only install) the manifest's record still refuses."""
    (tmp_path / "decode.onnx").write_bytes(b"unread")
    manifest = {"format": "vla_ros-onnx", "dtype": "fp32", "graphs": {"decode": {"file": "decode.onnx"}},
                "quantization": {"mode": "int8", "target": "onnxruntime", "block_size": 128}}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(trt_build.BuildError, match="w8a8 --target tensorrt"):
        trt_build.build_all(tmp_path, tmp_path / "engines", log=lambda _: None)


@pytest.mark.skipif(not HAVE_TRT_RTX, reason=NO_TRT_RTX)
def test_int4_qdq_graphs_build_with_tensorrt_rtx(tmp_path_factory, tmp_path):
    graphs = tmp_path / "graphs"
    shutil.copytree(exported(tmp_path_factory, tiny_checkpoint(), "fp32"), graphs)
    quantize_graph_dir(graphs, "int4", block_size=32, target="tensorrt", log=lambda _: None)
    assert trt_build.ort_only_nodes(graphs / "decode.onnx") == {}
    built = trt_build.build_all(graphs, tmp_path / "engines", graphs=["prefill", "decode"],
                                flavour="tensorrt_rtx", log=lambda _: None)
    assert set(built) == {"prefill", "decode"}
    for name in built:
        header, _ = read_engine(tmp_path / "engines" / trt_build.engine_name(name))
        assert header.engine_size > 0 and header.strongly_typed
    copied = json.loads((tmp_path / "engines" / MANIFEST).read_text())
    assert graph_precision(copied).endswith(" qdq")  # the engines' manifest carries the precision


@pytest.mark.skipif(not HAVE_TRT_RTX, reason=NO_TRT_RTX)
def test_width_bench_engine_bytes_fp16_and_int4(graph_cache):
    opts = bench_quant.QuantBenchOptions(width=bench_quant.parse_width("128"), layers=1, block_size=32,
                                         prefill_tokens=16, decode_steps=2, graph_cache=str(graph_cache))
    out = bench_quant.engine_bytes(opts, log=lambda _: None)
    assert out["fp16"]["engine_bytes"] > 0 and out["int4"]["engine_bytes"] > 0
    assert out["int4_vs_fp16"] == pytest.approx(out["int4"]["engine_bytes"] / out["fp16"]["engine_bytes"])
    assert out["int4"]["weight_bytes"] < out["fp16"]["weight_bytes"]
