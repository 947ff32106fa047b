"""The checkpoint's text tokenizer: tokenizer.json (the Rust `tokenizers` library that transformers'
fast tokenizers wrap) or, without one, SentencePiece's tokenizer.model. No remote code.

`encode` never adds special tokens: the family decides about BOS (Llama prepends `<s>`, Qwen has
none), so the ids are the same whatever the tokenizer's post-processor says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vla_ros.model.spec import CheckpointError, read_json


def _token_text(value: Any) -> str | None:
    """A special-token entry of tokenizer_config.json: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class TextTokenizer:
    """encode(text) -> ids without special tokens; token <-> id lookups; len() counts added tokens."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path
        self._settings = self._read_json(path / "tokenizer_config.json")
        special = self._read_json(path / "special_tokens_map.json")
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            self._settings.setdefault(key, special.get(key))
        self._hf = None
        self._sp = None
        self._added: dict[str, int] = {}
        if (path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer  # lazy: only checkpoints with tokenizer.json need it

            try:
                self._hf = Tokenizer.from_file(str(path / "tokenizer.json"))
            except Exception as exc:  # the Rust library raises its own exception type
                raise CheckpointError(f"{path / 'tokenizer.json'}: cannot load: {exc}") from exc
        elif (path / "tokenizer.model").is_file():
            import sentencepiece  # lazy: optional, only for tokenizer.model checkpoints

            try:
                self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))
            except (OSError, RuntimeError) as exc:
                raise CheckpointError(f"{path / 'tokenizer.model'}: cannot load: {exc}") from exc
            added = self._read_json(path / "added_tokens.json")
            self._added = {str(k): int(v) for k, v in added.items()}
        else:
            raise CheckpointError(f"{path}: no tokenizer.json or tokenizer.model")

    @staticmethod
    def _read_json(file: Path) -> dict[str, Any]:
        if not file.is_file():
            return {}
        data = read_json(file)
        return data if isinstance(data, dict) else {}

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no BOS/EOS."""
        if self._hf is not None:
            return list(self._hf.encode(text, add_special_tokens=False).ids)
        return list(self._sp.encode(text))

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string (vocabulary or added token), None when absent."""
        if self._hf is not None:
            return self._hf.token_to_id(token)
        if token in self._added:
            return self._added[token]
        i = self._sp.piece_to_id(token)
        return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else int(i)

    def id_to_token(self, token_id: int) -> str | None:
        if self._hf is not None:
            return self._hf.id_to_token(int(token_id))
        for tok, i in self._added.items():
            if i == token_id:
                return tok
        if 0 <= token_id < self._sp.get_piece_size():
            return self._sp.id_to_piece(int(token_id))
        return None

    def __len__(self) -> int:
        """Vocabulary including added tokens (transformers' len(tokenizer))."""
        if self._hf is not None:
            return int(self._hf.get_vocab_size(with_added_tokens=True))
        return max([self._sp.get_piece_size() - 1, *self._added.values()]) + 1

    def special_id(self, name: str, default: str | None = None) -> int | None:
        """Id of the configured special token `name` ("bos_token", "eos_token", ...)."""
        text = _token_text(self._settings.get(name)) or default
        return None if text is None else self.token_to_id(text)
