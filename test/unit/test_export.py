"""ONNX export of the tiny checkpoint: checker, manifest, fp32 islands, ORT == torch, TensorRT-RTX builds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from export_fixtures import HAVE_TRT_RTX, NO_TRT_RTX, engines_rtx, exported, random_cases, tiny_checkpoint

from vla_ros.core.config import PolicyConfig
from vla_ros.runtime import export
from vla_ros.runtime.agreement import compare_policies
from vla_ros.runtime.factory import make_policy
from vla_ros.runtime.graph_dir import GraphDirError
from vla_ros.runtime.ort_backend import OrtBackend, OrtOptions

GRAPHS = ("vision", "embed", "prefill", "decode")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint()


@pytest.fixture(scope="module")
def onnx32(tmp_path_factory, ckpt):
    return exported(tmp_path_factory, ckpt, "fp32")


@pytest.fixture(scope="module")
def onnx16(tmp_path_factory, ckpt):
    return exported(tmp_path_factory, ckpt, "fp16")


@pytest.fixture(scope="module")
def torch_policy(ckpt):
    torch.set_num_threads(1)
    return make_policy(PolicyConfig(checkpoint=str(ckpt)))


def test_every_graph_passes_onnx_checker_with_opset_at_most_20(onnx32, onnx16):
    for graph_dir in (onnx32, onnx16):
        for name in GRAPHS:
            path = graph_dir / f"{name}.onnx"
            onnx.checker.check_model(str(path), full_check=True)
            model = onnx.load(str(path), load_external_data=False)
            opsets = {o.domain: o.version for o in model.opset_import}
            assert opsets.get("", opsets.get("ai.onnx")) <= 20, opsets


def test_manifest_records_io_profiles_hashes_and_tools(onnx32, ckpt):
    manifest = json.loads((onnx32 / "manifest.json").read_text())
    assert manifest["dtype"] == "fp32" and manifest["opset"] <= 20
    assert manifest["checkpoint_sha256"] == export.sha256_files(export.checkpoint_files(ckpt))
    assert set(manifest["tools"]) >= {"torch", "onnx", "onnxruntime", "transformers"}
    n_layers = manifest["model"]["num_layers"]
    decode = manifest["graphs"]["decode"]
    assert [i["name"] for i in decode["inputs"]] == ["token_ids"] + [
        f"past_{kv}_{i}" for i in range(n_layers) for kv in "kv"]
    assert [o["name"] for o in decode["outputs"]] == ["logits"] + [
        f"present_{kv}_{i}" for i in range(n_layers) for kv in "kv"]
    assert decode["inputs"][0] == {"name": "token_ids", "dtype": "int64", "shape": [1, 1]}
    assert decode["outputs"][0]["dtype"] == "float32"
    assert isinstance(decode["inputs"][1]["shape"][2], str)  # the past length is dynamic
    prefill = manifest["graphs"]["prefill"]
    assert prefill["inputs"][0]["shape"][1] == "seq"
    lo, opt, hi = (prefill["profiles"]["inputs_embeds"][k][1] for k in ("min", "opt", "max"))
    assert 2 == lo < opt < hi
    for name in GRAPHS:
        entry = manifest["graphs"][name]
        files = [onnx32 / entry["file"]] + [onnx32 / f for f in entry["data_files"]]
        assert entry["sha256"] == export.sha256_files(files)


def test_fp16_graphs_run_softmax_and_layernorm_in_fp32(onnx16):
    softmaxes = 0
    for name in ("vision", "prefill", "decode"):
        model = onnx.load(str(onnx16 / f"{name}.onnx"), load_external_data=False)
        assert export.fp16_compute_nodes(model) == []
        softmaxes += sum(n.op_type == "Softmax" for n in model.graph.node)
        weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
        assert weights, f"{name}: an fp16 export must have fp16 weights"
    assert softmaxes >= 3  # one per attention layer at least, so the check above had work to do


def test_keep_fp32_wraps_fp16_softmax_and_layernorm(tmp_path):
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = torch.nn.LayerNorm(16)

        def forward(self, x):
            return torch.softmax(self.norm(x) * 30.0, dim=-1)

    path = tmp_path / "block.onnx"
    x = torch.randn(1, 4, 16)
    torch.onnx.export(Block().half().eval(), (x.half(),), str(path), dynamo=True, opset_version=20,
                      external_data=False, verbose=False)
    model = onnx.load(str(path))
    before = export.fp16_compute_nodes(model)
    assert len(before) == 2, before  # the exporter leaves both in fp16
    assert export.keep_fp32(model) == 2
    assert export.fp16_compute_nodes(model) == []
    onnx.checker.check_model(model, full_check=True)
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.half().numpy()})
    assert out.dtype == np.float16
    ref = Block().eval()(x)  # fp32 reference with the same (default-initialized) parameters
    assert np.abs(out.astype(np.float32) - ref.detach().numpy()).max() < 1e-2


def test_onnxruntime_reproduces_torch_on_50_random_images_and_instructions(torch_policy, onnx32, ckpt):
    cfg = PolicyConfig(checkpoint=str(ckpt), backend="onnxruntime", engine_dir=str(onnx32))
    ort_policy = make_policy(cfg)
    assert "CPUExecutionProvider" in ort_policy.describe()
    result = compare_policies(torch_policy, ort_policy, random_cases(50, seed=4))
    assert result.same_tokens == result.samples == 50, result.mismatches
    assert result.max_abs_logit_diff < 1e-3 * max(1.0, result.max_logit), result.summary()


def test_fp16_graphs_stay_close_to_fp32_torch(torch_policy, onnx16):
    backend = OrtBackend(onnx16, OrtOptions(threads=1))
    rgb, text = random_cases(1, seed=9)[0]
    pixels = torch_policy.preprocessor(rgb)
    ref, got = torch_policy.backend.vision(pixels), backend.vision(pixels)
    assert got.dtype == np.float32 and np.abs(got - ref).max() < 2e-2 * max(1.0, np.abs(ref).max())
    ids = np.asarray(torch_policy.family.prompt_ids(torch_policy.tokenizer, text))[None]
    embeds = np.concatenate([backend.embed(ids[:, :1]), got, backend.embed(ids[:, 1:])], axis=1)
    logits_ref, state_ref = torch_policy.backend.prefill(embeds)
    logits, state = backend.prefill(embeds)
    scale = max(1.0, np.abs(logits_ref).max())
    assert np.abs(logits - logits_ref).max() < 2e-2 * scale
    token = np.array([[int(logits_ref.argmax())]])
    step_ref, _ = torch_policy.backend.decode(token, state_ref)
    step, _ = backend.decode(token, state)
    assert np.abs(step - step_ref).max() < 2e-2 * scale


@pytest.mark.skipif(not HAVE_TRT_RTX, reason=NO_TRT_RTX)
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_tensorrt_rtx_parses_and_builds_every_graph(dtype, onnx32, onnx16, tmp_path_factory):
    """The same builder code as `vla-ros build-engine` (build_all), with TensorRT-RTX: no GPU needed."""
    from vla_ros.runtime.engine_file import read_engine

    graph_dir = onnx32 if dtype == "fp32" else onnx16
    manifest = json.loads((graph_dir / "manifest.json").read_text())
    engine_dir = engines_rtx(tmp_path_factory, graph_dir)
    for name in GRAPHS:
        header, engine = read_engine(engine_dir / f"{name}.engine")
        assert len(engine) > 1000 and header.trt_flavour == "tensorrt_rtx" and header.strongly_typed
        assert header.onnx_sha256 == manifest["graphs"][name]["sha256"]
        for tensor, profile in manifest["graphs"][name]["profiles"].items():
            assert header.profiles[tensor] == profile
    assert json.loads((engine_dir / "manifest.json").read_text()) == manifest


def test_export_refuses_bad_options(ckpt, tmp_path):
    with pytest.raises(export.ExportError, match="opset"):
        export.export_checkpoint(ckpt, tmp_path, opset=21, log=lambda _: None)
    with pytest.raises(export.ExportError, match="dtype"):
        export.export_checkpoint(ckpt, tmp_path, dtype="int8", log=lambda _: None)
    with pytest.raises(export.ExportError, match="unknown graph"):
        export.export_checkpoint(ckpt, tmp_path, graphs=["vision", "audio"], log=lambda _: None)
    assert export.main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 1


def test_onnxruntime_policy_refuses_graphs_of_another_checkpoint_or_dtype(ckpt, onnx32, tmp_path):
    other = tmp_path / "other_ckpt"
    shutil.copytree(ckpt, other)
    config = json.loads((other / "config.json").read_text())
    config["n_action_bins"] = config["n_action_bins"]  # same content, new formatting: a different file
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(GraphDirError, match="exported from"):
        make_policy(PolicyConfig(checkpoint=str(other), backend="onnxruntime", engine_dir=str(onnx32)))
    with pytest.raises(GraphDirError, match="policy.dtype"):
        make_policy(PolicyConfig(checkpoint=str(ckpt), backend="onnxruntime", engine_dir=str(onnx32),
                                 dtype="fp16"))
    with pytest.raises(GraphDirError, match="engine_dir is empty"):
        make_policy(PolicyConfig(checkpoint=str(ckpt), backend="onnxruntime"))


def test_exporting_a_subset_keeps_the_other_graphs(ckpt, onnx32, tmp_path):
    out = tmp_path / "graphs"
    shutil.copytree(onnx32, out)
    before = json.loads((out / "manifest.json").read_text())
    lines: list[str] = []
    after = export.export_checkpoint(ckpt, out, graphs=["embed"], log=lines.append)
    assert set(after["graphs"]) == set(GRAPHS)
    for name in ("vision", "prefill", "decode"):
        assert after["graphs"][name] == before["graphs"][name]
    assert any("[1/1] embed" in line for line in lines) and any("onnx.checker ok" in line for line in lines)
