"""TensorRT backend: engine validation before deserializing (runs anywhere); inference tests need a GPU."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from export_fixtures import (
    HAVE_GPU,
    HAVE_TRT_RTX,
    NO_TRT_RTX,
    engines_rtx,
    exported,
    random_cases,
    tiny_checkpoint,
)
from export_fixtures import gpu_engines as built_on_gpu

from vla_ros.core.config import PolicyConfig
from vla_ros.runtime import engine_file as ef
from vla_ros.runtime.graph_dir import GraphDirError


@pytest.fixture(scope="module")
def onnx32(tmp_path_factory):
    return exported(tmp_path_factory, tiny_checkpoint(), "fp32")


@pytest.mark.skipif(not HAVE_TRT_RTX, reason=NO_TRT_RTX)
def test_rtx_engines_pass_validation_then_stop_at_the_missing_gpu(tmp_path_factory, onnx32):
    from vla_ros.runtime.trt_backend import TrtBackend, TrtBackendError

    engines = engines_rtx(tmp_path_factory, onnx32)
    if HAVE_GPU:
        pytest.skip("a GPU is present: the GPU tests below cover this backend")
    with pytest.raises(TrtBackendError, match="needs a CUDA GPU"):
        TrtBackend(engines, flavour="tensorrt_rtx")


@pytest.mark.skipif(not HAVE_TRT_RTX, reason=NO_TRT_RTX)
def test_stale_missing_or_foreign_engines_are_refused_before_deserializing(tmp_path_factory, onnx32,
                                                                           tmp_path):
    from vla_ros.runtime.trt_backend import TrtBackend

    engines = tmp_path / "engines"
    shutil.copytree(engines_rtx(tmp_path_factory, onnx32), engines)
    header, blob = ef.read_engine(engines / "prefill.engine")
    header.onnx_sha256 = "0" * 64  # built from another export of prefill.onnx
    ef.write_engine(engines / "prefill.engine", header, blob)
    with pytest.raises(ef.EngineFileError, match="another export of prefill.onnx"):
        TrtBackend(engines, flavour="tensorrt_rtx")
    header.trt_version = "0.9"
    ef.write_engine(engines / "prefill.engine", header, blob)
    with pytest.raises(ef.EngineFileError, match="rebuild the engine"):
        TrtBackend(engines, flavour="tensorrt_rtx")
    shutil.copy(engines_rtx(tmp_path_factory, onnx32) / "prefill.engine", engines / "prefill.engine")
    (engines / "decode.engine").unlink()
    with pytest.raises(ef.EngineFileError, match="decode.engine is missing"):
        TrtBackend(engines, flavour="tensorrt_rtx")
    with pytest.raises(GraphDirError, match="cannot read"):
        TrtBackend(tmp_path / "nowhere", flavour="tensorrt_rtx")


def test_bench_row_is_skipped_with_the_reason_without_a_gpu():
    from vla_ros.runtime.bench_rows import BenchOptions, RowUnavailableError, make_runner

    if HAVE_GPU:
        pytest.skip("a GPU is present")
    with pytest.raises(RowUnavailableError, match="needs a CUDA GPU"):
        make_runner("tensorrt", BenchOptions(checkpoint=str(tiny_checkpoint()), engine_dir="unused"))


@pytest.fixture(scope="module")
def gpu_engines(tmp_path_factory, onnx32):
    """Engines built with the TensorRT found here (tensorrt on Jetson/desktop, else tensorrt_rtx)."""
    return built_on_gpu(tmp_path_factory, onnx32)


@pytest.mark.gpu
def test_tensorrt_reproduces_torch_and_replays_decode_graphs(gpu_engines):
    from vla_ros.runtime.factory import make_policy

    ckpt = str(tiny_checkpoint())
    reference = make_policy(PolicyConfig(checkpoint=ckpt))
    policy = make_policy(PolicyConfig(checkpoint=ckpt, backend="tensorrt", engine_dir=str(gpu_engines),
                                      device="cuda"))
    from vla_ros.runtime.agreement import compare_policies

    result = compare_policies(reference, policy, random_cases(10, seed=3))
    assert result.same_tokens == result.samples, result.mismatches
    assert result.max_abs_logit_diff < 1e-2 * max(1.0, result.max_logit), result.summary()
    backend = policy.backend
    rgb, text = random_cases(1, seed=5)[0]
    for _ in range(2):  # captures the graphs of this prompt length (a full pool may reset once)
        policy.predict_tokens(rgb, text)
    replays = backend.graph_replays
    policy.predict_tokens(rgb, text)  # same prompt length: every decode step replays a graph
    assert backend.graph_replays - replays == policy.n_actions - 1
    assert "CUDA graphs on" in backend.describe()


@pytest.mark.gpu
def test_cuda_graph_replay_equals_plain_enqueue(gpu_engines):
    from vla_ros.runtime.trt_backend import TrtBackend

    graphed, plain = TrtBackend(gpu_engines, cuda_graphs=True), TrtBackend(gpu_engines, cuda_graphs=False)
    hidden = graphed.manifest["model"]["hidden"]
    embeds = np.random.default_rng(0).normal(size=(1, 20, hidden)).astype(np.float32)
    for _ in range(2):  # the second pass replays the graphs captured in the first
        (la, sa), (lb, sb) = graphed.prefill(embeds), plain.prefill(embeds)
        for _ in range(4):
            token = np.array([[int(la.argmax())]])
            (la, sa), (lb, sb) = graphed.decode(token, sa), plain.decode(token, sb)
            np.testing.assert_allclose(la, lb, rtol=0, atol=1e-5)
    assert graphed.graph_replays == 4
