"""What the ONNX Runtime and TensorRT backends share: the export directory and the policy around it.

An export directory (`vla-ros export`) holds vision/embed/prefill/decode graphs, their engines
(`vla-ros build-engine`) and manifest.json. The policy's tokenizer, image preprocessing and action
statistics still come from the checkpoint directory; its weights are not loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vla_ros.core.config import PolicyConfig
from vla_ros.model.families import resolve_family
from vla_ros.model.normalization import action_stats
from vla_ros.model.preprocess import ImagePreprocessor
from vla_ros.model.spec import VlaSpec
from vla_ros.model.tokenizer import TextTokenizer
from vla_ros.runtime.factory import gripper_options
from vla_ros.runtime.policy import VlaPolicy

MANIFEST = "manifest.json"
FORMAT = "vla_ros-onnx"
REQUIRED_GRAPHS = ("vision", "embed", "prefill", "decode")


def sha256_files(paths: Sequence[Path]) -> str:
    """One SHA-256 over the names and contents of several files (in the given order)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


class GraphDirError(RuntimeError):
    """The export directory is missing, incomplete, or from another checkpoint."""


def read_manifest(graph_dir: str | Path) -> dict[str, Any]:
    """The checked manifest of an export directory."""
    path = Path(graph_dir) / MANIFEST
    if not str(graph_dir):
        raise GraphDirError("policy.engine_dir is empty: export the checkpoint first "
                            "(vla-ros export CHECKPOINT DIR) and set policy.engine_dir to DIR")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GraphDirError(f"cannot read {path}: {exc} (export with `vla-ros export CHECKPOINT "
                            f"{graph_dir}`)") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise GraphDirError(f"{path} is not a vla_ros export manifest")
    graphs = manifest.get("graphs")
    missing = [g for g in REQUIRED_GRAPHS if not isinstance(graphs, dict) or g not in graphs]
    if missing:
        raise GraphDirError(f"{path}: graphs {missing} were not exported (vla-ros export --graphs ...)")
    return manifest


def check_same_checkpoint(manifest: dict[str, Any], checkpoint: str | Path, graph_dir: str | Path) -> None:
    """Refuse graphs exported from another checkpoint (compares config.json's SHA-256)."""
    config = Path(checkpoint) / "config.json"
    if config.is_file() and sha256_files([config]) != manifest.get("config_sha256"):
        raise GraphDirError(f"{graph_dir} was exported from {manifest.get('checkpoint')}, whose config.json "
                            f"differs from {config}: export this checkpoint again")


def check_dtype(manifest: dict[str, Any], dtype: str, graph_dir: str | Path) -> None:
    """The configured dtype must be the graphs' (precision is baked into exported graphs)."""
    if manifest.get("dtype") != dtype:
        raise GraphDirError(f"policy.dtype is {dtype} but {graph_dir} holds {manifest.get('dtype')} graphs: "
                            f"set policy.dtype to {manifest.get('dtype')} or export with --dtype {dtype}")


def checked_manifest(cfg: PolicyConfig, checkpoint: str | Path) -> dict[str, Any]:
    """The manifest of cfg.engine_dir, refused when it is from another checkpoint or in another dtype."""
    manifest = read_manifest(cfg.engine_dir)
    check_same_checkpoint(manifest, checkpoint, cfg.engine_dir)
    check_dtype(manifest, cfg.dtype, cfg.engine_dir)
    return manifest


def policy_for(checkpoint: str | Path, backend: Any, cfg: PolicyConfig) -> VlaPolicy:
    """A VlaPolicy over `backend` with the checkpoint's tokenizer, preprocessing and statistics."""
    from vla_ros.model.loader import read_norm_stats, read_preprocess  # lazy: model.loader imports torch

    path = Path(checkpoint)
    spec = VlaSpec.from_dir(path)
    family = resolve_family(spec, None)
    tokenizer = TextTokenizer(path)
    stats = action_stats(read_norm_stats(path, spec), cfg.unnorm_key or None)
    return VlaPolicy(backend, tokenizer, family, family.action_tokenizer(spec, tokenizer),
                     ImagePreprocessor(read_preprocess(path, spec, cfg.center_crop)), stats,
                     gripper_options(cfg), label=f"{family.name} {path.name} [{stats.key}]",
                     n_patches=spec.num_patches)
