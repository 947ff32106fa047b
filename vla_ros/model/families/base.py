"""What makes a VLA family: LLM classes, prompt format, BOS/trailing-token rules, action-token mapping."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from vla_ros.model.action_tokenizer import ActionTokenizer, extra_tokens_tokenizer, last_ids_tokenizer
from vla_ros.model.spec import CheckpointError, VlaSpec

ACTION_MAPPINGS = ("last_ids", "extra_tokens")


@dataclass(frozen=True)
class Family:
    """A Prismatic-style VLA family.

    The towers and projector come from config.json (timm ids / tower_specs, fused or not); a family
    adds what config.json does not say: which transformers class runs each LLM `model_type`, the
    prompt, whether the family's tokenizer prepends BOS, the token appended when the tokenized prompt
    does not end with it (Llama's "▁", id 29871), and how action tokens map to ids. The projected
    patches always go right after the first prompt token (BOS for Llama).
    """

    name: str
    description: str
    llm_classes: dict[str, str]  # text_config.model_type -> "module:Class"
    prompt_template: str  # "{instruction}" is replaced by the lower-cased instruction
    add_bos: bool = True
    bos_token: str = "<s>"
    trailing_token: str | None = None
    action_mapping: str = "last_ids"
    extra_token_pattern: str = "<|extra_{i}|>"
    aliases: tuple[str, ...] = field(default_factory=tuple)
    explicit_only: bool = False  # chosen by name only (vla_settings.json), never by the LLM type

    def __post_init__(self) -> None:
        if self.action_mapping not in ACTION_MAPPINGS:
            raise ValueError(f"family {self.name}: action_mapping must be one of {ACTION_MAPPINGS}")

    def matches(self, cfg: VlaSpec) -> bool:
        """True when the checkpoint's LLM is one this family runs."""
        return not self.explicit_only and cfg.llm_model_type in self.llm_classes

    def llm_class(self, model_type: str) -> type:
        """The transformers causal-LM class for `model_type` (imported on demand)."""
        if model_type not in self.llm_classes:
            raise CheckpointError(f"family {self.name!r} has no LLM class for model_type {model_type!r} "
                                  f"(known: {sorted(self.llm_classes)})")
        module, _, cls = self.llm_classes[model_type].partition(":")
        return getattr(importlib.import_module(module), cls)

    def prompt(self, instruction: str) -> str:
        """The prompt text for an instruction (lower-cased, as the families were trained)."""
        return self.prompt_template.format(instruction=instruction.lower())

    def prompt_ids(self, tokenizer, instruction: str) -> list[int]:
        """Token ids of the prompt: [BOS] + prompt (+ trailing token when missing)."""
        ids = tokenizer.encode(self.prompt(instruction))
        if self.add_bos:
            bos = tokenizer.special_id("bos_token", self.bos_token)
            if bos is None:
                raise CheckpointError(f"family {self.name}: the tokenizer has no BOS {self.bos_token!r}")
            ids = [bos, *ids]
        if self.trailing_token is not None:
            trailing = tokenizer.token_to_id(self.trailing_token)
            if trailing is None:
                raise CheckpointError(f"family {self.name}: tokenizer lacks {self.trailing_token!r}")
            if not ids or ids[-1] != trailing:
                ids.append(trailing)
        if len(ids) < 2:
            raise ValueError("the prompt must have at least two tokens (the patches go after the first)")
        return ids

    def action_tokenizer(self, cfg: VlaSpec, tokenizer) -> ActionTokenizer:
        """The id <-> bin mapping of this family for this checkpoint."""
        if self.action_mapping == "extra_tokens":
            act = extra_tokens_tokenizer(tokenizer, cfg.n_action_bins, self.extra_token_pattern)
        else:
            if cfg.pad_to_multiple_of <= 0 and cfg.raw.get("pad_to_multiple_of") is None:
                raise CheckpointError("config.json: 'pad_to_multiple_of' is needed to find the action ids")
            act = last_ids_tokenizer(cfg.padded_vocab_size, cfg.pad_to_multiple_of, cfg.n_action_bins)
        if act.vocab_end > cfg.padded_vocab_size:
            raise CheckpointError(f"action ids up to {act.vocab_end - 1} exceed the LLM vocabulary "
                                  f"({cfg.padded_vocab_size})")
        return act


_REGISTRY: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Add a family (each family module calls this once at import)."""
    for name in (family.name, *family.aliases):
        if name in _REGISTRY and _REGISTRY[name] is not family:
            raise ValueError(f"VLA family {name!r} is registered twice")
        _REGISTRY[name] = family
    return family


def families() -> dict[str, Family]:
    """Name -> family (aliases included)."""
    return dict(_REGISTRY)


def get_family(name: str) -> Family:
    if name not in _REGISTRY:
        raise CheckpointError(f"unknown VLA family {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def resolve_family(cfg: VlaSpec, name: str | None = None) -> Family:
    """The family for a checkpoint: the explicit name (argument, then config.json 'vla_family'), else the
    one family that claims its LLM type."""
    explicit = name or cfg.family
    if explicit:
        return get_family(explicit)
    found = {f.name: f for f in _REGISTRY.values() if f.matches(cfg)}
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        kinds = {n: sorted(f.llm_classes) for n, f in _REGISTRY.items() if n == f.name}
        raise CheckpointError(f"unknown VLA family: no family runs LLM model_type {cfg.llm_model_type!r} "
                              f"(llm_backbone_id {cfg.llm_backbone_id!r}); families and their LLM types: "
                              f"{kinds}")
    raise CheckpointError(f"ambiguous VLA family: {sorted(found)} all claim this checkpoint; set "
                          f"'vla_family' in config.json")
