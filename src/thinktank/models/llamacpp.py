"""The embedded backend: GGUF models through llama.cpp's low-level API.

``generate(prompt, n)`` prefills the prompt once for all ``n`` sequences (each
prompt token carries every sequence id, so the unified KV cache stores it once)
and then decodes the ``n`` sequences together, one batch per step. Sampling is
vectorized numpy over the batch's logits; each sample has its own random
generator seeded from ``(seed, sample index)``, so a seed fixes the output.
"""

from __future__ import annotations

import ctypes
import math
import os
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import llama_cpp as llama
import numpy as np

from thinktank.errors import ThinktankError
from thinktank.models.base import (
    Capabilities,
    Completion,
    FinishReason,
    Price,
    ProgressCallback,
    Prompt,
    Sampling,
)

#: Sequences decoded in one batch at most; larger ``n`` is decoded in waves.
MAX_BATCH_SEQUENCES = 64
#: KV cells one context may hold (memory: about 23 kB a cell for SmolLM2-135M).
MAX_CONTEXT_CELLS = 32768
#: Top-p first looks for the nucleus among this many most likely tokens (cheap),
#: and sorts the whole vocabulary only when they do not reach ``top_p``.
_NUCLEUS_PROBE = 64

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
            _backend_ready = True


@dataclass
class DecodeStats:
    """Work done by llama.cpp since the model was loaded (shows batching at work)."""

    prefill_tokens: int = 0  # prompt tokens decoded (once per wave, however large n is)
    decode_batches: int = 0  # llama_decode calls after the prefill, one per step
    sampled_tokens: int = 0


@dataclass
class _Sequence:
    """Decoding state of one sample."""

    index: int  # which of the n samples: seeds its random generator
    slot: int  # its sequence id in the KV cache during this wave
    rng: np.random.Generator
    tokens: list[int]
    logprobs: list[float]
    text: bytearray
    finish: FinishReason | None = None
    stop_at: int | None = None  # character offset where a stop string begins


class LlamaCppModel:
    """A GGUF model served by llama.cpp in this process.

    Thread-safe: concurrent `generate` calls are serialized on one lock.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str,
        chat: bool,
        price: Price | None = None,
        n_threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ThinktankError(f"model file not found: {self.path}")
        _init_backend()
        params = llama.llama_model_default_params()
        params.n_gpu_layers = 0
        self._model = llama.llama_model_load_from_file(str(self.path).encode(), params)
        if not self._model:
            raise ThinktankError(f"llama.cpp could not load {self.path}")
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.n_vocab = llama.llama_vocab_n_tokens(self._vocab)
        self.n_params = llama.llama_model_n_params(self._model)
        self.n_ctx_train = llama.llama_model_n_ctx_train(self._model)
        self.name = name
        self.capabilities = Capabilities(chat=chat, logprobs=True, batched=True)
        self.price = price or Price(0.0, 0.0)
        self._n_threads = n_threads or os.cpu_count() or 1
        self._template = llama.llama_model_chat_template(self._model, None) if chat else None
        if chat and not self._template:
            raise ThinktankError(f"{self.path.name} has no chat template; load it with chat=False")
        self._bos_text = self._piece(llama.llama_vocab_bos(self._vocab), special=True).decode(
            "utf-8", errors="replace"
        )
        self._eog = np.array(
            [llama.llama_vocab_is_eog(self._vocab, t) for t in range(self.n_vocab)], dtype=bool
        )
        self._ctx = None
        self._ctx_cells = 0
        self._ctx_seqs = 0
        self._lock = threading.Lock()
        self.stats = DecodeStats()

    def __repr__(self) -> str:
        return f"LlamaCppModel(name={self.name!r}, path={str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                llama.llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                llama.llama_model_free(self._model)
                self._model = None

    # -- prompts -------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The exact text that is tokenized: chat messages go through the model's template."""
        if isinstance(prompt, str):
            return prompt
        if not self.capabilities.chat:
            raise ThinktankError(
                f"{self.name} is a base model without a chat template: give it a text prompt"
            )
        return self._apply_template(tuple((m["role"], m["content"]) for m in prompt))

    def _apply_template(self, messages: Sequence[tuple[str, str]]) -> str:
        array = (llama.llama_chat_message * len(messages))()
        keep = []  # the encoded strings must outlive the call
        for slot, (role, content) in zip(array, messages, strict=True):
            keep.append((role.encode(), content.encode()))
            slot.role, slot.content = keep[-1]
        size = 4 * sum(len(c) + len(r) for r, c in keep) + 1024
        for _ in range(2):
            buffer = ctypes.create_string_buffer(size)
            written = llama.llama_chat_apply_template(
                self._template, array, len(messages), True, buffer, size
            )
            if written < 0:
                raise ThinktankError(f"{self.name}: llama.cpp does not support its chat template")
            if written <= size:
                return buffer.raw[:written].decode("utf-8")
            size = written + 1
        raise ThinktankError(f"{self.name}: chat template rendering failed")

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self._tokenize(self.render(prompt)))

    @lru_cache(maxsize=256)  # noqa: B019 - the model lives as long as the process
    def _tokenize(self, text: str) -> tuple[int, ...]:
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
    def _piece(self, token: int, special: bool = False) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        size = llama.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
        if size > 64:
            buffer = ctypes.create_string_buffer(size)
            size = llama.llama_token_to_piece(self._vocab, token, buffer, size, 0, special)
        return buffer.raw[: max(size, 0)]

    # -- generation ----------------------------------------------------------

    def generate(
        self,
        prompt: Prompt,
        n: int = 1,
        sampling: Sampling | None = None,
        *,
        deadline: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[Completion]:
        sampling = sampling or Sampling()
        if n < 1:
            raise ValueError("n must be >= 1")
        prompt_ids = self._tokenize(self.render(prompt))
        max_tokens = min(sampling.max_tokens, self.n_ctx_train - len(prompt_ids))
        if max_tokens < 1:
            raise ThinktankError(
                f"the prompt has {len(prompt_ids)} tokens; {self.name} holds {self.n_ctx_train}"
            )
        if len(prompt_ids) + max_tokens > MAX_CONTEXT_CELLS:
            raise ThinktankError(f"prompt plus max_tokens exceed {MAX_CONTEXT_CELLS} tokens")
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
        wave = min(MAX_BATCH_SEQUENCES, n, (MAX_CONTEXT_CELLS - len(prompt_ids)) // max_tokens)
        done: list[Completion] = []
        with self._lock:
            for start in range(0, n, wave):
                sequences = [
                    _Sequence(i, i - start, np.random.default_rng([seed, i]), [], [], bytearray())
                    for i in range(start, min(n, start + wave))
                ]
                earlier = sum(c.completion_tokens for c in done)
                wave_progress = None if progress is None else (lambda t, e=earlier: progress(e + t))
                self._decode(prompt_ids, sequences, sampling, max_tokens, deadline, wave_progress)
                done += [self._completion(s, len(prompt_ids), seed) for s in sequences]
        return done

    def _completion(self, seq: _Sequence, prompt_tokens: int, seed: int) -> Completion:
        text = seq.text.decode("utf-8", errors="replace")
        if seq.stop_at is not None:
            text = text[: seq.stop_at]
        return Completion(
            text=text,
            token_ids=tuple(seq.tokens),
            logprobs=tuple(seq.logprobs),
            finish_reason=seq.finish or "length",
            prompt_tokens=prompt_tokens,
            seed=seed,
        )

    def _ensure_context(self, cells: int, sequences: int) -> None:
        if self._ctx is not None and self._ctx_cells >= cells and self._ctx_seqs >= sequences:
            return
        if self._ctx is not None:
            llama.llama_free(self._ctx)
            self._ctx = None
        cells = min(MAX_CONTEXT_CELLS, max(4096, 1 << math.ceil(math.log2(cells))))
        sequences = max(self._ctx_seqs, 16, 1 << math.ceil(math.log2(sequences)))
        params = llama.llama_context_default_params()
        params.n_ctx = cells
        params.n_batch = 512
        params.n_ubatch = 512
        params.n_seq_max = min(sequences, MAX_BATCH_SEQUENCES)
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = self._n_threads
        params.no_perf = True
        ctx = llama.llama_init_from_model(self._model, params)
        if not ctx:
            raise ThinktankError(f"llama.cpp could not create a context of {cells} tokens")
        self._ctx, self._ctx_cells, self._ctx_seqs = ctx, cells, params.n_seq_max

    def _decode(
        self,
        prompt_ids: Sequence[int],
        sequences: list[_Sequence],
        sampling: Sampling,
        max_tokens: int,
        deadline: float | None,
        progress: ProgressCallback | None,
    ) -> None:
        k = len(sequences)
        self._ensure_context(len(prompt_ids) + k * max_tokens, k)
        llama.llama_memory_clear(llama.llama_get_memory(self._ctx), False)
        batch = llama.llama_batch_init(max(512, k), 0, k)
        try:
            # One prefill shared by all k sequences.
            last_row = None
            for chunk_start in range(0, len(prompt_ids), 512):
                chunk = prompt_ids[chunk_start : chunk_start + 512]
                is_last = chunk_start + 512 >= len(prompt_ids)
                self._fill(batch, chunk, chunk_start, range(k), output_last=is_last)
                last_row = self._run(batch, 1 if is_last else 0)
                self.stats.prefill_tokens += len(chunk)
            logits = np.repeat(last_row, k, axis=0)
            active = list(sequences)
            position = len(prompt_ids)
            stop_strings = tuple(s.encode() for s in sampling.stop if s)
            generated = 0
            while active:
                chosen, logprobs = _sample(logits, [s.rng for s in active], sampling)
                for seq, token, logprob in zip(active, chosen, logprobs, strict=True):
                    self._accept(seq, int(token), float(logprob), stop_strings, max_tokens)
                generated += len(active)
                self.stats.sampled_tokens += len(active)
                if progress is not None:
                    progress(generated)
                active = [s for s in active if s.finish is None]
                if active and deadline is not None and time.monotonic() >= deadline:
                    for seq in active:
                        seq.finish = "budget"
                    active = []
                if not active:
                    break
                self._fill_step(batch, active, position)
                logits = self._run(batch, len(active))
                self.stats.decode_batches += 1
                position += 1
        finally:
            llama.llama_batch_free(batch)

    def _accept(
        self,
        seq: _Sequence,
        token: int,
        logprob: float,
        stop_strings: tuple[bytes, ...],
        max_tokens: int,
    ) -> None:
        seq.tokens.append(token)
        seq.logprobs.append(logprob)
        if self._eog[token]:
            seq.finish = "stop"
            return
        before = len(seq.text)
        seq.text += self._piece(token)
        for stop in stop_strings:
            at = seq.text.find(stop, max(0, before - len(stop) + 1))
            if at >= 0:
                seq.finish = "stop"
                seq.stop_at = len(seq.text[:at].decode("utf-8", errors="replace"))
                return
        if len(seq.tokens) >= max_tokens:
            seq.finish = "length"

    def _fill(
        self,
        batch: llama.llama_batch,
        tokens: Sequence[int],
        first_pos: int,
        seq_ids: range,
        *,
        output_last: bool,
    ) -> None:
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = first_pos + i
            batch.n_seq_id[i] = len(seq_ids)
            for j, seq_id in enumerate(seq_ids):
                batch.seq_id[i][j] = seq_id
            batch.logits[i] = 0
        batch.logits[len(tokens) - 1] = int(output_last)
        batch.n_tokens = len(tokens)

    def _fill_step(self, batch: llama.llama_batch, active: list[_Sequence], pos: int) -> None:
        for i, seq in enumerate(active):
            batch.token[i] = seq.tokens[-1]
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq.slot
            batch.logits[i] = 1
        batch.n_tokens = len(active)

    def _run(self, batch: llama.llama_batch, n_outputs: int) -> np.ndarray:
        status = llama.llama_decode(self._ctx, batch)
        if status != 0:
            raise ThinktankError(f"llama_decode failed with status {status}")
        if not n_outputs:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        pointer = llama.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(n_outputs, self.n_vocab)).copy()


def _sample(
    logits: np.ndarray, rngs: Sequence[np.random.Generator], sampling: Sampling
) -> tuple[np.ndarray, np.ndarray]:
    """One token per row, and its log-probability under the raw (temperature 1) model."""
    peak = logits.max(axis=1, keepdims=True)
    shifted = logits - peak
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    if sampling.temperature == 0:
        chosen = shifted.argmax(axis=1)
    else:
        weights = np.exp(shifted / sampling.temperature)
        weights /= weights.sum(axis=1, keepdims=True)
        chosen = np.array(
            [_draw(row, rng, sampling.top_p) for row, rng in zip(weights, rngs, strict=True)]
        )
    rows = np.arange(len(chosen))
    return chosen, shifted[rows, chosen] - log_norm


def _draw(probs: np.ndarray, rng: np.random.Generator, top_p: float) -> int:
    """Sample an index of ``probs`` (summing to 1), restricted to the top-p nucleus."""
    if top_p >= 1:
        cumulative = np.cumsum(probs)
        return int(min(np.searchsorted(cumulative, rng.random() * cumulative[-1]), len(probs) - 1))
    probe = min(_NUCLEUS_PROBE, len(probs) - 1)
    head = np.argpartition(probs, -probe)[-probe:]
    order = head[np.argsort(-probs[head])]
    if probs[order].sum() < top_p:
        order = np.argsort(-probs)
    cumulative = np.cumsum(probs[order])
    size = int(np.searchsorted(cumulative, top_p)) + 1
    kept = cumulative[size - 1]
    return int(order[min(np.searchsorted(cumulative[:size], rng.random() * kept), size - 1)])
