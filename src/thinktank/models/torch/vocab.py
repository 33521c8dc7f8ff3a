"""A Hugging Face tokenizer as the torch backend reads it: token ids, and each
token's bytes (what a sample's text is made of)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property

import numpy as np

from thinktank.models.base import Message
from thinktank.models.decoding import top_logprobs


class Vocabulary:
    """The tokenizer of a model whose network scores ``size`` tokens; ``eog`` marks the
    special tokens, which end a generation."""

    def __init__(self, tokenizer: object, size: int) -> None:
        self._tokenizer = tokenizer
        self.size = size
        self.eog = np.zeros(size, dtype=bool)
        self.eog[list(tokenizer.all_special_ids)] = True

    def apply_template(self, messages: Sequence[Message]) -> str:
        """The messages rendered by the chat template, up to the assistant's turn."""
        return self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def tokenize(self, text: str) -> list[int]:
        return self._tokenizer(text, add_special_tokens=False).input_ids

    @cached_property
    def _pieces(self) -> list[bytes]:
        """Each token's bytes: through the byte alphabet of a byte-level BPE vocabulary
        (SmolLM2, Llama 3), else SentencePiece's ("▁" a space, "<0x0A>" a byte)."""
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        to_byte = {c: b for b, c in bytes_to_unicode().items()}
        byte_level = "ByteLevel" in type(self._tokenizer.backend_tokenizer.decoder).__name__
        pieces = []
        for token in self._tokenizer.convert_ids_to_tokens(range(self.size)):
            token = token or ""
            if byte_level and all(c in to_byte for c in token):
                pieces.append(bytes(to_byte[c] for c in token))
            elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
                pieces.append(bytes([int(token[3:5], 16)]))
            else:  # a special token, or a SentencePiece piece
                pieces.append(token.replace("▁", " ").encode())
        return pieces

    def piece(self, token: int) -> bytes:
        return self._pieces[token]

    def decode(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def top_logprobs(self, logits: np.ndarray, k: int) -> dict[str, float]:
        return top_logprobs(logits, k, self.piece)
