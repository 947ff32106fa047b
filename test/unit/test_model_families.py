"""Families: prompt format, BOS and trailing-token rules, resolution, registry."""

import pytest

from vla_ros.model.families import Family, families, get_family, register_family, resolve_family
from vla_ros.model.spec import CheckpointError, VlaSpec
from vla_ros.model.tiny import cached_tiny_checkpoint
from vla_ros.model.tokenizer import TextTokenizer

OPENVLA_PROMPT = "In: What action should the robot take to pick up the red block?\nOut:"


class FakeTokenizer:
    """Encodes a prompt to fixed ids; knows "<s>" = 1 and "▁" = 29871 (the Llama ids)."""

    def __init__(self, ids):
        self.ids = ids
        self.seen = []

    def encode(self, text):
        self.seen.append(text)
        return list(self.ids)

    def token_to_id(self, token):
        return {"<s>": 1, "\u2581": 29871}.get(token)

    def special_id(self, name, default=None):
        return self.token_to_id(default)


def test_openvla_prompt_text_and_lowercase():
    fam = get_family("openvla")
    assert fam.prompt("Pick up the RED block") == OPENVLA_PROMPT


def test_trailing_token_rule():
    fam = get_family("openvla")
    tok = FakeTokenizer([100, 200, 300])
    assert fam.prompt_ids(tok, "Pick up the red block") == [1, 100, 200, 300, 29871]
    assert tok.seen == [OPENVLA_PROMPT]
    already = FakeTokenizer([100, 29871])
    assert fam.prompt_ids(already, "x") == [1, 100, 29871]  # not appended twice


def test_tiny_openvla_prompt_ids():
    tok = TextTokenizer(cached_tiny_checkpoint())
    ids = get_family("openvla").prompt_ids(tok, "Pick up the red block")
    assert ids[0] == tok.token_to_id("<s>")
    assert ids[-1] == tok.token_to_id("\u2581") and ids[-2] != ids[-1]
    assert tok.encode(OPENVLA_PROMPT) == ids[1:-1]


def test_minivla_prompt_has_no_bos_and_no_trailing_token():
    tok = TextTokenizer(cached_tiny_checkpoint(family="minivla"))
    fam = get_family("minivla")
    text = fam.prompt("Pick up the red block")
    assert text.startswith("<|im_start|>system\nYou are Qwen")
    assert "<|im_start|>user\nWhat action should the robot take to pick up the red block?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = fam.prompt_ids(tok, "Pick up the red block")
    assert ids[0] == tok.token_to_id("<|im_start|>")
    assert ids == tok.encode(text)


def test_family_resolution():
    assert resolve_family(VlaSpec.from_dir(cached_tiny_checkpoint())).name == "openvla"
    assert resolve_family(VlaSpec.from_dir(cached_tiny_checkpoint(family="minivla"))).name == "minivla"
    raw = VlaSpec.from_dir(cached_tiny_checkpoint()).raw
    unknown = VlaSpec.from_dict({**raw, "text_config": {**raw["text_config"], "model_type": "mamba"}})
    with pytest.raises(CheckpointError, match="unknown VLA family.*mamba.*openvla"):
        resolve_family(unknown)
    with pytest.raises(CheckpointError, match="unknown VLA family 'nope'"):
        resolve_family(unknown, "nope")
    explicit = VlaSpec.from_dict({**raw, "vla_family": "minivla"})
    assert resolve_family(explicit).name == "minivla"


def test_adding_a_family_is_one_registration():
    fam = Family(name="test-gemma-vla", description="test",
                 llm_classes={"gemma": "transformers:GemmaForCausalLM"},
                 prompt_template="Q: {instruction}? A:", add_bos=True)
    register_family(fam)
    assert families()["test-gemma-vla"] is fam
    raw = VlaSpec.from_dir(cached_tiny_checkpoint()).raw
    cfg = VlaSpec.from_dict({**raw, "text_config": {**raw["text_config"], "model_type": "gemma"}})
    assert resolve_family(cfg) is fam
    assert fam.llm_class("gemma").__name__ == "GemmaForCausalLM"
    with pytest.raises(ValueError, match="registered twice"):
        register_family(Family(name="test-gemma-vla", description="", llm_classes={}, prompt_template=""))
    with pytest.raises(ValueError, match="action_mapping"):
        Family(name="x", description="", llm_classes={}, prompt_template="", action_mapping="fast")
