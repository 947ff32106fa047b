"""TensorRT engine files with a vla_ros header, validated before TensorRT ever sees the bytes.

Layout: MAGIC (16 bytes) | header length (uint32, little endian) | header (UTF-8 JSON) | engine.
TensorRT engines are tied to one TensorRT version and one GPU; deserializing a foreign or damaged
engine can crash the process, so `read_engine` checks the header, the size and a SHA-256 of the
engine bytes, and `check_compatible` compares the header with the running TensorRT and GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MAGIC = b"VLA_ROS_TRT_ENG\n"  # 16 bytes
FORMAT_VERSION = 1
NO_GPU = "none (CPU build)"
_LEN = struct.Struct("<I")
_MAX_HEADER_BYTES = 1 << 20
REBUILD = "rebuild the engine (vla-ros build-engine ONNX_DIR)"


class EngineFileError(RuntimeError):
    """An engine file is missing, foreign, damaged or built for another TensorRT / GPU."""


@dataclass(frozen=True)
class RuntimeIdentity:
    """What an engine must match: TensorRT flavour and version, GPU name and compute capability."""

    trt_flavour: str  # "tensorrt" or "tensorrt_rtx"
    trt_version: str
    gpu_name: str  # NO_GPU when built without a GPU
    compute_capability: str  # "8.7", or NO_GPU


@dataclass
class EngineHeader:
    """Metadata stored in front of the serialized engine."""

    graph: str  # "vision" | "prefill" | "decode" (or any name for toy graphs)
    trt_flavour: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    onnx_file: str
    onnx_sha256: str
    build_time_utc: str
    build_seconds: float
    engine_size: int = 0
    engine_sha256: str = ""
    strongly_typed: bool = True
    profiles: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # input -> min/opt/max
    format_version: int = FORMAT_VERSION

    def identity(self) -> RuntimeIdentity:
        """The TensorRT / GPU identity this engine was built for."""
        return RuntimeIdentity(self.trt_flavour, self.trt_version, self.gpu_name, self.compute_capability)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_engine(path: str | Path, header: EngineHeader, engine: bytes | memoryview) -> EngineHeader:
    """Write header + engine atomically (temp file + rename); returns the header as written."""
    data = memoryview(engine).cast("B")  # no copy of a multi-GB engine
    header.engine_size = data.nbytes
    header.engine_sha256 = hashlib.sha256(data).hexdigest()
    header.format_version = FORMAT_VERSION
    blob = json.dumps(asdict(header), sort_keys=True).encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + _LEN.pack(len(blob)) + blob)
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return header


def read_header(path: str | Path) -> tuple[EngineHeader, int]:
    """Parse and check the header only; returns (header, byte offset of the engine)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            start = f.read(len(MAGIC) + _LEN.size)
            if len(start) < len(MAGIC) + _LEN.size or start[: len(MAGIC)] != MAGIC:
                raise EngineFileError(f"{path}: not a vla_ros engine file (no vla_ros header; a raw "
                                      f"or foreign engine is never deserialized): {REBUILD}")
            (n,) = _LEN.unpack(start[len(MAGIC):])
            if n > _MAX_HEADER_BYTES:
                raise EngineFileError(f"{path}: corrupt header (length {n}): {REBUILD}")
            raw = f.read(n)
    except OSError as exc:
        raise EngineFileError(f"cannot read engine file {path}: {exc}") from exc
    if len(raw) != n:
        raise EngineFileError(f"{path}: truncated header: {REBUILD}")
    header = _parse_header(path, raw)
    offset = len(MAGIC) + _LEN.size + n
    if size - offset != header.engine_size:
        raise EngineFileError(f"{path}: engine is {size - offset} bytes, header says "
                              f"{header.engine_size} (truncated or damaged file): {REBUILD}")
    return header, offset


def _parse_header(path: Path, raw: bytes) -> EngineHeader:
    try:
        fields: dict[str, Any] = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineFileError(f"{path}: corrupt header ({exc}): {REBUILD}") from exc
    if not isinstance(fields, dict):
        raise EngineFileError(f"{path}: corrupt header (not a JSON object): {REBUILD}")
    version = fields.get("format_version")
    if version != FORMAT_VERSION:
        raise EngineFileError(f"{path}: engine file format {version!r}, this vla_ros reads "
                              f"{FORMAT_VERSION}: {REBUILD}")
    try:
        header = EngineHeader(**fields)
    except TypeError as exc:
        raise EngineFileError(f"{path}: corrupt header ({exc}): {REBUILD}") from exc
    if not isinstance(header.engine_size, int) or header.engine_size <= 0:
        raise EngineFileError(f"{path}: corrupt header (engine_size {header.engine_size!r}): {REBUILD}")
    return header


def read_engine(path: str | Path) -> tuple[EngineHeader, bytes]:
    """Header and engine bytes, after checking size and SHA-256 (no compatibility check yet)."""
    header, offset = read_header(path)
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    if hashlib.sha256(data).hexdigest() != header.engine_sha256:
        raise EngineFileError(f"{path}: engine bytes do not match their SHA-256 (damaged file): {REBUILD}")
    return header, data


def check_compatible(header: EngineHeader, running: RuntimeIdentity, path: str | Path = "") -> None:
    """Refuse an engine built for another TensorRT flavour/version or another GPU.

    Plain TensorRT engines are specific to one GPU model; TensorRT-RTX engines are built
    GPU-agnostic and compiled for the device when loaded, so only their version is compared.
    """
    where = f"{path}: " if path else ""
    if header.trt_flavour != running.trt_flavour or header.trt_version != running.trt_version:
        raise EngineFileError(
            f"{where}engine built with {header.trt_flavour} {header.trt_version}, running "
            f"{running.trt_flavour} {running.trt_version}: {REBUILD}")
    if header.trt_flavour == "tensorrt_rtx":
        return
    if header.gpu_name != running.gpu_name or header.compute_capability != running.compute_capability:
        raise EngineFileError(
            f"{where}engine built for GPU {header.gpu_name!r} (compute capability "
            f"{header.compute_capability}), running on {running.gpu_name!r} (compute capability "
            f"{running.compute_capability}): {REBUILD}")


def current_gpu() -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device 0, or NO_GPU twice."""
    try:
        import torch  # lazy: optional here (building with TensorRT-RTX needs no torch and no GPU)

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return torch.cuda.get_device_name(0), f"{major}.{minor}"
    except Exception:  # noqa: BLE001 - a broken CUDA install means "no GPU" here
        pass
    return NO_GPU, NO_GPU


def load_engine(path: str | Path, trt_module: Any, flavour: str, runtime: Any = None,
                gpu: tuple[str, str] | None = None) -> tuple[Any, EngineHeader]:
    """Validate the file, then deserialize it; returns (ICudaEngine, header).

    Every check (header, size, SHA-256, TensorRT version, GPU) runs before `deserialize_cuda_engine`.
    """
    header, data = read_engine(path)
    gpu_name, cc = gpu if gpu is not None else current_gpu()
    check_compatible(header, RuntimeIdentity(flavour, str(trt_module.__version__), gpu_name, cc), path)
    if runtime is None:
        runtime = trt_module.Runtime(trt_module.Logger(trt_module.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise EngineFileError(f"{path}: TensorRT could not deserialize the engine "
                              f"(is a CUDA GPU available?): {REBUILD}")
    return engine, header
