"""The checkpoint tokenizer: tokenizer.json (Rust tokenizers) and the SentencePiece fallback."""

import json

import pytest

from vla_ros.model.families import get_family
from vla_ros.model.spec import CheckpointError
from vla_ros.model.tiny import cached_tiny_checkpoint, tiny_corpus
from vla_ros.model.tokenizer import TextTokenizer


def test_tokenizer_json():
    tok = TextTokenizer(cached_tiny_checkpoint())
    assert tok.special_id("bos_token") == tok.token_to_id("<s>") == 1
    assert tok.token_to_id("<PAD>") == len(tok) - 1
    assert tok.token_to_id("no such token") is None
    ids = tok.encode("pick up the red block")
    assert ids and tok.special_id("bos_token") not in ids  # no special tokens added by encode
    assert tok.id_to_token(ids[0]).startswith("\u2581")


def test_sentencepiece_fallback(tmp_path):
    sentencepiece = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(tiny_corpus()))
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=120, model_type="bpe",
        character_coverage=1.0, user_defined_symbols=["\u2581"], minloglevel=2)
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<PAD>": 120}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "add_bos_token": True}))
    tok = TextTokenizer(tmp_path)
    assert len(tok) == 121 and tok.token_to_id("<PAD>") == 120
    assert tok.special_id("bos_token") == 1
    ids = get_family("openvla").prompt_ids(tok, "Pick up the red block")
    assert ids[0] == 1 and ids[-1] == tok.token_to_id("\u2581")
    assert tok.token_to_id("definitely-not-a-piece") is None
    assert tok.id_to_token(120) == "<PAD>"


def test_no_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer.json or tokenizer.model"):
        TextTokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="cannot load"):
        TextTokenizer(tmp_path)
