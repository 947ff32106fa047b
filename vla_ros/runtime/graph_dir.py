"""What the ONNX Runtime and TensorRT backends share: the export directory and the policy around it.

An export directory (`vla-ros export`) holds vision/embed/prefill/decode graphs, their engines
(`vla-ros build-engine`) and manifest.json. The policy's tokenizer, image preprocessing and action
statistics still come from the checkpoint directory; its weights are not loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "vla_ros-onnx"
REQUIRED_GRAPHS = ("vision", "embed", "prefill", "decode")


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
    from vla_ros.runtime.export import sha256_files

    config = Path(checkpoint) / "config.json"
    if config.is_file() and sha256_files([config]) != manifest.get("config_sha256"):
        raise GraphDirError(f"{graph_dir} was exported from {manifest.get('checkpoint')}, whose config.json "
                            f"differs from {config}: export this checkpoint again")


def check_dtype(manifest: dict[str, Any], dtype: str, graph_dir: str | Path) -> None:
    """The configured dtype must be the graphs' (precision is baked into exported graphs)."""
    if manifest.get("dtype") != dtype:
        raise GraphDirError(f"policy.dtype is {dtype} but {graph_dir} holds {manifest.get('dtype')} graphs: "
                            f"set policy.dtype to {manifest.get('dtype')} or export with --dtype {dtype}")


def policy_for(checkpoint: str | Path, backend: Any, cfg: Any) -> Any:
    """A VlaPolicy over `backend` with the checkpoint's tokenizer, preprocessing and statistics."""
    from vla_ros.model.families import resolve_family
    from vla_ros.model.loader import read_norm_stats, read_preprocess
    from vla_ros.model.normalization import GripperOptions, action_stats
    from vla_ros.model.preprocess import ImagePreprocessor
    from vla_ros.model.spec import VlaSpec
    from vla_ros.model.tokenizer import TextTokenizer
    from vla_ros.runtime.policy import VlaPolicy

    path = Path(checkpoint)
    vla_cfg = VlaSpec.from_dir(path)
    family = resolve_family(vla_cfg, None)
    tokenizer = TextTokenizer(path)
    stats = action_stats(read_norm_stats(path, vla_cfg), cfg.unnorm_key or None)
    gripper = GripperOptions(binarize=cfg.gripper_binarize, invert=cfg.gripper_invert)
    return VlaPolicy(backend, tokenizer, family, family.action_tokenizer(vla_cfg, tokenizer),
                     ImagePreprocessor(read_preprocess(path, vla_cfg, cfg.center_crop)), stats, gripper,
                     label=f"{family.name} {path.name} [{stats.key}]")
