"""ONNX Runtime backend: the provider that really runs is reported, IO-bound K/V state, clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from export_fixtures import exported, tiny_checkpoint

from vla_ros.runtime.graph_dir import GraphDirError
from vla_ros.runtime.ort_backend import OrtBackend, OrtBackendError, OrtOptions


@pytest.fixture(scope="module")
def onnx32(tmp_path_factory):
    return exported(tmp_path_factory, tiny_checkpoint(), "fp32")


@pytest.fixture(scope="module")
def backend(onnx32):
    return OrtBackend(onnx32, OrtOptions(threads=1))


def test_cpu_backend_reports_cpu_provider_without_warning(backend):
    assert backend.provider == "CPUExecutionProvider" and backend.fallbacks == []
    assert backend.describe() == "onnxruntime CPUExecutionProvider fp32 1 threads"


def test_silent_gpu_fallback_is_detected_and_reported(onnx32, monkeypatch):
    """onnxruntime-gpu without CUDA libraries lists the GPU providers, then runs on the CPU."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        pytest.skip("this onnxruntime really has CUDA; the fallback cannot be provoked here")
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", *available])
    for provider in ("cuda", "tensorrt"):
        backend = OrtBackend(onnx32, OrtOptions(provider=provider, threads=1))
        assert backend.provider == "CPUExecutionProvider"
        assert len(backend.fallbacks) == 4
        text = backend.describe()
        assert "WARNING" in text and "fell back to CPUExecutionProvider" in text
        assert backend.graphs["decode"].device == "cpu"  # K/V stays where it really runs


def test_stages_shapes_and_kv_growth(backend):
    manifest = backend.manifest["model"]
    pixels = np.random.default_rng(0).normal(size=(1, 6, 224, 224)).astype(np.float32)
    patches = backend.vision(pixels)
    assert patches.shape == (1, manifest["num_patches"], manifest["hidden"]) and patches.dtype == np.float32
    embeds = backend.embed(np.array([[1, 5, 6]]))
    assert embeds.shape == (1, 3, manifest["hidden"])
    logits, state = backend.prefill(np.concatenate([embeds[:, :1], patches, embeds[:, 1:]], axis=1))
    assert logits.shape == (1, manifest["vocab"]) and len(state) == 2 * manifest["num_layers"]
    length = 3 + manifest["num_patches"]
    assert list(state[0].shape) == [1, manifest["num_kv_heads"], length, manifest["head_dim"]]
    for step in range(1, 4):
        logits, state = backend.decode(np.array([[int(logits.argmax())]]), state)
        assert logits.shape == (1, manifest["vocab"]) and np.all(np.isfinite(logits))
        assert state[0].shape[2] == length + step and isinstance(state[0], np.ndarray)  # host memory


def test_bad_calls_raise_clear_errors(backend, onnx32):
    with pytest.raises(ValueError, match=r"\[1, L, D\]"):
        backend.prefill(np.zeros((2, 4, backend.manifest["model"]["hidden"]), np.float32))
    _, state = backend.prefill(np.zeros((1, 4, backend.manifest["model"]["hidden"]), np.float32))
    with pytest.raises(ValueError, match="K/V state has"):
        backend.decode(np.array([[1]]), state[:-1])
    with pytest.raises(OrtBackendError, match="provider"):
        OrtBackend(onnx32, OrtOptions(provider="directml"))
    with pytest.raises(OrtBackendError, match="optimization"):
        OrtBackend(onnx32, OrtOptions(optimization="max"))


def test_broken_export_directories_are_refused(onnx32, tmp_path):
    with pytest.raises(GraphDirError, match="cannot read"):
        OrtBackend(tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(onnx32, broken)
    (broken / "prefill.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(OrtBackendError, match="cannot load .*prefill.onnx"):
        OrtBackend(broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    del manifest["graphs"]["decode"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GraphDirError, match="decode"):
        OrtBackend(broken)


@pytest.mark.gpu
def test_cuda_provider_really_runs_on_the_gpu(onnx32):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with a working CUDA install (CUDAExecutionProvider missing)")
    backend = OrtBackend(onnx32, OrtOptions(provider="cuda"))
    if backend.fallbacks:
        pytest.fail(f"CUDA provider listed but not running: {backend.fallbacks[0]}")
    _, state = backend.prefill(np.zeros((1, 4, backend.manifest["model"]["hidden"]), np.float32))
    _, state = backend.decode(np.array([[1]]), state)
    assert state[0].device_name().lower() == "cuda"


def test_bench_has_an_onnxruntime_row_and_skips_tensorrt_without_a_gpu(onnx32):
    import torch

    from vla_ros.runtime.bench import format_table, run_bench, synthetic_image
    from vla_ros.runtime.bench_rows import BenchOptions

    torch.set_num_threads(1)
    opts = BenchOptions(checkpoint=str(tiny_checkpoint()), engine_dir=str(onnx32))
    gpu = torch.cuda.is_available()  # with a GPU the tensorrt row would need engines (test_trt_backend)
    rows = ["torch", "onnxruntime"] + ([] if gpu else ["tensorrt"])
    result = run_bench(opts, rows, runs=2, warmup=1, rgb=synthetic_image(), text="pick up the red block",
                       log=lambda _: None)
    row = result["backends"]["onnxruntime"]
    assert row["tokens_match_first"] and row["tokens_stable"]  # same tokens as the torch row
    assert row["describe"].startswith("onnxruntime CPUExecutionProvider fp32 1 threads")
    assert list(row["decode_steps"]) == [f"decode_step_{i}" for i in range(1, 7)]
    if not gpu:
        assert "needs a CUDA GPU" in result["skipped"]["tensorrt"] and "tensorrt" not in result["backends"]
        assert "tensorrt: skipped: needs a CUDA GPU" in format_table(result)


def test_oft_graphs_run_their_stages_and_refuse_the_autoregressive_ones(tmp_path_factory):
    from oft_fixtures import oft_export

    backend = OrtBackend(oft_export(tmp_path_factory, "aloha"), OrtOptions(threads=1))
    model, settings = backend.manifest["model"], backend.settings
    assert settings.film and backend.provider == "CPUExecutionProvider" and backend.fallbacks == []
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(3, 6, 224, 224)).astype(np.float32)
    condition = rng.normal(size=(3, model["hidden"])).astype(np.float32)
    patches = backend.vision(pixels, condition)
    assert patches.shape == (3, model["num_patches"], model["hidden"]) and patches.dtype == np.float32
    assert not np.allclose(patches, backend.vision(pixels, 2 * condition))  # FiLM is live in the graph
    with pytest.raises(ValueError, match="FiLM towers need a condition"):
        backend.vision(pixels)
    with pytest.raises(ValueError, match="one row per camera"):
        backend.vision(pixels, condition[:2])
    assert backend.proprio(np.zeros((1, 14), np.float32)).shape == (1, 1, model["hidden"])
    length = backend.manifest["graphs"]["actions"]["profiles"]["inputs_embeds"]["min"][1]
    actions = backend.actions(rng.normal(size=(1, length, model["hidden"])).astype(np.float32))
    assert actions.shape == (1, 25, 14) and actions.dtype == np.float32
    with pytest.raises(ValueError, match=r"\[1, L, D\]"):
        backend.actions(np.zeros((2, length, model["hidden"]), np.float32))
    with pytest.raises(OrtBackendError, match="no prefill graph: the openvla-oft family runs vision, embed"):
        backend.prefill(np.zeros((1, 4, model["hidden"]), np.float32))


def test_vision_without_film_refuses_a_condition(tmp_path_factory):
    from oft_fixtures import oft_export

    backend = OrtBackend(oft_export(tmp_path_factory, "libero"), OrtOptions(threads=1))
    pixels = np.zeros((2, 6, 224, 224), np.float32)
    assert backend.vision(pixels).shape[0] == 2  # one row per camera
    with pytest.raises(ValueError, match="no FiLM"):
        backend.vision(pixels, np.zeros((2, backend.manifest["model"]["hidden"]), np.float32))
