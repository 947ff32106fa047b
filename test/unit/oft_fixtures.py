"""Session-cached tiny OpenVLA-OFT checkpoints (written by OFT's layout, then `vla-ros convert`) and their
ONNX exports, for the OFT export / ONNX Runtime / TensorRT / bench tests.

Forms: "libero" (2 cameras, proprio 8, chunk 8, A 7), "aloha" (3 cameras, FiLM, proprio 14, chunk 25, A 14)
and "discrete" (the LIBERO release without its L1 head, converted as the discrete parallel variant).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from export_fixtures import WORDS, cached_dir


def _write_oft(dst: Path, form: str) -> None:
    from vla_ros.model.convert import main as convert_main
    from vla_ros.model.tiny_oft import write_tiny_oft_release

    release = dst.parent / f"{dst.name}_release"
    shutil.rmtree(release, ignore_errors=True)
    preset = "libero" if form == "discrete" else form
    write_tiny_oft_release(release, form=preset)
    flags = {"libero": [], "aloha": ["--lora-rank", "4"], "discrete": ["--action-head", "discrete"]}[form]
    if form == "discrete":
        next(release.glob("action_head--*")).unlink()
    if convert_main([str(release), str(dst), "--preset", preset, *flags]) != 0:
        raise RuntimeError(f"converting the tiny {form} release failed")


def oft_checkpoint(tmp_path_factory, form: str) -> Path:
    """A converted tiny OFT checkpoint of `form` (once per session); read-only."""
    return cached_dir(tmp_path_factory.getbasetemp(), f"oft_{form}", lambda p: _write_oft(p, form))


def oft_export(tmp_path_factory, form: str, dtype: str = "fp32") -> Path:
    """The ONNX graphs of `oft_checkpoint(form)` (once per session and dtype); read-only."""
    from vla_ros.runtime.export import export_checkpoint

    checkpoint = oft_checkpoint(tmp_path_factory, form)
    return cached_dir(tmp_path_factory.getbasetemp(), f"oft_{form}_onnx_{dtype}",
                      lambda p: export_checkpoint(checkpoint, p, dtype=dtype, log=lambda _: None))


def oft_cases(n: int, cameras: int, proprio_dim: int, seed: int = 0
              ) -> list[tuple[list[np.ndarray], str, np.ndarray | None]]:
    """n random (camera images of random sizes, instruction, raw proprio) inputs."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        images = [rng.integers(0, 256, size=(int(rng.integers(32, 400)), int(rng.integers(32, 400)), 3),
                               dtype=np.uint8) for _ in range(cameras)]
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 12))))
        proprio = rng.normal(size=proprio_dim) if proprio_dim else None
        cases.append((images, text, proprio))
    return cases
