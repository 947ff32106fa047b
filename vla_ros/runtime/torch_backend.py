"""The PyTorch backend: runs the stage modules of `vla_ros.model.stages` eagerly under inference_mode."""

from __future__ import annotations

import numpy as np
import torch

from vla_ros.model.stages import (
    DecodeStage,
    EmbedStage,
    PrefillStage,
    ProprioStage,
    VisionStage,
    action_stage,
)
from vla_ros.model.vla import VlaModel
from vla_ros.runtime.backend import KvState

DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class TorchBackend:
    """Backend over a loaded VlaModel (any device/dtype). K/V state: a tuple of torch tensors."""

    def __init__(self, model: VlaModel, name: str = "torch") -> None:
        model.eval()
        core = model.core
        self.name = name
        self.vision_stage = VisionStage(model).eval()
        self.settings = model.settings
        self.proprio_stage = ProprioStage(model).eval() if model.proprio_projector is not None else None
        self.action_stage = action_stage(model).eval() if model.settings.parallel else None
        self.embed_stage = EmbedStage(core).eval()
        self.prefill_stage = PrefillStage(core).eval()
        self.decode_stage = DecodeStage(core).eval()
        core.fuse_projections()
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.max_positions = core.max_positions

    def describe(self) -> str:
        return f"{self.name} {self.device.type} {DTYPE_NAMES.get(self.dtype, str(self.dtype))}"

    def _in(self, array: np.ndarray, float_input: bool = True) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(array))
        return t.to(self.device, self.dtype) if float_input else t.to(self.device)

    @staticmethod
    def _out(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    def vision(self, pixel_values: np.ndarray, condition: np.ndarray | None = None) -> np.ndarray:
        with torch.inference_mode():
            cond = None if condition is None else self._in(condition)
            return self._out(self.vision_stage(self._in(pixel_values), cond))

    def proprio(self, values: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self._out(self.proprio_stage(self._in(values)))

    def actions(self, inputs_embeds: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.action_stage(self._in(inputs_embeds))
            return out.cpu().numpy() if out.dtype == torch.int64 else self._out(out)

    def embed(self, token_ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self._out(self.embed_stage(self._in(token_ids.astype(np.int64), float_input=False)))

    def prefill(self, inputs_embeds: np.ndarray) -> tuple[np.ndarray, KvState]:
        with torch.inference_mode():
            logits, *present = self.prefill_stage(self._in(inputs_embeds))
            return self._out(logits), tuple(present)

    def decode(self, token_ids: np.ndarray, state: KvState) -> tuple[np.ndarray, KvState]:
        with torch.inference_mode():
            tokens = self._in(token_ids.astype(np.int64), float_input=False)
            logits, *present = self.decode_stage(tokens, *state)
            return self._out(logits), tuple(present)
