"""The engine builder: only the TensorRT 10.x/11.x common API, profiles, timing cache, errors, CLI."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from export_fixtures import HAVE_TRT_RTX, NO_TRT_RTX

from vla_ros.runtime import trt_build
from vla_ros.runtime.engine_file import read_engine


class FakeTensorRT(types.ModuleType):
    """A `tensorrt` module with ONLY the build API common to TensorRT 10.x and 11.x.

    Anything else the builder touched would raise AttributeError. Calls are recorded.
    """

    def __init__(self, inputs, parse_ok=True, build_ok=True) -> None:
        super().__init__("tensorrt")
        self.__version__ = "10.3.0.26"
        self.calls: list[tuple] = []
        calls, fake = self.calls, self

        class ILogger:
            def __init__(self) -> None:
                pass

        class NetworkDefinitionCreationFlag:
            STRONGLY_TYPED = 1

        class MemoryPoolType:
            WORKSPACE = "workspace"

        class Tensor:
            def __init__(self, name, shape) -> None:
                self.name, self.shape = name, shape

        class Network:
            num_layers, num_outputs = 3, 1
            num_inputs = len(inputs)

            def get_input(self, i):
                return Tensor(*inputs[i])

        class ParserError:
            def code(self):
                return 8

            def desc(self):
                return "Unsupported ONNX op NonZero"

            def node(self):
                return 7

        class OnnxParser:
            def __init__(self, network, logger) -> None:
                self.num_errors = 0 if parse_ok else 1

            def parse_from_file(self, path):
                calls.append(("parse_from_file", path))
                return parse_ok

            def get_error(self, i):
                return ParserError()

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                calls.append(("set_shape", name, list(lo), list(opt), list(hi)))

        class TimingCache:
            def __init__(self, data) -> None:
                self.data = bytes(data)

            def serialize(self):
                return self.data + b"+timed"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                calls.append(("set_memory_pool_limit", pool, size))

            def add_optimization_profile(self, profile):
                calls.append(("add_optimization_profile",))

            def create_timing_cache(self, data):
                calls.append(("create_timing_cache", bytes(data)))
                return TimingCache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                calls.append(("set_timing_cache", ignore_mismatch))
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger) -> None:
                self.logger = logger

            def create_network(self, flags):
                calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                calls.append(("build_serialized_network",))
                if not build_ok:
                    self.logger.log(1, "out of workspace")
                    return None
                return b"serialized-engine"

        for name, value in list(locals().items()):
            if isinstance(value, type):
                setattr(fake, name, value)


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "prefill.onnx"
    path.write_bytes(b"not parsed by the fake")
    return path


def install(monkeypatch, fake):
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.delenv("VLA_ROS_TRT_FLAVOUR", raising=False)
    monkeypatch.setattr(trt_build, "current_gpu", lambda: ("Orin", "8.7"))


def test_build_uses_only_the_common_api_strongly_typed_with_profiles_and_timing_cache(
        monkeypatch, onnx_file, tmp_path):
    fake = FakeTensorRT([("inputs_embeds", (1, -1, 64)), ("fixed", (1, 4))])
    install(monkeypatch, fake)
    cache = tmp_path / "timing.cache"
    profiles = {"inputs_embeds": ([1, 2, 64], [1, 280, 64], [1, 352, 64])}
    head = trt_build.build_engine(onnx_file, tmp_path / "prefill.engine", profiles, workspace_gb=2,
                                  timing_cache=cache, log=lambda _: None)
    assert ("create_network", 1 << 1) in fake.calls  # STRONGLY_TYPED
    assert ("set_memory_pool_limit", "workspace", 2 << 30) in fake.calls
    assert ("set_shape", "inputs_embeds", [1, 2, 64], [1, 280, 64], [1, 352, 64]) in fake.calls
    assert ("set_shape", "fixed", [1, 4], [1, 4], [1, 4]) in fake.calls
    assert ("create_timing_cache", b"") in fake.calls and ("set_timing_cache", False) in fake.calls
    assert cache.read_bytes() == b"+timed"
    assert head.trt_flavour == "tensorrt" and head.trt_version == "10.3.0.26"
    assert (head.gpu_name, head.compute_capability) == ("Orin", "8.7") and head.strongly_typed
    got, blob = read_engine(tmp_path / "prefill.engine")
    assert blob == b"serialized-engine" and got.profiles["inputs_embeds"]["opt"] == [1, 280, 64]

    fake.calls.clear()  # a second build starts from the saved timing cache
    trt_build.build_engine(onnx_file, tmp_path / "prefill.engine", profiles, timing_cache=cache,
                           log=lambda _: None)
    assert ("create_timing_cache", b"+timed") in fake.calls
    assert cache.read_bytes() == b"+timed+timed"


@pytest.mark.parametrize("profiles, message", [
    ({}, "no min/opt/max"),
    ({"inputs_embeds": ([1, 9, 64], [1, 2, 64], [1, 352, 64])}, "min <= opt <= max"),
    ({"inputs_embeds": ([1, 2], [1, 3], [1, 4])}, "ranks differ"),
    ({"inputs_embeds": ([1, 2, 32], [1, 3, 32], [1, 4, 32])}, "matching the graph"),
])
def test_bad_or_missing_profiles_are_refused(monkeypatch, onnx_file, tmp_path, profiles, message):
    install(monkeypatch, FakeTensorRT([("inputs_embeds", (1, -1, 64))]))
    with pytest.raises(trt_build.BuildError, match=message):
        trt_build.build_engine(onnx_file, tmp_path / "x.engine", profiles, log=lambda _: None)
    assert not (tmp_path / "x.engine").exists()


def test_parser_and_builder_failures_carry_tensorrt_messages(monkeypatch, onnx_file, tmp_path):
    install(monkeypatch, FakeTensorRT([("x", (1, 4))], parse_ok=False))
    with pytest.raises(trt_build.BuildError, match="NonZero"):
        trt_build.build_engine(onnx_file, tmp_path / "x.engine", {}, log=lambda _: None)
    install(monkeypatch, FakeTensorRT([("x", (1, 4))], build_ok=False))
    with pytest.raises(trt_build.BuildError, match="out of workspace"):
        trt_build.build_engine(onnx_file, tmp_path / "x.engine", {}, log=lambda _: None)
    assert not (tmp_path / "x.engine").exists()


def test_flavour_selection(monkeypatch):
    install(monkeypatch, FakeTensorRT([]))
    assert trt_build.import_tensorrt()[1] == "tensorrt"
    with pytest.raises(trt_build.BuildError, match="unknown TensorRT flavour"):
        trt_build.import_tensorrt("tensorrt_llm")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # "not installed"
    if HAVE_TRT_RTX:
        assert trt_build.import_tensorrt()[1] == "tensorrt_rtx"
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(trt_build.BuildError, match="TensorRT is not available"):
        trt_build.import_tensorrt()


def test_cli_refuses_fp16_flag_for_fp32_graphs_and_missing_manifests(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text(json.dumps({"dtype": "fp32", "graphs": {}}))
    assert trt_build.main([str(tmp_path), "--fp16"]) == 1
    assert "--dtype fp16" in capsys.readouterr().err
    assert trt_build.main([str(tmp_path / "nowhere")]) == 1
    assert "vla-ros export" in capsys.readouterr().err
    assert trt_build.main([str(tmp_path), "--workspace-gb", "0"]) == 2


class ToyDecoder(torch.nn.Module):
    """RMSNorm + rotary-free GQA attention with a KV cache, the shape of one LLM layer."""

    def __init__(self, dim=64, heads=4, kv_heads=2) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, dim // heads
        self.norm = torch.nn.RMSNorm(dim)
        self.q = torch.nn.Linear(dim, dim)
        self.kv = torch.nn.Linear(dim, 2 * kv_heads * self.hd)
        self.out = torch.nn.Linear(dim, 50)

    def forward(self, x, past_k_0, past_v_0):
        b, t, _ = x.shape
        h = self.norm(x)
        q = self.q(h).view(b, t, self.heads, self.hd).transpose(1, 2)
        k, v = self.kv(h).view(b, t, 2, self.kv_heads, self.hd).permute(2, 0, 3, 1, 4)
        k, v = torch.cat([past_k_0, k], 2), torch.cat([past_v_0, v], 2)
        mask = torch.ones(t, k.shape[2], dtype=torch.bool).tril(past_k_0.shape[2])
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.out(a.transpose(1, 2).reshape(b, t, -1)[:, -1]).argmax(-1), k, v


@pytest.mark.skipif(not HAVE_TRT_RTX, reason=NO_TRT_RTX)
def test_tensorrt_rtx_builds_a_gqa_decoder_with_kv_cache_at_opset_18(tmp_path):
    """The checkpoint graphs (test_export) use opset 20; this GQA layer covers the lowest opset."""
    path = tmp_path / "toy.onnx"
    seq, past = torch.export.Dim("seq", min=1, max=64), torch.export.Dim("past", min=1, max=128)
    kv = torch.zeros(1, 2, 3, 16)
    torch.onnx.export(ToyDecoder().eval(), (torch.randn(1, 5, 64), kv, kv.clone()), str(path), dynamo=True,
                      opset_version=18, input_names=["x", "past_k_0", "past_v_0"],
                      dynamic_shapes={"x": {1: seq}, "past_k_0": {2: past}, "past_v_0": {2: past}},
                      verbose=False)
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    lines: list[str] = []
    kv_profile = ([1, 2, 1, 16], [1, 2, 32, 16], [1, 2, 128, 16])
    head = trt_build.build_engine(path, tmp_path / "toy.engine", {
        "x": ([1, 1, 64], [1, 8, 64], [1, 64, 64]), "past_k_0": kv_profile, "past_v_0": kv_profile},
        flavour="tensorrt_rtx", log=lines.append)
    assert head.trt_flavour == "tensorrt_rtx" and head.engine_size > 0
    assert any("parsing" in line for line in lines) and any("wrote" in line for line in lines)


def test_build_all_uses_the_manifest_profiles_of_oft_graphs_and_copies_the_settings(monkeypatch, tmp_path):
    fake = FakeTensorRT([("inputs_embeds", (1, -1, 64))])
    install(monkeypatch, fake)
    onnx_dir, out = tmp_path / "onnx", tmp_path / "engines"
    onnx_dir.mkdir()
    (onnx_dir / "actions.onnx").write_bytes(b"not parsed by the fake")
    profile = {"min": [1, 572, 64], "opt": [1, 594, 64], "max": [1, 666, 64]}
    (onnx_dir / "manifest.json").write_text(json.dumps({"dtype": "fp32", "graphs": {
        "actions": {"file": "actions.onnx", "sha256": "abc", "profiles": {"inputs_embeds": profile}}}}))
    (onnx_dir / "vla_settings.json").write_text('{"format": "vla_ros.settings/1", "chunk": 8}')
    built = trt_build.build_all(onnx_dir, out, log=lambda _: None)
    assert ("set_shape", "inputs_embeds", *profile.values()) in fake.calls
    assert built["actions"].profiles["inputs_embeds"] == profile and built["actions"].onnx_sha256 == "abc"
    assert (out / "vla_settings.json").read_text() == (onnx_dir / "vla_settings.json").read_text()
    (onnx_dir / "vla_settings.json").unlink()  # an autoregressive export: no settings file next to it
    trt_build.build_all(onnx_dir, out, log=lambda _: None)
    assert not (out / "vla_settings.json").exists()
