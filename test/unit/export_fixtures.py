"""Shared, session-cached tiny checkpoints and their ONNX exports for the export / ORT / TensorRT tests.

Exporting takes tens of seconds, so each (checkpoint, dtype) is exported once per pytest session
into the session's base temp dir and reused by every test module (written to a temp name, then
renamed, so a half-written export is never picked up).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import torch

HAVE_GPU = torch.cuda.is_available()
NO_GPU = "needs an NVIDIA GPU with TensorRT (torch.cuda.is_available() is False)"
HAVE_TRT_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
NO_TRT_RTX = "tensorrt_rtx (PyPI tensorrt-rtx-cu12) is not installed"
WORDS = ["pick", "up", "the", "red", "blue", "block", "cube", "put", "it", "in", "bowl", "drawer", "open",
         "close", "left", "right", "towel", "carrot", "pot", "move", "slowly", "near", "sink", "wipe"]


def cached_dir(base: Path, name: str, make) -> Path:
    """`make(tmp)` once per session into base/name (written to a temp name, then renamed)."""
    final = base / name
    if not final.exists():
        tmp = base / f"{name}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        make(tmp)
        try:
            tmp.rename(final)
        except OSError:  # made meanwhile by someone else
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def tiny_checkpoint(**kwargs) -> Path:
    """A tiny OpenVLA-layout checkpoint (vla_ros.model.tiny), shared with the other tests; read-only."""
    from vla_ros.model.tiny import cached_tiny_checkpoint

    return cached_tiny_checkpoint(**kwargs)


def exported(tmp_path_factory, checkpoint: Path, dtype: str = "fp32") -> Path:
    """The four ONNX graphs of `checkpoint` (once per session and dtype)."""
    from vla_ros.runtime.export import export_checkpoint

    base = tmp_path_factory.getbasetemp()
    return cached_dir(base, f"{checkpoint.name}_onnx_{dtype}",
                   lambda p: export_checkpoint(checkpoint, p, dtype=dtype, log=lambda _: None))


def random_cases(n: int, seed: int = 0) -> list[tuple[np.ndarray, str]]:
    """n random RGB images of random sizes with random instructions."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(32, 480, size=2))
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 12))))
        cases.append((image, text))
    return cases


def engines_rtx(tmp_path_factory, graph_dir: Path) -> Path:
    """Engines (plus manifest copy) built from an export with TensorRT-RTX, once per session."""
    from vla_ros.runtime.trt_build import build_all

    base = tmp_path_factory.getbasetemp()
    return cached_dir(base, f"{graph_dir.name}_rtx_engines",
                      lambda p: build_all(graph_dir, p, flavour="tensorrt_rtx", log=lambda _: None))


def gpu_engines(tmp_path_factory, graph_dir: Path) -> Path:
    """Engines built with the TensorRT found here (tensorrt on Jetson/desktop, else tensorrt_rtx), once
    per session; skips without a GPU or TensorRT, with the reason."""
    import pytest

    if not HAVE_GPU:
        pytest.skip(NO_GPU)
    from vla_ros.runtime.trt_build import BuildError, build_all, import_tensorrt

    try:
        import_tensorrt()
    except BuildError as exc:
        pytest.skip(f"needs TensorRT: {exc}")
    return cached_dir(tmp_path_factory.getbasetemp(), f"{graph_dir.name}_gpu_engines",
                      lambda p: build_all(graph_dir, p, log=lambda _: None))
