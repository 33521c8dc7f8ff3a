"""`LlamaCppModel`: a GGUF model loaded by llama.cpp in this process, its calls
batched by a `Scheduler` over the context's `KVCells`."""

from __future__ import annotations

import atexit
import ctypes
import os
import secrets
import threading
import weakref
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import llama_cpp as llama

from thinktank.config import threads
from thinktank.errors import ThinktankError
from thinktank.models.base import (
    BACKEND_CAPABILITIES,
    Completion,
    Price,
    ProgressCallback,
    Prompt,
    PruneRule,
    Sampling,
    TextCallback,
    split_reply,
)
from thinktank.models.decoding import CallState, SampleState
from thinktank.models.llamacpp.kv import MAX_CONTEXT_CELLS, DecodeStats, KVCells
from thinktank.models.llamacpp.scheduler import Request, Scheduler
from thinktank.models.llamacpp.vocab import Vocabulary

#: Prompts kept in the KV cache for reuse, by default.
PREFIX_CACHE_ENTRIES = 8
_backend_lock = threading.Lock()
_backend_ready = False


@llama.llama_log_callback
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp's load-time chatter would bury thinktank's own output."""


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama.llama_backend_init()
            if not os.environ.get("THINKTANK_DEBUG"):
                llama.llama_log_set(_quiet_log, ctypes.c_void_p(0))
            atexit.register(_close_all)
            _backend_ready = True


_open_models: weakref.WeakSet[LlamaCppModel] = weakref.WeakSet()


def _close_all() -> None:
    """At exit, stop every scheduler thread before llama.cpp's memory goes away."""
    for model in list(_open_models):
        model.close()


class LlamaCppModel:
    """A GGUF model served by llama.cpp in this process.

    Thread-safe: concurrent `generate` calls are batched together by one
    scheduler thread (see the package docstring). ``prefix_cache`` is how many
    recent prompts stay in the KV cache for reuse (0 turns the cache off).
    ``kv_streams`` gives each sequence a KV stream of its own, so that a seeded
    call samples the same whatever runs beside it (on SmolLM2; see the package
    docstring); False shares one unified KV cache instead (half the memory, at
    most a few percent faster, samples that depend on what ran beside them).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str,
        chat: bool,
        price: Price | None = None,
        n_threads: int | None = None,
        prefix_cache: int = PREFIX_CACHE_ENTRIES,
        kv_streams: bool = True,
    ) -> None:
        if prefix_cache < 0:
            raise ValueError("prefix_cache must be >= 0")
        self.path = Path(path)
        if not self.path.is_file():
            raise ThinktankError(f"model file not found: {self.path}")
        _init_backend()
        params = llama.llama_model_default_params()
        params.n_gpu_layers = 0
        self._model = llama.llama_model_load_from_file(str(self.path).encode(), params)
        if not self._model:
            raise ThinktankError(f"llama.cpp could not load {self.path}")
        self.n_params = llama.llama_model_n_params(self._model)
        self.n_ctx_train = llama.llama_model_n_ctx_train(self._model)
        self.name = name
        self.capabilities = replace(BACKEND_CAPABILITIES["llama.cpp"], chat=chat)
        self.price = price or Price(0.0, 0.0)
        template = llama.llama_model_chat_template(self._model, None) if chat else None
        if chat and not template:
            raise ThinktankError(f"{self.path.name} has no chat template; load it with chat=False")
        self._vocabulary = Vocabulary(self._model, name, template)
        self.n_vocab = self._vocabulary.size
        self.stats = DecodeStats()
        self._cells = KVCells(self._model, n_vocab=self.n_vocab, n_threads=n_threads or threads(),
                              streams=kv_streams, prefix_cache=prefix_cache,
                              stats=self.stats)  # fmt: skip
        self._scheduler = Scheduler(self._cells, self._vocabulary, self.stats, name)
        _open_models.add(self)

    def __repr__(self) -> str:
        return f"LlamaCppModel(name={self.name!r}, path={str(self.path)!r})"

    def close(self) -> None:
        """Stop the scheduler (after the calls in flight) and free llama.cpp's memory."""
        if self._scheduler.close() and self._model is not None:
            llama.llama_model_free(self._model)
            self._model = None

    # -- prompts -------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The exact text that is tokenized: chat messages go through the model's template.

        A final assistant message is continued: the messages before it are rendered
        up to the assistant's turn and its content is appended as is.
        """
        if isinstance(prompt, str):
            return prompt
        if not self.capabilities.chat:
            raise ThinktankError(
                f"{self.name} is a base model without a chat template: give it a text prompt"
            )
        messages, reply = split_reply(prompt)
        pairs = tuple((m["role"], m["content"]) for m in messages)
        return self._vocabulary.apply_template(pairs) + reply

    def tokenize(self, text: str) -> tuple[int, ...]:
        """The token ids of ``text`` (a rendered prompt), a BOS token first."""
        return self._vocabulary.tokenize(text)

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self.tokenize(self.render(prompt)))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids`` as a completion made of them reads: a seeded sample's
        first m tokens are what ``max_tokens=m`` would have drawn, so this gives it."""
        return self._vocabulary.detokenize(token_ids)

    # -- generation ----------------------------------------------------------

    def generate(
        self,
        prompt: Prompt,
        n: int = 1,
        sampling: Sampling | None = None,
        *,
        deadline: float | None = None,
        progress: ProgressCallback | None = None,
        prune: PruneRule | None = None,
        on_text: TextCallback | None = None,
    ) -> list[Completion]:
        sampling = sampling or Sampling()
        if n < 1:
            raise ValueError("n must be >= 1")
        prompt_ids = self.tokenize(self.render(prompt))
        max_tokens = min(sampling.max_tokens, self.n_ctx_train - len(prompt_ids))
        if max_tokens < 1:
            raise ThinktankError(
                f"the prompt has {len(prompt_ids)} tokens; {self.name} holds {self.n_ctx_train}"
            )
        if len(prompt_ids) + max_tokens > MAX_CONTEXT_CELLS:
            raise ThinktankError(f"prompt plus max_tokens exceed {MAX_CONTEXT_CELLS} tokens")
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
        call = CallState(sampling=sampling, max_tokens=max_tokens, deadline=deadline,
                         progress=progress, prune=prune, on_text=on_text,
                         prompt_ids=prompt_ids, vocab_size=self.n_vocab)  # fmt: skip
        requests = self._requests(prompt_ids, call, n, seed)
        self._scheduler.run(requests)
        return [
            seq.completion(len(prompt_ids), seed, request.cached_tokens)
            for request in requests
            for seq in request.sequences
        ]

    def _requests(
        self, prompt_ids: tuple[int, ...], call: CallState, n: int, seed: int
    ) -> list[Request]:
        """The call's ``n`` samples, in requests of as many as a context has room for."""
        per_request = self._cells.sequences_per_request(len(prompt_ids), call.max_tokens)
        first = call.sampling.sample_offset
        return [
            Request(
                prompt_ids=prompt_ids,
                sequences=[
                    SampleState.seeded(i, seed)
                    for i in range(first + start, first + min(n, start + per_request))
                ],
                call=call,
            )
            for start in range(0, n, per_request)
        ]
