"""The LLM: a transformers causal LM (Llama, Qwen2, ...) and a lean KV-cached forward over its weights.

`LmCore` runs the decoder layers of the transformers model itself (same weights, same RMSNorm, MLP
and rotary tables) with the K/V cache as plain per-layer tensors instead of HF cache objects and
the attention mask as an explicit argument (`vla_ros.model.attention`): causal by default, so the
same code is the torch forward and the exported graph, and a bidirectional or padded forward is this
code with another mask. Its results equal the transformers forward (tested in test_model_llm.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig

from vla_ros.model.attention import attention
from vla_ros.model.spec import CheckpointError

DEFAULT_MAX_POSITIONS = 2048  # rotary table length; prompts are ~300 tokens for 224 px towers


def make_text_config(text_config: dict, attn_implementation: str = "sdpa"):
    """A transformers config object from config.json's `text_config` (no remote code)."""
    values = {k: v for k, v in text_config.items() if k not in ("model_type", "architectures", "auto_map")}
    model_type = text_config.get("model_type")
    try:
        cfg = AutoConfig.for_model(model_type, **values)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"text_config: cannot build a transformers config for model_type "
                              f"{model_type!r}: {exc}") from exc
    cfg._attn_implementation = attn_implementation
    return cfg


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' RMSNorm: float32 statistics, then the model dtype, times the weight."""
    if not torch.compiler.is_compiling():  # eager: one fused op (same values: float32 math inside)
        return weight * F.rms_norm(x, (x.shape[-1],), None, eps)
    x32 = x.float()  # traced for export: plain ops every ONNX opset and TensorRT parser knows
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


@dataclass
class _LayerPlan:
    """Direct references to one decoder layer's tensors (no nn.Module attribute lookups per step)."""

    in_norm: nn.Module
    post_norm: nn.Module
    in_w: torch.Tensor | None  # RMSNorm weight and eps (None: call the norm module)
    in_eps: float | None
    post_w: torch.Tensor | None
    post_eps: float | None
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor | None
    o_w: torch.Tensor
    o_b: torch.Tensor | None
    gate_up: torch.Tensor | None  # [2 * inter, D] when the MLP is gate/up/down without biases
    down_w: torch.Tensor | None
    act: object
    mlp: nn.Module


@dataclass
class _Plan:
    """Every tensor a forward uses: the layers, the final norm and head, the embedding table."""

    layers: list[_LayerPlan]
    norm: nn.Module
    norm_w: torch.Tensor | None
    norm_eps: float | None
    head_w: torch.Tensor
    head_b: torch.Tensor | None
    embed_w: torch.Tensor | None  # None: call the embedding module


def _norm_refs(norm: nn.Module) -> tuple[torch.Tensor | None, float | None]:
    """(weight, eps) of a transformers RMSNorm, (None, None) for other norms."""
    eps = getattr(norm, "variance_epsilon", None)
    weight = getattr(norm, "weight", None)
    return (weight, float(eps)) if eps is not None and weight is not None else (None, None)


def _plan_norm(x: torch.Tensor, module: nn.Module, weight: torch.Tensor | None, eps: float | None
               ) -> torch.Tensor:
    return module(x) if weight is None else _rms(x, weight, eps)


def _gate_up_mlp(mlp: nn.Module) -> bool:
    """A gate/up/down MLP without gate and up biases (its gate and up matrices fuse into one)."""
    return all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")) and \
        mlp.gate_proj.bias is None and mlp.up_proj.bias is None


def _fuse_rows(tensors: list[torch.Tensor], modules: list[nn.Module], name: str = "weight") -> torch.Tensor:
    """Concatenate along dim 0 and re-point each module's parameter to its slice of the result."""
    fused = torch.cat([t.detach() for t in tensors], dim=0)
    start = 0
    for t, module in zip(tensors, modules):
        n = t.shape[0]
        setattr(module, name, nn.Parameter(fused[start:start + n], requires_grad=t.requires_grad))
        start += n
    return fused


class LmCore(nn.Module):
    """Prefill / decode-step / full forward over a transformers CausalLM's weights with flat K/V tensors.

    K/V per layer: [B, n_kv_heads, T, head_dim] in the model dtype. Logits are float32. `mask` (bool,
    True = attend, or additive) broadcasts to [B, heads, S, T]; None is causal (`vla_ros.model.attention`).
    """

    def __init__(self, lm: nn.Module, max_positions: int | None = None) -> None:
        super().__init__()
        self.lm = lm
        cfg = lm.config
        self.num_layers = int(cfg.num_hidden_layers)
        self.num_heads = int(cfg.num_attention_heads)
        self.num_kv_heads = int(getattr(cfg, "num_key_value_heads", None) or self.num_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // self.num_heads)
        self.scaling = self.head_dim ** -0.5
        limit = int(getattr(cfg, "max_position_embeddings", DEFAULT_MAX_POSITIONS) or DEFAULT_MAX_POSITIONS)
        self.max_positions = min(limit, max_positions or DEFAULT_MAX_POSITIONS)
        window = getattr(cfg, "sliding_window", None)
        if getattr(cfg, "use_sliding_window", False) and window is not None and window < self.max_positions:
            raise CheckpointError(f"sliding-window attention ({window}) is not supported")
        self._plan: _Plan | None = None  # set by fuse_projections
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        if lm.model.embed_tokens.weight.device.type != "meta":
            self.refresh_rope()

    @torch.no_grad()
    def refresh_rope(self) -> None:
        """Tabulate cos/sin [max_positions, head_dim] with the model's own rotary module."""
        rotary = self.lm.model.rotary_emb
        device = self.lm.model.embed_tokens.weight.device
        positions = torch.arange(self.max_positions, device=device)[None]
        cos, sin = rotary(torch.zeros(1, device=device, dtype=torch.float32), positions)
        dtype = self.lm.model.embed_tokens.weight.dtype  # as transformers: float32 math, then model dtype
        self.rope_cos, self.rope_sin = cos[0].to(dtype), sin[0].to(dtype)

    @torch.no_grad()
    @torch.inference_mode(False)
    def fuse_projections(self) -> None:
        """q/k/v and gate/up weights as one matrix each (fewer, larger matmuls), and direct references
        to every tensor a step uses (no nn.Module lookups per step). Done once, on first use at the latest.

        The transformers modules keep working: their weights become views into the fused matrices,
        so no memory is duplicated. Call on a loaded model used for inference (a later `.to()` of the
        model would replace the views and leave the fused copies stale).
        """
        if self._plan is not None:
            return
        for i, layer in enumerate(self.lm.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            projs = [attn.q_proj, attn.k_proj, attn.v_proj]
            fused = {"qkv_weight": _fuse_rows([p.weight for p in projs], projs)}
            if all(p.bias is not None for p in projs):
                fused["qkv_bias"] = _fuse_rows([p.bias for p in projs], projs, "bias")
            if _gate_up_mlp(mlp):
                fused["gate_up_weight"] = _fuse_rows([mlp.gate_proj.weight, mlp.up_proj.weight],
                                                     [mlp.gate_proj, mlp.up_proj])
            for name, t in fused.items():  # buffers (not persistent): `_read_plan` reads them by name
                self.register_buffer(f"fused_{name}_{i}", t, persistent=False)
        self._plan = self._read_plan()

    def _read_plan(self) -> _Plan:
        """The tensors of the fused layers and the head, looked up once through the modules."""
        layers = []
        for i, layer in enumerate(self.lm.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            in_w, in_eps = _norm_refs(layer.input_layernorm)
            post_w, post_eps = _norm_refs(layer.post_attention_layernorm)
            qkv_w, qkv_b = getattr(self, f"fused_qkv_weight_{i}"), getattr(self, f"fused_qkv_bias_{i}", None)
            gate_up = getattr(self, f"fused_gate_up_weight_{i}", None)
            layers.append(_LayerPlan(
                in_norm=layer.input_layernorm, post_norm=layer.post_attention_layernorm, in_w=in_w,
                in_eps=in_eps, post_w=post_w, post_eps=post_eps, qkv_w=qkv_w, qkv_b=qkv_b,
                o_w=attn.o_proj.weight, o_b=attn.o_proj.bias, gate_up=gate_up,
                down_w=mlp.down_proj.weight if gate_up is not None else None,
                act=getattr(mlp, "act_fn", None), mlp=mlp))
        model = self.lm.model
        norm_w, norm_eps = _norm_refs(model.norm)
        embed_w = model.embed_tokens.weight if type(model.embed_tokens) is nn.Embedding else None
        return _Plan(layers=layers, norm=model.norm, norm_w=norm_w, norm_eps=norm_eps,
                     head_w=self.lm.lm_head.weight, head_b=self.lm.lm_head.bias, embed_w=embed_w)

    def _current_plan(self) -> _Plan:
        """The fused plan; read again while torch.export traces, so that the graph's weights are the
        named parameters and buffers (a tied embedding and head stay one initializer)."""
        if self._plan is None:
            self.fuse_projections()
        return self._read_plan() if torch.compiler.is_compiling() else self._plan

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """[B, S] int64 -> [B, S, D]."""
        weight = self._current_plan().embed_w
        return self.lm.model.embed_tokens(token_ids) if weight is None else F.embedding(token_ids, weight)

    def _layer(self, plan: _LayerPlan, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               mask: torch.Tensor | None, past_k: torch.Tensor | None, past_v: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder layer: h [B, S, D] -> (h, k, v) with k/v [B, Hkv, T, d] including the past."""
        b, s, _ = h.shape
        nh, nkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        x = _plan_norm(h, plan.in_norm, plan.in_w, plan.in_eps)
        qkv = F.linear(x, plan.qkv_w, plan.qkv_b).view(b, s, nh + 2 * nkv, hd).transpose(1, 2)
        qk = qkv[:, :nh + nkv]
        qk = qk * cos + rotate_half(qk) * sin  # one rotary pass for q and k together
        q, k, v = qk[:, :nh], qk[:, nh:], qkv[:, nh + nkv:]
        if past_k is not None:
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        else:
            k, v = k.contiguous(), v.contiguous()
        o = attention(q, k, v, mask, self.scaling)  # [B, nh, S, hd]
        h = h + F.linear(o.transpose(1, 2).reshape(b, s, nh * hd), plan.o_w, plan.o_b)
        x = _plan_norm(h, plan.post_norm, plan.post_w, plan.post_eps)
        if plan.gate_up is not None:
            g, u = F.linear(x, plan.gate_up).chunk(2, dim=-1)
            return h + F.linear(plan.act(g) * u, plan.down_w), k, v
        return h + plan.mlp(x), k, v

    def _rope(self, start: int | torch.SymInt, length: int | torch.SymInt, dtype: torch.dtype
              ) -> tuple[torch.Tensor, torch.Tensor]:
        cos = self.rope_cos.narrow(0, start, length).to(dtype)
        sin = self.rope_sin.narrow(0, start, length).to(dtype)
        return cos, sin

    def _run(self, h: torch.Tensor, past: list[torch.Tensor] | None, mask: torch.Tensor | None,
             last_only: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """h [B, S, D] after `past` (T positions) -> (float32 logits, K/V of length T + S)."""
        plan = self._current_plan()
        s = h.shape[1]
        start = 0 if past is None else past[0].shape[2]
        cos, sin = self._rope(start, s, h.dtype)
        present: list[torch.Tensor] = []
        for i, layer in enumerate(plan.layers):
            pk = None if past is None else past[2 * i]
            pv = None if past is None else past[2 * i + 1]
            h, k, v = self._layer(layer, h, cos, sin, mask, pk, pv)
            present += [k, v]
        if last_only:
            h = h[:, -1:]
        h = _plan_norm(h, plan.norm, plan.norm_w, plan.norm_eps)
        return self.logits(h), present

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Normed last hidden states [B, S, D] -> float32 logits [B, S, V] (the LM head)."""
        plan = self._current_plan()
        return F.linear(hidden, plan.head_w, plan.head_b).float()

    def hidden_all(self, inputs_embeds: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden states after the final norm [B, S, D] at every position (OFT's head input)."""
        plan = self._current_plan()
        s = inputs_embeds.shape[1]
        cos, sin = self._rope(0, s, inputs_embeds.dtype)
        h = inputs_embeds
        for layer in plan.layers:
            h, _, _ = self._layer(layer, h, cos, sin, mask, None, None)
        return _plan_norm(h, plan.norm, plan.norm_w, plan.norm_eps)

    def prefill(self, inputs_embeds: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """[B, S, D] -> (last-position logits [B, V], [k_0, v_0, k_1, v_1, ...])."""
        logits, present = self._run(inputs_embeds, None, mask, last_only=True)
        return logits[:, -1], present

    def decode(self, token_ids: torch.Tensor, past: list[torch.Tensor], mask: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One token [B, 1] + past [k_0, v_0, ...] (length T) -> (logits [B, V], present of length T + 1)."""
        logits, present = self._run(self.embed(token_ids), past, mask, last_only=True)
        return logits[:, -1], present

    def forward_all(self, inputs_embeds: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at every position [B, S, V] without a cache (reference, teacher forcing; with
        `bidirectional_mask(S, S)` OFT's parallel pass)."""
        return self.logits(self.hidden_all(inputs_embeds, mask))
