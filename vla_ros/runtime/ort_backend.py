"""The ONNX Runtime backend: the exported graphs in ORT sessions (vision / embed / prefill / decode for
the autoregressive family; vision / embed / proprio / actions for OpenVLA-OFT, as the export's settings say).

Execution providers: "cpu", "cuda" or "tensorrt" (each falls back along tensorrt -> cuda -> cpu).
onnxruntime-gpu lists its GPU providers and then silently runs on the CPU when the CUDA libraries
are missing, so the backend reads `session.get_providers()[0]`, the provider that really runs, and
reports it in `describe()` (the node's status) with a warning when it is not the one requested.

The K/V state is the list of the last step's `present_*` outputs, fed back as the next step's
`past_*` inputs: numpy arrays on the CPU provider; on GPU providers OrtValues bound with IO
binding, which stay on the device and are never copied through the host.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.core.config import PolicyConfig
from vla_ros.core.types import Policy
from vla_ros.runtime.graph_dir import (
    checked_manifest,
    family_graphs,
    film_input,
    graph_precision,
    manifest_settings,
    policy_for,
    read_manifest,
)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
FALLBACK = {"tensorrt": ["tensorrt", "cuda", "cpu"], "cuda": ["cuda", "cpu"], "cpu": ["cpu"]}
OPT_LEVELS = ("disable", "basic", "extended", "all")
log = logging.getLogger(__name__)


class OrtBackendError(RuntimeError):
    """ONNX Runtime is missing, a graph failed to load, or a stage failed to run."""


@dataclass
class OrtOptions:
    """Session settings (all have working defaults)."""

    provider: str = "cpu"  # cpu | cuda | tensorrt
    threads: int = 0  # intra-op threads; 0 = ONNX Runtime's default (one per physical core)
    optimization: str = "all"  # graph optimization level: disable | basic | extended | all
    spin: bool = False  # intra-op threads spin-wait for work (a little lower latency, busy cores)
    device_id: int = 0
    trt_cache_dir: str = ""  # TensorRT EP engine + timing cache directory (default: the graph dir)
    trt_fp16: bool = False  # TensorRT EP may use fp16 kernels for fp32 graphs


def _session_options(ort: Any, opts: OrtOptions) -> Any:
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[opts.optimization]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if opts.threads > 0:
        so.intra_op_num_threads = opts.threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if opts.spin else "0")
    so.log_severity_level = 3  # errors only; the provider check below reports fallbacks
    return so


def _provider_list(opts: OrtOptions, graph_dir: Path, profiles: dict[str, dict]) -> list[Any]:
    """Providers to ask for, best first, each with its options."""
    out: list[Any] = []
    for name in FALLBACK[opts.provider]:
        if name == "tensorrt":
            cache = opts.trt_cache_dir or str(graph_dir / "ort_trt_cache")
            trt_opts: dict[str, Any] = {"device_id": opts.device_id, "trt_engine_cache_enable": True,
                                        "trt_engine_cache_path": cache, "trt_timing_cache_enable": True,
                                        "trt_fp16_enable": opts.trt_fp16}
            if profiles:
                def fmt(key: str) -> str:
                    return ",".join(f"{n}:{'x'.join(map(str, p[key]))}" for n, p in profiles.items())

                trt_opts.update(trt_profile_min_shapes=fmt("min"), trt_profile_opt_shapes=fmt("opt"),
                                trt_profile_max_shapes=fmt("max"))
            out.append((PROVIDERS[name], trt_opts))
        elif name == "cuda":
            out.append((PROVIDERS[name], {"device_id": opts.device_id}))
        else:
            out.append(PROVIDERS[name])
    return out


class OrtGraph:
    """One ONNX graph in an InferenceSession, with the provider that really runs it."""

    def __init__(self, path: Path, opts: OrtOptions, profiles: dict[str, dict] | None = None) -> None:
        import onnxruntime as ort  # lazy: optional, and only the onnxruntime backend needs it

        self.path = path
        available = set(ort.get_available_providers())
        wanted = _provider_list(opts, path.parent, profiles or {})
        usable = [p for p in wanted if (p if isinstance(p, str) else p[0]) in available]
        try:
            self.session = ort.InferenceSession(str(path), _session_options(ort, opts), providers=usable)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise OrtBackendError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.requested = PROVIDERS[opts.provider]
        self.provider = self.session.get_providers()[0]
        self.device = "cuda" if self.provider in (PROVIDERS["cuda"], PROVIDERS["tensorrt"]) else "cpu"
        self.device_id = opts.device_id
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}
        self.fallback = None
        if self.provider != self.requested:
            self.fallback = (f"{path.name}: requested {self.requested} but ONNX Runtime runs "
                             f"{self.provider} (available: {sorted(available)}); GPU libraries missing?")
            log.warning(self.fallback)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Plain run with host arrays in and out."""
        return self.session.run(None, feeds)

    def run_kv(self, host_inputs: dict[str, np.ndarray], values: dict[str, Any],
               host_outputs: int) -> tuple[list[np.ndarray], list[Any]]:
        """Run a graph that carries K/V: the first `host_outputs` outputs come back as numpy, the rest
        stay where the provider runs (numpy arrays on the CPU, OrtValues bound on the GPU)."""
        if self.device == "cpu":  # a plain run: IO binding only adds Python overhead on the CPU
            outputs = self.session.run(None, {**host_inputs, **values})
            return outputs[:host_outputs], outputs[host_outputs:]
        binding = self.session.io_binding()
        for name, array in host_inputs.items():
            binding.bind_cpu_input(name, array)
        for name, value in values.items():
            binding.bind_ortvalue_input(name, value)
        for i, name in enumerate(self.output_names):
            if i < host_outputs:
                binding.bind_output(name, "cpu")
            else:
                binding.bind_output(name, self.device, self.device_id)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return [o.numpy() for o in outputs[:host_outputs]], list(outputs[host_outputs:])


class OrtBackend:
    """Backend (see backend.py) over an export directory. K/V state: a list of arrays / OrtValues."""

    def __init__(self, graph_dir: str | Path, options: OrtOptions | None = None) -> None:
        try:
            import onnxruntime  # noqa: F401  (lazy: optional; checked here for a clear error)
        except ImportError as exc:
            raise OrtBackendError("the onnxruntime backend needs `pip install onnxruntime` "
                                  "(or onnxruntime-gpu)") from exc
        self.options = options or OrtOptions()
        if self.options.provider not in PROVIDERS:
            raise OrtBackendError(f"provider must be one of {sorted(PROVIDERS)}, "
                                  f"got {self.options.provider!r}")
        if self.options.optimization not in OPT_LEVELS:
            raise OrtBackendError(f"optimization must be one of {OPT_LEVELS}")
        self.graph_dir = Path(graph_dir)
        self.manifest = read_manifest(self.graph_dir)
        self.settings = manifest_settings(self.manifest)
        model = self.manifest["model"]
        self.max_positions = int(model["max_positions"])
        self.past_names = list(self.manifest.get("kv", {}).get("past", []))
        self.dtype = self.manifest["dtype"]
        self.precision = graph_precision(self.manifest)  # e.g. "fp32", "fp16+int4(b128)"
        self.float_type = np.float16 if self.dtype == "fp16" else np.float32
        graphs = self.manifest["graphs"]
        self.graphs = {name: OrtGraph(self.graph_dir / graphs[name]["file"], self.options,
                                      graphs[name].get("profiles"))
                       for name in family_graphs(self.settings)}
        self.provider = self.graphs["actions" if self.settings.parallel else "decode"].provider
        self.fallbacks = [g.fallback for g in self.graphs.values() if g.fallback]

    def describe(self) -> str:
        """E.g. "onnxruntime CPUExecutionProvider fp32+int4(b128)" (the graphs' precision, quantization
        included), with a warning on a silent CPU fallback."""
        threads = f" {self.options.threads} threads" if self.options.threads else ""
        text = f"onnxruntime {self.provider} {self.precision}{threads}"
        if self.fallbacks:
            text += f" (WARNING: requested {PROVIDERS[self.options.provider]}, fell back to {self.provider})"
        return text

    def vision(self, pixel_values: np.ndarray, condition: np.ndarray | None = None) -> np.ndarray:
        """[B, 3 * n_towers, S, S] f32 (B = 1, OFT: cameras) + FiLM's condition [B, D] -> [B, P, D] f32."""
        feeds = {"pixel_values": self._float_in(pixel_values)}
        if film_input(self.settings.film, condition, pixel_values.shape[0]):
            feeds["condition"] = self._float_in(condition)
        (patches,) = self._graph("vision").run(feeds)
        return patches.astype(np.float32, copy=False)

    def proprio(self, values: np.ndarray) -> np.ndarray:
        """OFT: normalized proprio [1, P] f32 -> one LLM token [1, 1, D] f32."""
        (token,) = self._graph("proprio").run({"proprio": self._float_in(values)})
        return token.astype(np.float32, copy=False)

    def actions(self, inputs_embeds: np.ndarray) -> np.ndarray:
        """OFT sequence [1, L, D] -> normalized actions [1, K, A] f32 (discrete variant: ids [1, K*A] i64)."""
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[0] != 1:
            raise ValueError(f"actions takes [1, L, D] embeddings, got {inputs_embeds.shape}")
        if inputs_embeds.shape[1] > self.max_positions:
            raise ValueError(f"an OFT sequence of {inputs_embeds.shape[1]} positions; the model has "
                             f"{self.max_positions}")
        (out,) = self._graph("actions").run({"inputs_embeds": self._float_in(inputs_embeds)})
        return out if out.dtype == np.int64 else out.astype(np.float32, copy=False)

    def embed(self, token_ids: np.ndarray) -> np.ndarray:
        """[1, T] int64 -> [1, T, D] f32."""
        (embeds,) = self.graphs["embed"].run({"token_ids": np.ascontiguousarray(token_ids, dtype=np.int64)})
        return embeds.astype(np.float32, copy=False)

    def prefill(self, inputs_embeds: np.ndarray) -> tuple[np.ndarray, list[Any]]:
        """[1, L, D] -> (logits [1, V] f32, K/V state of length L)."""
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[0] != 1:
            raise ValueError(f"prefill takes [1, L, D] embeddings, got {inputs_embeds.shape}")
        if inputs_embeds.shape[1] > self.max_positions:
            raise ValueError(f"prefill of {inputs_embeds.shape[1]} positions; the model has "
                             f"{self.max_positions}")
        (logits,), state = self._graph("prefill").run_kv(
            {"inputs_embeds": self._float_in(inputs_embeds)}, {}, host_outputs=1)
        return logits, state

    def decode(self, token_ids: np.ndarray, state: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """One token [1, 1] + state of length n -> (logits [1, V] f32, state of length n + 1)."""
        graph = self._graph("decode")
        if len(state) != len(self.past_names):
            raise ValueError(f"K/V state has {len(state)} tensors, the decode graph takes "
                             f"{len(self.past_names)}")
        if _length(state[0]) + 1 > self.max_positions:
            raise ValueError(f"decoding past {self.max_positions} positions")
        (logits,), new_state = graph.run_kv(
            {"token_ids": np.ascontiguousarray(token_ids, dtype=np.int64).reshape(1, 1)},
            dict(zip(self.past_names, state)), host_outputs=1)
        return logits, new_state

    def _float_in(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=self.float_type)

    def _graph(self, name: str) -> OrtGraph:
        """The session of one stage; a clear error for a stage the exported family does not have."""
        graph = self.graphs.get(name)
        if graph is None:
            family = self.manifest["model"].get("family", "this")
            raise OrtBackendError(f"{self.graph_dir} has no {name} graph: the {family} family runs "
                                  f"{', '.join(self.graphs)}")
        return graph


def _length(kv: Any) -> int:
    """Sequence length of one K/V tensor (numpy array or OrtValue) [1, heads, length, head_dim]."""
    shape = kv.shape() if callable(kv.shape) else kv.shape
    return int(shape[2])


def build_policy(cfg: PolicyConfig, checkpoint: Path) -> Policy:
    """factory.make_policy's builder for backend "onnxruntime" (graphs from policy.engine_dir)."""
    checked_manifest(cfg, checkpoint)
    provider = os.environ.get("VLA_ROS_ORT_PROVIDER") or ("cuda" if cfg.device == "cuda" else "cpu")
    options = OrtOptions(provider=provider, threads=max(0, cfg.threads))
    return policy_for(checkpoint, OrtBackend(cfg.engine_dir, options), cfg)
