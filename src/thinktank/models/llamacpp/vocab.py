"""A GGUF model's tokenizer and chat template, through llama.cpp's vocabulary API."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from functools import cache, lru_cache

import llama_cpp as llama
import numpy as np

from thinktank.errors import ThinktankError
from thinktank.models.decoding import top_logprobs


class Vocabulary:
    """Text to token ids and back, for one loaded model (``name`` in its errors).

    ``template`` is the model's chat template (None: a base model); ``eog`` marks
    the tokens that end a generation.
    """

    def __init__(self, model: llama.llama_model_p, name: str, template: bytes | None) -> None:
        self.name = name
        self.template = template
        self._vocab = llama.llama_model_get_vocab(model)
        self.size = llama.llama_vocab_n_tokens(self._vocab)
        self._bos_text = self.piece(llama.llama_vocab_bos(self._vocab), special=True).decode(
            "utf-8", errors="replace"
        )
        self.eog = np.array(
            [llama.llama_vocab_is_eog(self._vocab, t) for t in range(self.size)], dtype=bool
        )

    def apply_template(self, messages: Sequence[tuple[str, str]]) -> str:
        """(role, content) pairs rendered by the chat template, up to the assistant's turn."""
        array = (llama.llama_chat_message * len(messages))()
        keep = []  # the encoded strings must outlive the call
        for slot, (role, content) in zip(array, messages, strict=True):
            keep.append((role.encode(), content.encode()))
            slot.role, slot.content = keep[-1]
        size = 4 * sum(len(c) + len(r) for r, c in keep) + 1024
        for _ in range(2):
            buffer = ctypes.create_string_buffer(size)
            written = llama.llama_chat_apply_template(
                self.template, array, len(messages), True, buffer, size
            )
            if written < 0:
                raise ThinktankError(f"{self.name}: llama.cpp does not support its chat template")
            if written <= size:
                return buffer.raw[:written].decode("utf-8")
            size = written + 1
        raise ThinktankError(f"{self.name}: chat template rendering failed")

    @lru_cache(maxsize=256)  # noqa: B019 - the model lives as long as the process
    def tokenize(self, text: str) -> tuple[int, ...]:
        """The token ids of ``text``, with a BOS token first unless it starts with one."""
        data = text.encode("utf-8")
        add_bos = not (self._bos_text and text.startswith(self._bos_text))
        capacity = len(data) + 8
        buffer = (llama.llama_token * capacity)()
        count = llama.llama_tokenize(self._vocab, data, len(data), buffer, capacity, add_bos, True)
        if count < 0:  # buffer too small: -count is the size needed
            capacity = -count
            buffer = (llama.llama_token * capacity)()
            count = llama.llama_tokenize(
                self._vocab, data, len(data), buffer, capacity, add_bos, True
            )
        return tuple(buffer[:count])

    @cache  # noqa: B019 - bounded by the vocabulary
    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (a special token's text only when ``special``)."""
        buffer = ctypes.create_string_buffer(64)
        size = llama.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
        if size > 64:
            buffer = ctypes.create_string_buffer(size)
            size = llama.llama_token_to_piece(self._vocab, token, buffer, size, 0, special)
        return buffer.raw[: max(size, 0)]

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in token_ids).decode("utf-8", errors="replace")

    def top_logprobs(self, logits: np.ndarray, k: int) -> dict[str, float]:
        return top_logprobs(logits, k, self.piece)
