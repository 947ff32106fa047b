"""Engine files: the header (format, size, SHA-256, TensorRT, GPU) is checked before any deserialize."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from export_fixtures import HAVE_TRT_RTX, NO_TRT_RTX

from vla_ros.runtime import engine_file as ef

BLOB = bytes(range(256)) * 40  # stands in for a serialized engine


def header(**overrides) -> ef.EngineHeader:
    values = dict(graph="decode", trt_flavour="tensorrt", trt_version="10.3.0", gpu_name="Orin",
                  compute_capability="8.7", onnx_file="decode.onnx", onnx_sha256="ab" * 32,
                  build_time_utc="2025-01-01T00:00:00+00:00", build_seconds=1.0)
    values.update(overrides)
    return ef.EngineHeader(**values)


class FakeTrt:
    """Records deserialize calls; any call means validation let the bytes through."""

    __version__ = "10.3.0"

    def __init__(self) -> None:
        self.deserialized: list[bytes] = []

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    def Runtime(self, logger):  # noqa: N802 - TensorRT's name
        fake = self

        class _Runtime:
            def deserialize_cuda_engine(self, blob: bytes):
                fake.deserialized.append(blob)
                return "engine"

        return _Runtime()


@pytest.fixture
def engine(tmp_path) -> Path:
    path = tmp_path / "decode.engine"
    ef.write_engine(path, header(), BLOB)
    return path


def test_round_trip_and_header_contents(engine):
    got, blob = ef.read_engine(engine)
    assert blob == BLOB
    assert got.engine_size == len(BLOB) and got.format_version == ef.FORMAT_VERSION
    assert got.identity() == ef.RuntimeIdentity("tensorrt", "10.3.0", "Orin", "8.7")


def test_matching_engine_is_deserialized(engine):
    trt = FakeTrt()
    got, head = ef.load_engine(engine, trt, "tensorrt", gpu=("Orin", "8.7"))
    assert got == "engine" and trt.deserialized == [BLOB] and head.graph == "decode"


@pytest.mark.parametrize("running, what", [
    (("tensorrt", "10.13.0", "Orin", "8.7"), "built with tensorrt 10.3.0"),
    (("tensorrt_rtx", "10.3.0", "Orin", "8.7"), "built with tensorrt 10.3.0"),
    (("tensorrt", "10.3.0", "NVIDIA GeForce RTX 4090", "8.9"), "built for GPU 'Orin'"),
    (("tensorrt", "10.3.0", "Orin", "8.6"), "compute capability 8.7"),
    (("tensorrt", "10.3.0", ef.NO_GPU, ef.NO_GPU), "built for GPU"),
])
def test_foreign_engine_is_refused_before_deserializing(engine, running, what):
    trt = FakeTrt()
    trt.__version__ = running[1]
    with pytest.raises(ef.EngineFileError, match="rebuild the engine") as err:
        ef.load_engine(engine, trt, running[0], gpu=running[2:])
    assert what in str(err.value)
    assert trt.deserialized == []


def test_tensorrt_rtx_engines_are_gpu_agnostic_but_version_bound():
    built = header(trt_flavour="tensorrt_rtx", trt_version="1.7.1", gpu_name=ef.NO_GPU,
                   compute_capability=ef.NO_GPU)
    ef.check_compatible(built, ef.RuntimeIdentity("tensorrt_rtx", "1.7.1", "RTX 4090", "8.9"))
    with pytest.raises(ef.EngineFileError, match="rebuild the engine"):
        ef.check_compatible(built, ef.RuntimeIdentity("tensorrt_rtx", "1.8.0", "RTX 4090", "8.9"))


def test_truncated_engine_is_refused(engine):
    data = engine.read_bytes()
    for keep in (len(data) - 1, len(data) // 2, 40, 10, 0):
        engine.write_bytes(data[:keep])
        trt = FakeTrt()
        with pytest.raises(ef.EngineFileError, match="rebuild the engine"):
            ef.load_engine(engine, trt, "tensorrt", gpu=("Orin", "8.7"))
        assert trt.deserialized == []


def test_corrupt_engine_bytes_are_refused(engine):
    data = bytearray(engine.read_bytes())
    data[-100] ^= 0xFF
    engine.write_bytes(bytes(data))
    trt = FakeTrt()
    with pytest.raises(ef.EngineFileError, match="SHA-256"):
        ef.load_engine(engine, trt, "tensorrt", gpu=("Orin", "8.7"))
    assert trt.deserialized == []


def test_corrupt_or_foreign_headers_are_refused(tmp_path, engine):
    raw = tmp_path / "raw.engine"
    raw.write_bytes(b"ftrt" + BLOB)  # a plain TensorRT plan, no vla_ros header
    with pytest.raises(ef.EngineFileError, match="not a vla_ros engine file"):
        ef.read_engine(raw)

    data = engine.read_bytes()
    start = len(ef.MAGIC) + 4
    length = int.from_bytes(data[len(ef.MAGIC):start], "little")
    text = data[start:start + length]
    cases = {
        "garbage": b"{not json" + b" " * (length - 9),
        "format": json.dumps({**json.loads(text), "format_version": 99}).encode(),
        "unknown field": json.dumps({**json.loads(text), "surprise": 1}).encode(),
        "not an object": b"[1, 2]",
    }
    for name, new in cases.items():
        bad = tmp_path / f"{name}.engine"
        bad.write_bytes(ef.MAGIC + len(new).to_bytes(4, "little") + new + data[start + length:])
        with pytest.raises(ef.EngineFileError, match="rebuild the engine"):
            ef.read_engine(bad)
    huge = tmp_path / "huge.engine"
    huge.write_bytes(ef.MAGIC + (1 << 30).to_bytes(4, "little") + b"{}")
    with pytest.raises(ef.EngineFileError, match="corrupt header"):
        ef.read_engine(huge)
    with pytest.raises(ef.EngineFileError, match="cannot read"):
        ef.read_engine(tmp_path / "missing.engine")


def test_write_is_atomic_and_replaces(engine):
    ef.write_engine(engine, replace(header(), graph="vision"), b"x" * 10)
    got, blob = ef.read_engine(engine)
    assert got.graph == "vision" and blob == b"x" * 10
    assert [p.name for p in engine.parent.iterdir()] == [engine.name]  # no temp files left


@pytest.mark.skipif(not HAVE_TRT_RTX, reason=NO_TRT_RTX)
def test_real_tensorrt_rtx_engine_passes_validation_and_reaches_deserialize(tmp_path):
    """Everything up to deserialize runs for real; without a GPU TensorRT-RTX returns no engine."""
    import onnx
    import tensorrt_rtx
    from onnx import TensorProto, helper

    from vla_ros.runtime.trt_build import build_engine

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "n"])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    built = build_engine(path, tmp_path / "relu.engine", {"x": ([1, 1], [1, 8], [1, 64])},
                         flavour="tensorrt_rtx", log=lambda _: None)
    assert built.onnx_sha256 == ef.sha256_file(path) and built.profiles["x"]["max"] == [1, 64]
    header_read, _ = ef.read_engine(tmp_path / "relu.engine")
    gpu = ef.current_gpu()
    ef.check_compatible(header_read, ef.RuntimeIdentity("tensorrt_rtx", tensorrt_rtx.__version__, *gpu))
    if gpu[0] == ef.NO_GPU:
        with pytest.raises(ef.EngineFileError, match="could not deserialize"):
            ef.load_engine(tmp_path / "relu.engine", tensorrt_rtx, "tensorrt_rtx")
