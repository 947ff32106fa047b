"""What the ONNX Runtime and TensorRT backends share: the export directory and the policy around it.

An export directory (`vla-ros export`) holds the family's graphs (autoregressive: vision, embed,
prefill, decode; OpenVLA-OFT: vision, embed, proprio, actions), their engines (`vla-ros build-engine`),
manifest.json and, for OFT, a copy of the checkpoint's vla_settings.json. The policy's tokenizer, image
preprocessing and action statistics still come from the checkpoint directory; its weights are not
loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vla_ros.core.config import PolicyConfig
from vla_ros.core.types import Policy
from vla_ros.model.action_tokenizer import ActionTokenizer
from vla_ros.model.families import Family, resolve_family
from vla_ros.model.preprocess import PreprocessSpec
from vla_ros.model.settings import SETTINGS_FILE, VlaSettings, read_settings
from vla_ros.model.spec import CheckpointError, VlaSpec
from vla_ros.model.tokenizer import TextTokenizer
from vla_ros.runtime import factory

MANIFEST = "manifest.json"
FORMAT = "vla_ros-onnx"
AR_GRAPHS = ("vision", "embed", "prefill", "decode")
OFT_GRAPHS = ("vision", "embed", "proprio", "actions")


def family_graphs(settings: VlaSettings) -> tuple[str, ...]:
    """The graphs a checkpoint with these settings exports (OFT's proprio graph only with proprio)."""
    if not settings.parallel:
        return AR_GRAPHS
    return tuple(g for g in OFT_GRAPHS if g != "proprio" or settings.proprio_dim)


def sha256_files(paths: Sequence[Path]) -> str:
    """One SHA-256 over the names and contents of several files (in the given order)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def graph_files(onnx_path: Path) -> list[Path]:
    """An ONNX file and its external-data file(s) (`<name>.data` as torch writes it)."""
    import onnx  # lazy: only exporting and quantizing read graphs here

    model = onnx.load(str(onnx_path), load_external_data=False)
    locations = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            locations.update(e.value for e in init.external_data if e.key == "location")
    return [onnx_path] + [onnx_path.parent / loc for loc in sorted(locations)]


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
    missing = [g for g in family_graphs(manifest_settings(manifest, path))
               if not isinstance(graphs, dict) or g not in graphs]
    if missing:
        raise GraphDirError(f"{path}: graphs {missing} were not exported (vla-ros export --graphs ...)")
    copy = Path(graph_dir) / SETTINGS_FILE
    if _settings_file(Path(graph_dir)) != manifest_settings(manifest, path):
        state = "disagrees with" if copy.is_file() else "is missing, unlike"
        raise GraphDirError(f"{copy} {state} the settings {path} was exported with: export the checkpoint "
                            f"again")
    return manifest


def film_input(film: bool, condition: Any, cameras: int) -> bool:
    """Whether a vision graph gets FiLM's condition [cameras, D]; refuses one given to towers without
    FiLM or missing from (or misshapen for) towers with it."""
    if not film:
        if condition is not None:
            raise ValueError("this checkpoint's vision towers have no FiLM: no condition input")
        return False
    if condition is None or condition.ndim != 2 or condition.shape[0] != cameras:
        shape = None if condition is None else condition.shape
        raise ValueError(f"FiLM towers need a condition [{cameras}, D] (one row per camera), got {shape}")
    return True


def manifest_settings(manifest: dict[str, Any], where: str | Path = MANIFEST) -> VlaSettings:
    """The settings the graphs were exported with (exports without a record are autoregressive)."""
    try:
        return VlaSettings.from_json(manifest["settings"]) if "settings" in manifest else VlaSettings()
    except CheckpointError as exc:
        raise GraphDirError(f"{where}: {exc}") from exc


def _settings_file(directory: Path) -> VlaSettings:
    try:
        return read_settings(directory)
    except CheckpointError as exc:
        raise GraphDirError(str(exc)) from exc


def check_same_checkpoint(manifest: dict[str, Any], checkpoint: str | Path, graph_dir: str | Path) -> None:
    """Refuse graphs exported from another checkpoint (compares config.json's SHA-256 and, where the
    checkpoint has one, its settings file: an OFT conversion keeps its source's config.json)."""
    config = Path(checkpoint) / "config.json"
    if config.is_file() and sha256_files([config]) != manifest.get("config_sha256"):
        raise GraphDirError(f"{graph_dir} was exported from {manifest.get('checkpoint')}, whose config.json "
                            f"differs from {config}: export this checkpoint again")
    if (Path(checkpoint) / SETTINGS_FILE).is_file():
        exported = manifest_settings(manifest, graph_dir)
        if _settings_file(Path(checkpoint)) != exported:
            raise GraphDirError(f"{graph_dir} holds {exported.family} graphs ({exported.action_head}, chunk "
                                f"{exported.chunk}) but {Path(checkpoint) / SETTINGS_FILE} says otherwise: "
                                f"export this checkpoint again")


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


@dataclass
class CheckpointFiles:
    """A checkpoint's tokenizer, preprocessing, statistics and settings, without its weights: what
    `factory.policy_for` reads from a loaded checkpoint."""

    path: Path
    spec: VlaSpec
    family: Family
    tokenizer: TextTokenizer
    action_tokenizer: ActionTokenizer
    norm_stats: dict
    preprocess: PreprocessSpec
    settings: VlaSettings


def read_checkpoint_files(checkpoint: str | Path, settings: VlaSettings, center_crop: bool = False
                          ) -> CheckpointFiles:
    """Read everything but the weights of a checkpoint directory, for graphs exported with `settings`."""
    from vla_ros.model.loader import read_norm_stats, read_preprocess  # lazy: model.loader imports torch

    path = Path(checkpoint)
    spec = VlaSpec.from_dir(path)
    family = resolve_family(spec, settings.family if settings.parallel else None)
    tokenizer = TextTokenizer(path)
    return CheckpointFiles(path, spec, family, tokenizer, family.action_tokenizer(spec, tokenizer),
                           read_norm_stats(path, spec), read_preprocess(path, spec, center_crop), settings)


def policy_for(checkpoint: str | Path, backend: Any, cfg: PolicyConfig) -> Policy:
    """The family's policy over `backend` (its `settings`: the graphs'; autoregressive when it has none)
    with the checkpoint's tokenizer, preprocessing and statistics."""
    settings = getattr(backend, "settings", None) or VlaSettings()
    return factory.policy_for(read_checkpoint_files(checkpoint, settings, cfg.center_crop), backend, cfg)


def graph_precision(manifest: dict[str, Any]) -> str:
    """The graphs' precision in a few characters: "fp32", "fp16+int4(b128)", "fp32+int4(b64) qdq" (TensorRT
    target), "fp32+w8a8"; from the manifest's dtype and quantization record."""
    dtype = manifest.get("dtype", "fp32")
    record = manifest.get("quantization") or {}
    mode = record.get("mode", "none")
    if mode == "none":
        return dtype
    if mode == "w8a8":
        return f"{dtype}+w8a8"
    blocks = sorted({b for b in (record.get("block_sizes") or {}).values() if b})
    blocks = blocks or [record.get("block_size")]
    text = f"{dtype}+{mode}(b{'/'.join(str(b) for b in blocks)})"
    return text + (" qdq" if record.get("target") == "tensorrt" else "")
