"""The TensorRT backend: the engines of `vla-ros build-engine`, run with torch CUDA buffers (the
family's graphs: vision / embed / prefill / decode, or OpenVLA-OFT's vision / embed / proprio / actions).

Only the named-tensor API common to TensorRT 10.x and 11.x is used (num_io_tensors,
get_tensor_name/mode/dtype, set_input_shape, get_tensor_shape, set_tensor_address,
execute_async_v3), on one non-default CUDA stream; every torch op of the backend runs on that
stream, and every stage ends by copying its result to the host, which synchronizes the stream (so
the buffers TensorRT reads stay alive until it is done). Engine files are validated (header,
SHA-256, TensorRT version, GPU) before TensorRT deserializes them.

CUDA graphs (decode step only). A CUDA graph fixes the input shapes and every tensor address.
The decode step's shapes depend only on the past length P, so one graph is captured per P, each
with its own execution context (a context's host-side state changes with its shapes), after one
normal enqueue. Addresses are made stable by a pool of K/V buffers per sequence length: the
prefill writes its K/V into pool[L], decode step P reads pool[P] and writes pool[P + 1], the
token id goes through one fixed device buffer and the logits through another. So with a fixed
instruction (fixed prompt length) every decode step from the second action on replays a graph;
a new prompt length captures new graphs. The pool holds at most `max_pool_lengths` lengths
(7 per prompt length: 16 is about 2.4 GB for OpenVLA-7B in fp16); past that, pool and graphs are
dropped and rebuilt. K/V state returned by this backend is valid until the next prefill of the
same length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vla_ros.core.config import PolicyConfig
from vla_ros.core.types import Policy
from vla_ros.runtime.engine_file import (
    REBUILD,
    EngineFileError,
    RuntimeIdentity,
    check_compatible,
    current_gpu,
    load_engine,
    read_engine,
)
from vla_ros.runtime.graph_dir import (
    checked_manifest,
    family_graphs,
    film_input,
    graph_precision,
    manifest_settings,
    policy_for,
    read_manifest,
)
from vla_ros.runtime.trt_build import BuildError, engine_name, import_tensorrt

log = logging.getLogger(__name__)


class TrtBackendError(RuntimeError):
    """No GPU, no TensorRT, or an engine that cannot run here."""


def torch_dtype(trt_dtype: Any) -> Any:
    """torch dtype of a TensorRT DataType (by name, so it works for every TensorRT flavour)."""
    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
             "INT64": torch.int64, "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8}
    name = getattr(trt_dtype, "name", str(trt_dtype)).split(".")[-1]
    if name not in table:
        raise TrtBackendError(f"engine tensor type {name} has no torch equivalent")
    return table[name]


class TrtEngine:
    """One deserialized engine: I/O names and dtypes, and execution contexts on the backend's stream."""

    def __init__(self, engine: Any, trt: Any, name: str) -> None:
        self.engine, self.name = engine, name
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: torch_dtype(engine.get_tensor_dtype(n)) for n in names}
        self.context = self.new_context()

    def new_context(self) -> Any:
        context = self.engine.create_execution_context()
        if context is None:
            raise TrtBackendError(f"{self.name}: cannot create an execution context (GPU memory?)")
        return context

    def bind(self, context: Any, inputs: dict[str, Any], outputs: dict[str, Any] | None = None
             ) -> dict[str, Any]:
        """Set input shapes and addresses; bind `outputs` where given, else allocate. Returns all outputs."""
        for name in self.inputs:
            t = inputs[name]
            if t.dtype != self.dtypes[name] or not t.is_cuda or not t.is_contiguous():
                raise TrtBackendError(f"{self.name}: input {name} must be a contiguous CUDA "
                                      f"{self.dtypes[name]} tensor, got {t.dtype} on {t.device}")
            if not context.set_input_shape(name, tuple(t.shape)):
                raise ValueError(f"{self.name}: input {name} of shape {tuple(t.shape)} is outside the "
                                 f"engine's optimization profile (longer prompt? export with a larger "
                                 f"--max-text-tokens and rebuild the engine)")
            context.set_tensor_address(name, t.data_ptr())
        bound = {}
        for name in self.outputs:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise TrtBackendError(f"{self.name}: output {name} has unresolved shape {shape}")
            buf = (outputs or {}).get(name)
            if buf is None:
                buf = torch.empty(shape, dtype=self.dtypes[name], device="cuda")
            elif tuple(buf.shape) != shape or buf.dtype != self.dtypes[name]:
                raise TrtBackendError(f"{self.name}: buffer for {name} is {tuple(buf.shape)} {buf.dtype}, "
                                      f"the engine writes {shape} {self.dtypes[name]}")
            context.set_tensor_address(name, buf.data_ptr())
            bound[name] = buf
        return bound

    def enqueue(self, context: Any, stream: Any) -> None:
        if not context.execute_async_v3(stream.cuda_stream):
            raise TrtBackendError(f"{self.name}: execute_async_v3 failed (see TensorRT's log)")


@dataclass
class TrtKv:
    """K/V state: per-layer tensors [1, n_kv_heads, length, head_dim] on the GPU."""

    tensors: list[Any]
    length: int


@dataclass
class _DecodeGraph:
    context: Any
    graph: Any = None  # torch.cuda.CUDAGraph once captured


@dataclass
class _Pool:
    """K/V buffers by sequence length, and the decode graphs that read and write them."""

    buffers: dict[int, list[Any]] = field(default_factory=dict)
    graphs: dict[int, _DecodeGraph] = field(default_factory=dict)


class TrtBackend:
    """Backend (see backend.py) over an engine directory (engines + manifest.json)."""

    def __init__(self, engine_dir: str | Path, flavour: str | None = None, cuda_graphs: bool = True,
                 max_pool_lengths: int = 16) -> None:
        self.engine_dir = Path(engine_dir)
        self.manifest = read_manifest(self.engine_dir)
        self.settings = manifest_settings(self.manifest)
        try:
            trt, self.flavour = import_tensorrt(flavour)
        except RuntimeError as exc:
            raise TrtBackendError(str(exc)) from exc
        self.trt_version = str(trt.__version__)
        paths = {g: self.engine_dir / engine_name(g) for g in family_graphs(self.settings)}
        self._validate_files(paths)  # header, SHA-256, version, GPU, export: before any deserialize
        if not torch.cuda.is_available():
            raise TrtBackendError("the tensorrt backend needs a CUDA GPU (torch.cuda.is_available() is "
                                  "False); use backend onnxruntime or torch on this machine")
        self.gpu = torch.cuda.get_device_name(0)
        self.stream = torch.cuda.Stream()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engines = {}
        for g, path in paths.items():
            engine, _ = load_engine(path, trt, self.flavour, runtime=self.runtime)
            self.engines[g] = TrtEngine(engine, trt, g)
        model = self.manifest["model"]
        self.max_positions = int(model["max_positions"])
        self.dtype = self.manifest["dtype"]
        self.precision = graph_precision(self.manifest)  # e.g. "fp16", "fp16+int4(b128) qdq"
        self.cuda_graphs = bool(cuda_graphs) and not self.settings.parallel  # OFT: no decode loop
        self.max_pool_lengths = max(2, int(max_pool_lengths))  # a decode step needs two lengths
        self.pool = _Pool()
        self.graph_replays = 0
        if not self.settings.parallel:
            self._decode_buffers(int(model["vocab"]))

    def _decode_buffers(self, vocab: int) -> None:
        """K/V names and the fixed token / logits buffers of the decode step (autoregressive family)."""
        self.past_names = list(self.manifest["kv"]["past"])
        self.present_names = list(self.manifest["kv"]["present"])
        decode = self.engines["decode"]
        self.token_buf = torch.zeros((1, 1), dtype=decode.dtypes["token_ids"], device="cuda")
        self.logits_buf = torch.empty((1, vocab), dtype=decode.dtypes["logits"], device="cuda")

    def _validate_files(self, paths: dict[str, Path]) -> None:
        gpu_name, cc = current_gpu()
        running = RuntimeIdentity(self.flavour, self.trt_version, gpu_name, cc)
        for g, path in paths.items():
            if not path.is_file():
                raise EngineFileError(f"{path} is missing: build the engines "
                                      f"(vla-ros build-engine {self.engine_dir})")
            header, _ = read_engine(path)
            check_compatible(header, running, path)
            expected = self.manifest["graphs"][g].get("sha256")
            if expected and header.onnx_sha256 != expected:
                raise EngineFileError(f"{path} was built from another export of {g}.onnx: {REBUILD}")

    def describe(self) -> str:
        graphs = f", CUDA graphs on ({len(self.pool.graphs)} captured)" if self.cuda_graphs else ""
        return f"tensorrt {self.flavour} {self.trt_version} {self.gpu} {self.precision}{graphs}"

    # -- stages ------------------------------------------------------------------------------------
    def _to_device(self, array: np.ndarray, dtype: Any) -> Any:
        return torch.from_numpy(np.ascontiguousarray(array)).to("cuda").to(dtype).contiguous()

    @staticmethod
    def _to_host(t: Any) -> np.ndarray:
        return t.float().cpu().numpy()  # synchronous copy on the current (backend) stream

    def _run(self, graph: str, inputs: dict[str, Any], outputs: dict[str, Any] | None = None
             ) -> dict[str, Any]:
        engine = self._engine(graph)
        bound = engine.bind(engine.context, inputs, outputs)
        engine.enqueue(engine.context, self.stream)
        return bound

    def _engine(self, graph: str) -> TrtEngine:
        """The engine of one stage; a clear error for a stage the exported family does not have."""
        engine = self.engines.get(graph)
        if engine is None:
            raise TrtBackendError(f"{self.engine_dir} has no {graph} engine: the "
                                  f"{self.manifest['model'].get('family', 'this')} family runs "
                                  f"{', '.join(self.engines)}")
        return engine

    def _inputs(self, graph: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        """Host arrays -> CUDA tensors in the dtypes the engine's inputs take."""
        dtypes = self._engine(graph).dtypes
        return {name: self._to_device(array, dtypes[name]) for name, array in arrays.items()}

    def vision(self, pixel_values: np.ndarray, condition: np.ndarray | None = None) -> np.ndarray:
        """[B, 3 * n_towers, S, S] f32 (B = 1, OFT: cameras) + FiLM's condition [B, D] -> [B, P, D] f32."""
        arrays = {"pixel_values": pixel_values}
        if film_input(self.settings.film, condition, pixel_values.shape[0]):
            arrays["condition"] = condition
        with torch.cuda.stream(self.stream):
            out = self._run("vision", self._inputs("vision", arrays))
            return self._to_host(out["patch_embeds"])

    def proprio(self, values: np.ndarray) -> np.ndarray:
        """OFT: normalized proprio [1, P] f32 -> one LLM token [1, 1, D] f32."""
        with torch.cuda.stream(self.stream):
            out = self._run("proprio", self._inputs("proprio", {"proprio": values}))
            return self._to_host(out["proprio_embeds"])

    def actions(self, inputs_embeds: np.ndarray) -> np.ndarray:
        """OFT sequence [1, L, D] -> normalized actions [1, K, A] f32 (discrete variant: ids [1, K*A] i64)."""
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[0] != 1:
            raise ValueError(f"actions takes [1, L, D] embeddings, got {inputs_embeds.shape}")
        with torch.cuda.stream(self.stream):
            out = self._run("actions", self._inputs("actions", {"inputs_embeds": inputs_embeds}))
            (result,) = out.values()
            return result.cpu().numpy() if result.dtype == torch.int64 else self._to_host(result)

    def embed(self, token_ids: np.ndarray) -> np.ndarray:
        """[1, T] int64 -> [1, T, D] f32."""
        ids_dtype = self._engine("embed").dtypes["token_ids"]
        with torch.cuda.stream(self.stream):
            out = self._run("embed", {"token_ids": self._to_device(token_ids.astype(np.int64), ids_dtype)})
            return self._to_host(out["embeds"])

    def prefill(self, inputs_embeds: np.ndarray) -> tuple[np.ndarray, TrtKv]:
        """[1, L, D] -> (logits [1, V] f32, K/V of length L in pool[L])."""
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[0] != 1:
            raise ValueError(f"prefill takes [1, L, D] embeddings, got {inputs_embeds.shape}")
        length = int(inputs_embeds.shape[1])
        with torch.cuda.stream(self.stream):
            kv = self._pool_buffers(length) if self.cuda_graphs else None
            outs = dict(zip(self.present_names, kv)) if kv else None
            dtype = self._engine("prefill").dtypes["inputs_embeds"]
            bound = self._run("prefill", {"inputs_embeds": self._to_device(inputs_embeds, dtype)}, outs)
            logits = self._to_host(bound["logits"])
        return logits, TrtKv([bound[n] for n in self.present_names], length)

    def decode(self, token_ids: np.ndarray, state: TrtKv) -> tuple[np.ndarray, TrtKv]:
        """One token [1, 1] + K/V of length P -> (logits [1, V] f32, K/V of length P + 1)."""
        self._engine("decode")  # a clear error for an OFT engine directory
        past = state.length
        if past + 1 > self.max_positions:
            raise ValueError(f"decoding past {self.max_positions} positions")
        with torch.cuda.stream(self.stream):
            token = torch.from_numpy(np.ascontiguousarray(token_ids, dtype=np.int64)).reshape(1, 1)
            self.token_buf.copy_(token)
            if not self.cuda_graphs:
                inputs = {"token_ids": self.token_buf, **dict(zip(self.past_names, state.tensors))}
                bound = self._run("decode", inputs, {"logits": self.logits_buf})
                present = [bound[n] for n in self.present_names]
            else:
                present = self._decode_graphed(state)
            return self._to_host(self.logits_buf), TrtKv(present, past + 1)

    # -- CUDA graphs -------------------------------------------------------------------------------
    def _pool_buffers(self, length: int) -> list[Any]:
        """The K/V buffers of one sequence length (allocated once; the pool is reset when full)."""
        if length not in self.pool.buffers:
            if len(self.pool.buffers) >= self.max_pool_lengths:
                self.stream.synchronize()
                self.pool = _Pool()  # drops every graph with the buffers it captured
            m = self.manifest["model"]
            shape = (1, int(m["num_kv_heads"]), length, int(m["head_dim"]))
            dtype = self.engines["decode"].dtypes[self.present_names[0]]
            self.pool.buffers[length] = [torch.empty(shape, dtype=dtype, device="cuda")
                                         for _ in self.present_names]
        return self.pool.buffers[length]

    def _decode_graphed(self, state: TrtKv) -> list[Any]:
        """Decode through the graph of this past length: capture after the first plain run, then replay."""
        past = state.length
        engine = self.engines["decode"]
        pool_in = self._pool_buffers(past)
        for src, dst in zip(state.tensors, pool_in):  # K/V from elsewhere: copy into stable buffers
            if src.data_ptr() != dst.data_ptr():
                dst.copy_(src)
        pool_out = self._pool_buffers(past + 1)
        if past not in self.pool.buffers:  # the pool was reset by allocating pool_out
            return self._decode_graphed(state)
        entry = self.pool.graphs.get(past)
        if entry is not None and entry.graph is not None:
            entry.graph.replay()
            self.graph_replays += 1
            return pool_out
        entry = _DecodeGraph(engine.new_context())
        inputs = {"token_ids": self.token_buf, **dict(zip(self.past_names, pool_in))}
        outputs = {"logits": self.logits_buf, **dict(zip(self.present_names, pool_out))}
        engine.bind(entry.context, inputs, outputs)
        engine.enqueue(entry.context, self.stream)  # the real result of this step; also settles the shapes
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                engine.enqueue(entry.context, self.stream)
            entry.graph = graph
        except Exception as exc:  # noqa: BLE001 - a capture failure only costs speed
            log.warning("CUDA graph capture of the decode step failed (%s); running without CUDA graphs", exc)
            self.cuda_graphs = False
            return pool_out
        self.pool.graphs[past] = entry
        return pool_out


def build_policy(cfg: PolicyConfig, checkpoint: Path) -> Policy:
    """factory.make_policy's builder for backend "tensorrt" (engines and manifest in policy.engine_dir)."""
    checked_manifest(cfg, checkpoint)
    return policy_for(checkpoint, TrtBackend(cfg.engine_dir), cfg)


def unavailable_reason() -> str | None:
    """Why this backend cannot run on this machine (no CUDA GPU, no TensorRT), or None."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    try:
        import_tensorrt()
    except BuildError as exc:
        return str(exc)
    return None
