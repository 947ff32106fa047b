"""The whole VLA as one nn.Module, with state-dict names of the released OpenVLA checkpoints.

Training (teacher forcing), used by the demo trainer:

    out = model(pixel_values, input_ids, labels=labels)
    out.loss.backward()

`input_ids` [B, S] are the prompt ids (BOS first, as `Family.prompt_ids` gives them) followed by the
action ids (`ActionTokenizer.encode`) and, optionally, an end token; `labels` [B, S] are -100 for the
prompt and the ids for the positions to learn. The patches are spliced after the first token and
get -100; the loss is the usual next-token cross entropy. `out.logits` [B, 1 + P + S - 1, V] follow
the spliced sequence; `action_logits(out.logits, n)` picks the logits that predict the last n ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vla_ros.model.llm import LmCore, make_text_config
from vla_ros.model.oft import L1RegressionHead, ProprioProjector
from vla_ros.model.projector import make_projector
from vla_ros.model.settings import VlaSettings
from vla_ros.model.spec import VlaSpec
from vla_ros.model.vision import VisionBackbone

IGNORE_INDEX = -100


@dataclass
class VlaOutput:
    """logits [B, L, V] over the spliced sequence; loss when labels were given; with `hidden=True`
    also the projected patches [B, P, H] and the LM's last hidden states [B, L, H] (training aids)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    patches: torch.Tensor | None = None
    layers: tuple[torch.Tensor, ...] | None = None  # embeddings, each decoder layer's output, the last normed
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer [B, heads, L, L] (eager attention only)

    @property
    def hidden(self) -> torch.Tensor | None:
        """The LM's last (normed) hidden states [B, L, H]."""
        return None if self.layers is None else self.layers[-1]


class VlaModel(nn.Module):
    """Vision backbone (1-2 truncated timm towers) -> projector -> transformers causal LM."""

    def __init__(self, cfg: VlaSpec, llm_class: type, attn_implementation: str = "sdpa",
                 settings: VlaSettings | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.settings = settings or VlaSettings()
        s = self.settings
        self.vision_backbone = VisionBackbone(cfg, film=s.film)
        self.projector = make_projector(cfg.n_towers == 2, cfg.vision_dim, cfg.llm_hidden)
        self.language_model = llm_class(make_text_config(cfg.text_config, attn_implementation))
        # OpenVLA-OFT's extra modules (names as OFT's component files, without DDP's "module.")
        self.action_head = (L1RegressionHead(cfg.llm_hidden, s.action_dim)
                            if s.action_head == "l1_regression" else None)
        self.proprio_projector = ProprioProjector(cfg.llm_hidden, s.proprio_dim) if s.proprio_dim else None
        self.__dict__["_core"] = None  # LmCore, kept out of the module tree (no duplicate state keys)

    @property
    def tied_embeddings(self) -> bool:
        return bool(getattr(self.language_model.config, "tie_word_embeddings", False))

    @property
    def core(self) -> LmCore:
        """The lean KV-cached forward over `language_model`'s weights (built on first use)."""
        core = self.__dict__["_core"]
        if core is None or core.lm is not self.language_model:
            core = LmCore(self.language_model)
            self.__dict__["_core"] = core
        return core

    def patch_embeddings(self, pixel_values: torch.Tensor, condition: torch.Tensor | None = None
                         ) -> torch.Tensor:
        """[B, 3 * n_towers, H, W] (+ FiLM's vector [B, D_llm]) -> projected patches [B, P, D_llm]."""
        return self.projector(self.vision_backbone(pixel_values, condition))

    def splice(self, token_embeds: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """[first token, patches, rest of the prompt] along the sequence (see `spliced_index`)."""
        return torch.cat([token_embeds[:, :1], patches, token_embeds[:, 1:]], dim=1)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                hidden: bool = False, attentions: bool = False) -> VlaOutput:
        """Teacher-forced forward through transformers' own LM forward (padding via attention_mask)."""
        patches = self.patch_embeddings(pixel_values)
        embeds = self.splice(self.language_model.get_input_embeddings()(input_ids), patches)
        mask = None
        if attention_mask is not None:
            ones = torch.ones(patches.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
            mask = self.splice(attention_mask[..., None], ones[..., None])[..., 0]
        extra = {"output_attentions": True} if attentions else {}
        out = self.language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False,
                                  output_hidden_states=hidden, **extra)
        logits = out.logits
        loss = None
        if labels is not None:
            ignore = torch.full(patches.shape[:2], IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
            full = self.splice(labels[..., None], ignore[..., None])[..., 0]
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), full[:, 1:].flatten(),
                                   ignore_index=IGNORE_INDEX)
        if hidden:
            return VlaOutput(logits=logits, loss=loss, patches=patches, layers=tuple(out.hidden_states),
                             attentions=tuple(out.attentions) if attentions else None)
        return VlaOutput(logits=logits, loss=loss)


def spliced_index(token_index: int, n_patches: int) -> int:
    """Where token `token_index` of the prompt sits once `VlaModel.splice` put the patches after the first."""
    return token_index if token_index == 0 else token_index + n_patches


def action_logits(logits: torch.Tensor, n_actions: int) -> torch.Tensor:
    """From spliced-sequence logits [B, L, V], the ones that predict the last n ids: [B, n, V]."""
    return logits[:, -n_actions - 1:-1]
