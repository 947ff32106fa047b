"""make_policy: the Policy a PolicyConfig asks for (backend, checkpoint, dtype, statistics, gripper),
and start_worker: that policy running in an inference worker (thread or child process).

Backends are looked up in `BACKEND_MODULES`: a module with `build_policy(cfg, checkpoint) -> Policy`,
imported on demand (so torch is not imported for ONNX Runtime and vice versa). Adding a backend is
one line here plus its module.
"""

from __future__ import annotations

import functools
import importlib
import logging
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

from vla_ros.core.config import PolicyConfig
from vla_ros.core.types import Policy
from vla_ros.model.normalization import GripperOptions
from vla_ros.model.spec import CheckpointError
from vla_ros.runtime.oft_policy import OftPolicy
from vla_ros.runtime.policy import VlaPolicy
from vla_ros.runtime.process_worker import ProcessInferenceWorker
from vla_ros.runtime.worker import ChunkCallback, FaultCallback, InferenceWorker, RejectCallback

DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "demo_vla"

# backend name -> module providing `build_policy(cfg: PolicyConfig, checkpoint: Path) -> Policy`
BACKEND_MODULES: dict[str, str] = {
    "torch": "vla_ros.runtime.factory",
    "onnxruntime": "vla_ros.runtime.ort_backend",
    "tensorrt": "vla_ros.runtime.trt_backend",
}


class BackendUnavailableError(RuntimeError):
    """The configured backend is unknown or not available in this installation."""


def resolve_checkpoint(checkpoint: str) -> Path:
    """The checkpoint directory: the given one, or the embedded demo model when empty."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"checkpoint directory {path} does not exist")
        return path
    if not (DEMO_CHECKPOINT / "config.json").is_file():
        raise CheckpointError(f"the embedded demo model ({DEMO_CHECKPOINT}) is not built yet: train it with "
                              f"`vla-ros train-demo`, or set policy.checkpoint to a checkpoint directory")
    return DEMO_CHECKPOINT


def gripper_options(cfg: PolicyConfig) -> GripperOptions:
    return GripperOptions(binarize=cfg.gripper_binarize, invert=cfg.gripper_invert)


def build_policy(cfg: PolicyConfig, checkpoint: Path) -> Policy:
    """The torch backend's builder: load the checkpoint and wrap it in a VlaPolicy."""
    import torch  # lazy: torch only for this backend

    from vla_ros.model.loader import load_vla  # lazy: imports torch
    from vla_ros.runtime.torch_backend import TorchBackend  # lazy: imports torch

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    loaded = load_vla(checkpoint, dtype=cfg.dtype, device=cfg.device, center_crop=cfg.center_crop)
    return policy_for(loaded, TorchBackend(loaded.model), cfg)


def policy_for(loaded, backend, cfg: PolicyConfig) -> Policy:
    """The Policy of a loaded checkpoint on `backend`: OFT's chunk policy or the autoregressive one."""
    if loaded.settings.parallel:
        return OftPolicy.from_loaded(loaded, backend, cfg.unnorm_key, gripper_options(cfg), cfg.action_scale)
    return VlaPolicy.from_loaded(loaded, backend, cfg.unnorm_key, gripper_options(cfg))


def make_policy(cfg: PolicyConfig) -> Policy:
    """Build the configured policy (warmed up); clear errors for unknown or unavailable backends."""
    module_name = BACKEND_MODULES.get(cfg.backend)
    if module_name is None:
        raise BackendUnavailableError(f"unknown backend {cfg.backend!r}; known: {sorted(BACKEND_MODULES)}")
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(f"backend {cfg.backend!r} needs a package that is not installed: "
                                      f"{exc.name}") from exc
    policy = module.build_policy(cfg, checkpoint)
    warmup = getattr(policy, "warmup", None)
    if cfg.warmup_runs > 0 and callable(warmup):
        warmup(cfg.warmup_runs)
    return policy


_fallback_warned = False  # the thread fallback was announced (once per process)


@functools.cache
def child_process_support() -> str | None:
    """None when multiprocessing can start a (spawn) child process here, else why not; checked once."""
    try:
        # os.getpid is a builtin: the test child imports nothing of ours and exits at once with 0.
        child = multiprocessing.get_context("spawn").Process(target=os.getpid, daemon=True)
        child.start()
        child.join(60.0)
    except (OSError, RuntimeError, ValueError, ImportError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if child.exitcode != 0:
        child.kill()
        return f"a test child process did not exit cleanly (exit code {child.exitcode})"
    return None


def start_worker(cfg: PolicyConfig, on_chunk: ChunkCallback, on_fault: FaultCallback, *,
                 in_process: bool = False, policy: Policy | None = None,
                 policy_factory: Callable[[], Policy] | None = None, nice: int = 0, process_nice: int = 0,
                 warn: Callable[[str], None] | None = None,
                 on_reject: RejectCallback | None = None) -> InferenceWorker:
    """The started inference worker for `cfg`; raises with the reason when the policy cannot be built.

    `policy`: a ready policy object, always run in a thread. Otherwise the policy comes from
    `policy_factory` (picklable) or make_policy(cfg), in a child process when `in_process` and the
    platform can start one (else in a thread, after one `warn`ing). `nice` (> 0) lowers the priority
    of the inference thread or process; `process_nice` that of a child process only (a thread shares
    the GIL with the control loop: lowering it would make the loop wait for it longer). `on_reject`
    gets the frames that fail to decode.
    """
    if policy is None and in_process:
        unsupported = child_process_support()
        if unsupported is None:
            factory = policy_factory or functools.partial(make_policy, cfg)
            worker: InferenceWorker = ProcessInferenceWorker(factory, on_chunk, on_fault, cfg.max_inference_s,
                                                             nice=nice or process_nice, on_reject=on_reject)
            worker.start()
            return worker
        global _fallback_warned
        if not _fallback_warned:  # once per process: the platform does not change
            _fallback_warned = True
            (warn or logging.getLogger(__name__).warning)(
                f"execution.inference_process: child processes cannot be started here ({unsupported}); "
                f"the policy runs in a thread of this process, so it can delay the control loop")
    if policy is None:
        policy = policy_factory() if policy_factory is not None else make_policy(cfg)
    worker = InferenceWorker(policy, on_chunk, on_fault, cfg.max_inference_s, nice=nice, on_reject=on_reject)
    worker.start()
    return worker
