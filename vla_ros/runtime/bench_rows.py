"""The rows of `vla-ros bench`: what each one runs, and how a row name becomes a Runner.

- any backend name `make_policy` knows ("torch", "onnxruntime", "tensorrt"): the checkpoint's policy,
  built with the bench's torch thread count (ONNX Runtime gets as many intra-op threads): VlaPolicy
  (one action per call), or for an OpenVLA-OFT checkpoint OftPolicy (a chunk of actions per call);
- "oft-<backend>" (e.g. "oft-torch", "oft-onnxruntime"): the same for the second checkpoint of the bench,
  `--oft-checkpoint` (engines: `--oft-engine-dir`), so both families run side by side in one process;
- "torch-generate": the reference path, transformers `generate()` (greedy, 7 tokens, KV cache) on the
  same spliced embeddings, with the same action-id restriction, preprocessing and detokenization.
Extra rows register with `register_row(name, factory)`. A backend that cannot run on this machine
(tensorrt without a GPU) raises RowUnavailableError with the reason; the table lists it as skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from vla_ros.core.config import PolicyConfig
from vla_ros.core.types import Instruction, Observation
from vla_ros.model.loader import load_vla
from vla_ros.model.normalization import action_stats, unnormalize
from vla_ros.model.preprocess import ImagePreprocessor
from vla_ros.runtime import trt_backend
from vla_ros.runtime.factory import make_policy, resolve_checkpoint
from vla_ros.runtime.oft_policy import OftPolicy
from vla_ros.runtime.torch_backend import DTYPE_NAMES

OFT_PREFIX = "oft-"  # rows of the second (OpenVLA-OFT) checkpoint


@dataclass
class BenchOptions:
    """What every row is built from."""

    checkpoint: str = ""
    device: str = "cpu"
    dtype: str = "fp32"
    engine_dir: str = ""
    unnorm_key: str = ""
    resize: str = "auto"  # image resize method (vla_ros.model.preprocess.RESIZE_METHODS)
    oft_checkpoint: str = ""  # the "oft-*" rows' checkpoint
    oft_engine_dir: str = ""  # their exported graphs / engines


@dataclass
class RunResult:
    """One predict: action ids, per-stage seconds, per-decode-step seconds, end-to-end seconds."""

    tokens: list[int]
    stages: dict[str, float]
    steps: list[float]
    total: float
    actions: list[float] = field(default_factory=list)
    cpu_total: float = 0.0  # CPU seconds of the calling thread: the work, without time preempted
    chunk: int = 1  # actions one call yields


class Runner:
    """A bench row: `run(rgb, text)` -> RunResult; `describe()` for the table header."""

    kind = "autoregressive"  # rows are compared with the first row of the same kind

    def run(self, rgb: np.ndarray, text: str) -> RunResult:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def precision(self) -> str:
        """The weights' precision ("fp32", "fp16+int4(b128)"; "" when unknown)."""
        return ""


def backend_precision(policy: object) -> str:
    """A policy's backend precision: the exported graphs' (quantization included) or the torch dtype."""
    backend = getattr(policy, "backend", None)
    text = getattr(backend, "precision", None)
    if text is None:
        dtype = getattr(backend, "dtype", None)
        text = DTYPE_NAMES.get(dtype, str(dtype or ""))
    return str(text)


class PolicyRunner(Runner):
    """Any VlaPolicy (torch, and the ONNX Runtime / TensorRT backends of the same protocol)."""

    def __init__(self, policy) -> None:  # noqa: ANN001 - a VlaPolicy (last_tokens, last_step_times)
        self.policy = policy

    def run(self, rgb: np.ndarray, text: str) -> RunResult:
        c0, t0 = time.thread_time(), time.perf_counter()
        chunk = self.policy.predict(Observation(rgb=rgb, stamp=0.0), Instruction(text=text, stamp=0.0))
        total, cpu = time.perf_counter() - t0, time.thread_time() - c0
        return RunResult(tokens=[int(t) for t in self.policy.last_tokens], stages=dict(chunk.timings),
                         steps=list(self.policy.last_step_times), total=total,
                         actions=chunk.actions[0].tolist(), cpu_total=cpu)

    def describe(self) -> str:
        return self.policy.describe()

    def precision(self) -> str:
        return backend_precision(self.policy)


class ChunkRunner(Runner):
    """An OftPolicy: every camera sees the bench image, proprio is all zeros; one call yields a chunk.

    Runs `predict_arrays`, i.e. all of predict but the gripper mapping and the action scale (microseconds),
    so checkpoints of any action dimension can be timed.
    """

    kind = "parallel"

    def __init__(self, policy: OftPolicy) -> None:
        self.policy = policy
        dim = policy.settings.proprio_dim
        self.proprio = np.zeros(dim) if dim else None

    def run(self, rgb: np.ndarray, text: str) -> RunResult:
        images = [rgb] * self.policy.inputs.cameras
        c0, t0 = time.thread_time(), time.perf_counter()
        out = self.policy.predict_arrays(images, text, self.proprio)
        total, cpu = time.perf_counter() - t0, time.thread_time() - c0
        return RunResult(tokens=[int(t) for t in self.policy.last_ids], stages=dict(out.timings), steps=[],
                         total=total, actions=out.actions[0].tolist(), cpu_total=cpu, chunk=len(out.actions))

    def describe(self) -> str:
        return self.policy.describe()

    def precision(self) -> str:
        return backend_precision(self.policy)


class GenerateRunner(Runner):
    """The reference: transformers `generate()` on [BOS, patches, prompt] embeddings, greedy, 7 tokens.

    Same preprocessing, vision modules, action-id restriction and detokenization as the policy; the
    LLM runs through transformers' own generation loop, KV cache and model forward.
    """

    def __init__(self, opts: BenchOptions) -> None:
        from transformers import LogitsProcessor, LogitsProcessorList  # lazy: heavy, this row only

        loaded = load_vla(resolve_checkpoint(opts.checkpoint), dtype=opts.dtype, device=opts.device,
                          resize=opts.resize)
        self.loaded = loaded
        self.model = loaded.model
        self.preprocessor = ImagePreprocessor(loaded.preprocess)
        self.stats = action_stats(loaded.norm_stats, opts.unnorm_key or None)
        self.n_actions = self.stats.dim
        act = loaded.action_tokenizer
        stamps: list[float] = []
        self.stamps = stamps

        class RestrictToActions(LogitsProcessor):
            """Only action ids may win (as in the policy); records when each step's logits are ready."""

            def __call__(self, input_ids, scores):  # noqa: ANN001, ANN204 - transformers' signature
                stamps.append(time.perf_counter())
                masked = torch.full_like(scores, float("-inf"))
                masked[:, act.first_id:act.vocab_end] = scores[:, act.first_id:act.vocab_end]
                return masked

        self.processors = LogitsProcessorList([RestrictToActions()])
        param = next(self.model.parameters())
        self.dtype, self.device = param.dtype, param.device

    def describe(self) -> str:
        return f"transformers generate() {self.device.type} {str(self.dtype).replace('torch.', '')}"

    def precision(self) -> str:
        return DTYPE_NAMES.get(self.dtype, str(self.dtype))

    def run(self, rgb: np.ndarray, text: str) -> RunResult:
        n = self.n_actions
        c0, t0 = time.thread_time(), time.perf_counter()
        pixels = self.preprocessor(rgb)
        ids = torch.tensor([self.loaded.family.prompt_ids(self.loaded.tokenizer, text)], device=self.device)
        t1 = time.perf_counter()
        with torch.inference_mode():
            patches = self.model.patch_embeddings(torch.from_numpy(pixels).to(self.device, self.dtype))
            t2 = time.perf_counter()
            embeds = self.model.splice(self.model.language_model.get_input_embeddings()(ids), patches)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
            self.stamps.clear()
            out = self.model.language_model.generate(
                inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                do_sample=False, num_beams=1, logits_processor=self.processors, use_cache=True,
                pad_token_id=self.loaded.spec.pad_token_id)
        t4 = time.perf_counter()
        tokens = out[0, -n:].cpu().numpy()
        actions = unnormalize(self.loaded.action_tokenizer.decode(tokens), self.stats)
        t5, c5 = time.perf_counter(), time.thread_time()
        stamps = [t2, *self.stamps]
        steps = [b - a for a, b in zip(stamps[1:-1], stamps[2:])]
        stages = {"preprocess": t1 - t0, "vision": t2 - t1, "prefill": stamps[1] - t2,
                  "decode": t4 - stamps[1], "detokenize": t5 - t4}
        return RunResult(tokens=[int(t) for t in tokens], stages=stages, steps=steps, total=t5 - t0,
                         actions=actions.tolist(), cpu_total=c5 - c0)


RowFactory = Callable[[BenchOptions], Runner]


class RowUnavailableError(RuntimeError):
    """A row that cannot run on this machine (tensorrt without a GPU); the table says why."""


ROWS: dict[str, RowFactory] = {"torch-generate": GenerateRunner}

# backend -> why it cannot run here (or None); checked before the row is built
AVAILABILITY: dict[str, Callable[[], str | None]] = {"tensorrt": trt_backend.unavailable_reason}


def register_row(name: str, factory: RowFactory) -> None:
    """Add a bench row that is not a plain `make_policy` backend."""
    ROWS[name] = factory


def make_runner(name: str, opts: BenchOptions) -> Runner:
    """The row `name`: a registered factory, else the checkpoint's policy from make_policy(backend=name)
    ("oft-<backend>": of the OFT checkpoint)."""
    if name in ROWS:
        return ROWS[name](opts)
    backend, checkpoint, engine_dir = name, opts.checkpoint, opts.engine_dir
    if name.startswith(OFT_PREFIX):
        if not opts.oft_checkpoint:
            raise ValueError(f"row {name!r} runs the OpenVLA-OFT checkpoint: give --oft-checkpoint "
                             f"(or --oft-pair)")
        backend, checkpoint, engine_dir = name[len(OFT_PREFIX):], opts.oft_checkpoint, opts.oft_engine_dir
    reason = AVAILABILITY.get(backend, lambda: None)()
    if reason is not None:
        raise RowUnavailableError(reason)
    cfg = PolicyConfig(checkpoint=checkpoint, backend=backend, device=opts.device, dtype=opts.dtype,
                       engine_dir=engine_dir, unnorm_key=opts.unnorm_key,
                       threads=torch.get_num_threads())
    policy = make_policy(cfg)
    preprocessor = getattr(policy, "preprocessor", None)
    if preprocessor is not None and opts.resize != preprocessor.cfg.resize:
        policy.preprocessor = ImagePreprocessor(replace(preprocessor.cfg, resize=opts.resize))
    return ChunkRunner(policy) if isinstance(policy, OftPolicy) else PolicyRunner(policy)
