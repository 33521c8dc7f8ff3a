"""The embedded backend: GGUF models through llama.cpp's low-level API.

``generate(prompt, n)`` prefills the prompt once for all ``n`` sequences (into
the first sequence's KV cells, then copied to the others) and then decodes the
``n`` sequences together, one batch per step. Sampling is vectorized numpy over
the batch's logits; each sample has its own random generator seeded from
``(seed, sample index)``, so a seed fixes the output.

Each sequence has a KV stream of its own (llama.cpp's non-unified KV cache), so
a seeded call samples the very same tokens whatever else is in the batch or the
cache (other calls in flight, other prompts cached, a larger ``n``) on a model
whose kernels give a row the same result in any batch size: SmolLM2's do,
Gemma 3's do not (its repacked Q4_K kernels), so there a step's company still
moves the last bits. In the unified cache (``kv_streams=False``) attention sums
also run over cells wherever they happen to lie, among other sequences' cells,
so the logits move with what else ran on any model, and a sampled token now
and then flips (benchmarks/reproducibility.py measures both). Streams cost
memory (each holds a whole prompt plus sample) and whole-stream copies: the
prompt's cells are copied to each sequence, and when a sample finishes the
highest live stream moves into its place, so that the live streams stay
contiguous and one step is one llama.cpp micro-batch.

Concurrent calls share the batch: one scheduler thread owns the llama.cpp
context, admits each call's sequences as soon as KV slots and cells are free,
and decodes every live sequence of every call in one ``llama_decode`` per step
(continuous batching). Problems solved in parallel therefore fill the batch
that one problem's long tail would leave nearly empty.

Prompts stay in the KV cache after their call (a prefix cache of
``prefix_cache`` entries, least recently used evicted first). A later prompt
that starts with a cached one copies those cells (``llama_memory_seq_cp``: a
copy of the stream, or in the unified cache a tag) and prefills just the rest:
the rounds of adaptive sampling and the steps of a search pay for their shared
prompt once. An exact repeat also reuses the stored next-token logits, so it
samples exactly what a fresh prefill would.
"""

from __future__ import annotations

import atexit
import ctypes
import heapq
import math
import os
import secrets
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import llama_cpp as llama
import numpy as np

from thinktank.config import threads
from thinktank.errors import ThinktankError
from thinktank.models.base import (
    CallGroup,
    Capabilities,
    Completion,
    Price,
    ProgressCallback,
    Prompt,
    PruneRule,
    Sampling,
    TextCallback,
    current_group_call,
    split_reply,
)
from thinktank.models.decoding import CallState, SampleState, top_logprobs

#: Sequences decoded in one batch at most (over all calls); a larger ``n`` is
#: split into requests of at most this many, which wait for free slots.
MAX_BATCH_SEQUENCES = 64
#: Prompt tokens per prefill batch.
_PREFILL_CHUNK = 512
#: KV cells one sequence (its prompt plus its sample) may use, and all the
#: sequences of a unified context together (memory: about 23 kB a cell for
#: SmolLM2-135M).
MAX_CONTEXT_CELLS = 32768
#: KV cells of a new unified context: room for several calls in flight at once
#: (each reserves its prompt plus n x max_tokens), about 380 MB for SmolLM2-135M.
MIN_CONTEXT_CELLS = 16384
#: KV cells of one stream at least (a prompt plus its sample): 72 such streams,
#: 64 to decode and 8 for the prefix cache, take about 850 MB for SmolLM2-135M.
MIN_STREAM_CELLS = 512
#: KV cells of all the streams of a context at most: longer sequences get fewer
#: streams.
MAX_STREAM_CONTEXT_CELLS = 2 * MAX_CONTEXT_CELLS
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


@dataclass
class DecodeStats:
    """Work done by llama.cpp since the model was loaded (shows batching at work)."""

    prefill_tokens: int = 0  # prompt tokens decoded (once per wave, however large n is)
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache instead
    decode_batches: int = 0  # llama_decode calls after the prefill, one per step
    moved_sequences: int = 0  # samples moved to a lower KV stream (see `_compact`)
    sampled_tokens: int = 0


@dataclass
class _Request:
    """Up to MAX_BATCH_SEQUENCES samples of one prompt, decoded in lockstep."""

    prompt_ids: tuple[int, ...]
    sequences: list[SampleState]
    call: CallState
    position: int = 0  # KV position of the next token (the same for all its sequences)
    cached_tokens: int = 0  # prompt tokens the prefix cache supplied
    logits: np.ndarray | None = None  # one row per live sequence, to sample from
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    cancelled: bool = False  # its caller stopped waiting
    group: CallGroup | None = None  # the calls it is admitted together with
    order: int = 0  # its call's place in the group

    @property
    def cells(self) -> int:
        """KV cells it may need: the shared prompt plus every sample at full length."""
        return len(self.prompt_ids) + len(self.sequences) * self.call.max_tokens

    @property
    def live(self) -> list[SampleState]:
        return [s for s in self.sequences if s.finish is None]


@dataclass
class _CachedPrompt:
    """A prompt whose KV cells are kept under their own sequence id."""

    slot: int
    prompt_ids: tuple[int, ...]
    logits: np.ndarray  # the next-token logits after the whole prompt (one row)


@dataclass(frozen=True)
class _Layout:
    """How a context keeps its KV cells: a stream per sequence id, or one unified pool.

    Sequence ids ``0 .. batch_slots - 1`` are decoded; the next ``cache_slots`` ids
    hold the prefix cache's prompts.
    """

    streams: bool
    cells: int  # in all
    batch_slots: int
    cache_slots: int

    @classmethod
    def of_streams(cls, sequence_cells: int, prefix_cache: int) -> _Layout:
        """Streams of ``sequence_cells`` cells at least (a power of two), as many as
        the batch and the cache want and MAX_STREAM_CONTEXT_CELLS allows."""
        size = max(MIN_STREAM_CELLS, 1 << math.ceil(math.log2(sequence_cells)))
        streams = min(MAX_BATCH_SEQUENCES + prefix_cache, MAX_STREAM_CONTEXT_CELLS // size)
        cache_slots = min(prefix_cache, streams // 2)
        return cls(True, streams * size, streams - cache_slots, cache_slots)

    @classmethod
    def unified(cls, cells: int, prefix_cache: int) -> _Layout:
        size = 1 << math.ceil(math.log2(cells))
        return cls(False, min(MAX_CONTEXT_CELLS, max(MIN_CONTEXT_CELLS, size)),
                   MAX_BATCH_SEQUENCES, prefix_cache)  # fmt: skip

    @property
    def stream_cells(self) -> int:
        """Cells one sequence may use (all of them in a unified pool)."""
        return self.cells // (self.batch_slots + self.cache_slots) if self.streams else self.cells

    def holds(self, request: _Request) -> bool:
        """Whether the request fits once nothing else is in flight."""
        if self.streams:
            return (len(request.prompt_ids) + request.call.max_tokens <= self.stream_cells
                    and len(request.sequences) <= self.batch_slots)  # fmt: skip
        return request.cells <= self.cells


class LlamaCppModel:
    """A GGUF model served by llama.cpp in this process.

    Thread-safe: concurrent `generate` calls are batched together by one
    scheduler thread (see the module docstring). ``prefix_cache`` is how many
    recent prompts stay in the KV cache for reuse (0 turns the cache off).
    ``kv_streams`` gives each sequence a KV stream of its own, so that a seeded
    call samples the same whatever runs beside it (on SmolLM2; see the module
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
        self._vocab = llama.llama_model_get_vocab(self._model)
        self.n_vocab = llama.llama_vocab_n_tokens(self._vocab)
        self.n_params = llama.llama_model_n_params(self._model)
        self.n_ctx_train = llama.llama_model_n_ctx_train(self._model)
        self.name = name
        self.capabilities = Capabilities(chat=chat, logprobs=True, batched=True, streaming=True)
        self.price = price or Price(0.0, 0.0)
        self._n_threads = n_threads or threads()
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
        self._batch: llama.llama_batch | None = None
        self._kv_streams = kv_streams
        self._layout: _Layout | None = None
        self._cells_reserved = 0
        self._free_slots: list[int] = []  # a heap: the lowest free sequence id first
        self._prefix_cache_size = prefix_cache
        # Least recently used first; touched by the scheduler thread only.
        self._prefixes: OrderedDict[tuple[int, ...], _CachedPrompt] = OrderedDict()
        self._free_cache_slots: list[int] = []
        self._queue: deque[_Request] = deque()
        self._active: list[_Request] = []  # touched by the scheduler thread only
        self._wakeup = threading.Condition()
        self._scheduler: threading.Thread | None = None
        self._closed = False
        self.stats = DecodeStats()
        _open_models.add(self)

    def __repr__(self) -> str:
        return f"LlamaCppModel(name={self.name!r}, path={str(self.path)!r})"

    def close(self) -> None:
        """Stop the scheduler (after the calls in flight) and free llama.cpp's memory."""
        with self._wakeup:
            if self._closed:
                return
            self._closed = True
            self._wakeup.notify_all()
        if self._scheduler is not None:
            self._scheduler.join()
        self._free_context()
        if self._model is not None:
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
        return self._apply_template(tuple((m["role"], m["content"]) for m in messages)) + reply

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

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """The text of ``token_ids`` as a completion made of them reads: a seeded sample's
        first m tokens are what ``max_tokens=m`` would have drawn, so this gives it."""
        return b"".join(self._piece(t) for t in token_ids).decode("utf-8", errors="replace")

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
        prompt_ids = self._tokenize(self.render(prompt))
        max_tokens = min(sampling.max_tokens, self.n_ctx_train - len(prompt_ids))
        if max_tokens < 1:
            raise ThinktankError(
                f"the prompt has {len(prompt_ids)} tokens; {self.name} holds {self.n_ctx_train}"
            )
        if len(prompt_ids) + max_tokens > MAX_CONTEXT_CELLS:
            raise ThinktankError(f"prompt plus max_tokens exceed {MAX_CONTEXT_CELLS} tokens")
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
        per_request = self._per_request(len(prompt_ids), max_tokens)
        call = CallState(
            sampling=sampling,
            max_tokens=max_tokens,
            deadline=deadline,
            progress=progress,
            prune=prune,
            on_text=on_text,
            prompt_ids=prompt_ids,
            vocab_size=self.n_vocab,
        )
        requests = [
            _Request(
                prompt_ids=prompt_ids,
                sequences=[
                    SampleState.seeded(i, seed)
                    for i in range(
                        sampling.sample_offset + start,
                        sampling.sample_offset + min(n, start + per_request),
                    )
                ],
                call=call,
            )
            for start in range(0, n, per_request)
        ]
        group_call = current_group_call()
        if group_call is not None:
            for request in requests:
                request.group, request.order = group_call
        self._submit(requests)
        if group_call is not None:
            group_call[0].arrive(group_call[1])
        try:
            for request in requests:
                request.done.wait()
        except BaseException:
            # Ctrl-C: let the scheduler drop these at its next step before the
            # exception unwinds, so no llama_decode is running as Python exits.
            for request in requests:
                request.cancelled = True
            for request in requests:
                request.done.wait(timeout=30)
            raise
        for request in requests:
            if request.error is not None:
                raise request.error
        return [
            seq.completion(len(prompt_ids), seed, request.cached_tokens)
            for request in requests
            for seq in request.sequences
        ]

    def _per_request(self, prompt_tokens: int, max_tokens: int) -> int:
        """Sequences one request may hold: as many as a context has slots (streams) or
        cells (unified) for."""
        if self._kv_streams:
            layout = _Layout.of_streams(prompt_tokens + max_tokens, self._prefix_cache_size)
            return layout.batch_slots
        return min(MAX_BATCH_SEQUENCES, (MAX_CONTEXT_CELLS - prompt_tokens) // max_tokens)

    def _submit(self, requests: list[_Request]) -> None:
        with self._wakeup:
            if self._closed:
                raise ThinktankError(f"{self.name} is closed")
            self._queue.extend(requests)
            if self._scheduler is None:
                self._scheduler = threading.Thread(
                    target=self._serve, name=f"thinktank-{self.name}", daemon=True
                )
                self._scheduler.start()
            self._wakeup.notify_all()

    # -- the scheduler thread --------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue and not self._active and not self._closed:
                    self._wakeup.wait()
                if self._closed and not self._queue and not self._active:
                    return
                admitted = self._admit()
                if not admitted and not self._active:
                    self._wakeup.wait(0.005)  # a call group is still gathering
                    continue
            for request in admitted:
                self._guard(self._prefill, request)
            self._guard(self._step)

    def _guard(self, work: Callable[..., None], *args: _Request) -> None:
        """Run scheduler work; a failure ends the requests it touched, not the thread."""
        try:
            work(*args)
        except BaseException as exc:
            for request in args or list(self._active):
                request.error = exc
                self._finish(request)

    def _admit(self) -> list[_Request]:
        """Move queued requests (first come, first served) into free KV slots and cells."""
        admitted: list[_Request] = []
        while self._queue:
            request = self._queue[0]
            if request.cancelled:
                self._queue.popleft()
                request.done.set()
                continue
            if request.group is not None:
                if not request.group.gathered:
                    break  # first come, first served: nothing overtakes a gathering group
                self._line_up(request.group)
                request = self._queue[0]
            idle = not self._active and not admitted
            if idle and (self._layout is None or not self._layout.holds(request)):
                self._new_context(request)  # only while nothing is in flight
            # (With streams a free slot always has the cells; in a unified pool they bind.)
            if (not self._layout.holds(request) or len(request.sequences) > len(self._free_slots)
                    or self._cells_reserved + request.cells > self._layout.cells):  # fmt: skip
                break
            while self._prefixes and self._cells_in_use + request.cells > self._layout.cells:
                self._evict_prefix()
            self._queue.popleft()
            for seq in request.sequences:
                seq.slot = heapq.heappop(self._free_slots)
            self._cells_reserved += request.cells
            self._active.append(request)
            admitted.append(request)
        return admitted

    def _line_up(self, group: CallGroup) -> None:
        """Move the group's queued requests to the front, in the group's order."""
        members = sorted((r for r in self._queue if r.group is group), key=lambda r: r.order)
        rest = [r for r in self._queue if r.group is not group]
        self._queue = deque(members + rest)
        for request in members:
            request.group = None  # lined up: admitted like any other from now on

    def _new_context(self, request: _Request) -> None:
        """A context laid out for ``request`` (and for smaller ones beside it)."""
        self._free_context()
        if self._kv_streams:
            sequence_cells = len(request.prompt_ids) + request.call.max_tokens
            layout = _Layout.of_streams(sequence_cells, self._prefix_cache_size)
        else:
            layout = _Layout.unified(request.cells, self._prefix_cache_size)
        params = llama.llama_context_default_params()
        params.n_ctx = layout.cells
        params.n_batch = params.n_ubatch = _PREFILL_CHUNK
        params.n_seq_max = layout.batch_slots + layout.cache_slots
        params.kv_unified = not layout.streams
        params.n_threads = params.n_threads_batch = self._n_threads
        params.no_perf = True
        ctx = llama.llama_init_from_model(self._model, params)
        if not ctx:
            raise ThinktankError(f"llama.cpp could not create a context of {layout.cells} tokens")
        self._ctx, self._layout = ctx, layout
        self._batch = llama.llama_batch_init(_PREFILL_CHUNK, 0, 1)
        self._free_slots = list(range(layout.batch_slots))
        self._cells_reserved = 0
        self._prefixes.clear()
        self._free_cache_slots = list(
            range(layout.batch_slots, layout.batch_slots + layout.cache_slots)
        )

    def _free_context(self) -> None:
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama.llama_free(self._ctx)
            self._ctx = None

    def _prefill(self, request: _Request) -> None:
        """Put the prompt in the KV cache once for all the request's sequences.

        The longest cached prefix is copied; only the tokens after it are decoded,
        into the first sequence, whose cells are then copied to the others. (A
        prompt token cannot carry several sequence ids in llama.cpp's non-unified
        cache; copies of a sequence holding nothing else can take whole streams.)
        """
        prompt, slots = request.prompt_ids, [seq.slot for seq in request.sequences]
        cached, reused = self._longest_prefix(prompt)
        memory = llama.llama_get_memory(self._ctx)
        first = slots[0]
        if cached is not None:
            llama.llama_memory_seq_cp(memory, cached.slot, first, -1, -1)
            llama.llama_memory_seq_rm(memory, first, reused, -1)
        if cached is not None and reused == len(prompt):
            last_row = cached.logits
        else:
            last_row = self._decode_prompt(prompt, reused, first)
            self._remember(prompt, first, last_row)
        for slot in slots[1:]:
            llama.llama_memory_seq_cp(memory, first, slot, -1, -1)
        self.stats.cached_tokens += reused
        request.cached_tokens = reused
        request.logits = np.repeat(last_row, len(slots), axis=0)
        request.position = len(prompt)

    def _decode_prompt(self, prompt: tuple[int, ...], start: int, slot: int) -> np.ndarray:
        """Decode ``prompt[start:]`` into ``slot``; the logits after its last token."""
        batch, last_row = self._batch, None
        for begin in range(start, len(prompt), _PREFILL_CHUNK):
            chunk = prompt[begin : begin + _PREFILL_CHUNK]
            for i, token in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, begin + i, 1
                batch.seq_id[i][0] = slot
                batch.logits[i] = 0
            is_last = begin + _PREFILL_CHUNK >= len(prompt)
            batch.logits[len(chunk) - 1] = int(is_last)
            batch.n_tokens = len(chunk)
            last_row = self._decode_batch(1 if is_last else 0)
            self.stats.prefill_tokens += len(chunk)
        return last_row

    def _longest_prefix(self, prompt: tuple[int, ...]) -> tuple[_CachedPrompt | None, int]:
        """The cached prompt sharing the most leading tokens with ``prompt``, and how many.

        At least the last prompt token is decoded again unless the cached prompt
        is the very same (whose logits are stored).
        """
        best, best_length = None, 0
        for cached in self._prefixes.values():
            if cached.prompt_ids == prompt:
                best, best_length = cached, len(prompt)
                break
            length = min(_common_prefix(cached.prompt_ids, prompt), len(prompt) - 1)
            if length > best_length:
                best, best_length = cached, length
        if best is not None:
            self._prefixes.move_to_end(best.prompt_ids)
        return best, best_length

    def _remember(self, prompt: tuple[int, ...], slot: int, logits: np.ndarray) -> None:
        """Keep the prompt's cells (all ``slot`` holds yet) under a cache slot of their own."""
        if not self._layout.cache_slots or prompt in self._prefixes:
            return
        if not self._free_cache_slots:
            self._evict_prefix()
        cache_slot = self._free_cache_slots.pop()
        memory = llama.llama_get_memory(self._ctx)
        llama.llama_memory_seq_cp(memory, slot, cache_slot, -1, -1)
        self._prefixes[prompt] = _CachedPrompt(cache_slot, prompt, logits)

    def _evict_prefix(self) -> None:
        _, cached = self._prefixes.popitem(last=False)
        llama.llama_memory_seq_rm(llama.llama_get_memory(self._ctx), cached.slot, -1, -1)
        self._free_cache_slots.append(cached.slot)

    @property
    def _cells_in_use(self) -> int:
        """Cells reserved by requests in flight plus those the prefix cache holds."""
        return self._cells_reserved + sum(len(p) for p in self._prefixes)

    def _step(self) -> None:
        """Sample one token for every live sequence, then decode them all in one batch."""
        for request in list(self._active):
            if request.cancelled:
                self._finish(request)
                continue
            try:
                self._sample_request(request)
            except BaseException as exc:  # a caller's callback (progress, prune) raised
                request.error = exc  # it fails its own call, not the others in the batch
                self._finish(request)
                continue
            self._release(s for s in request.sequences if s.finish is not None)
            if not request.live:
                self._finish(request)
        if self._layout is not None and self._layout.streams:
            self._compact()
        # In order of sequence id: llama.cpp's non-unified cache decodes a run of
        # consecutive ids as one micro-batch.
        rows = sorted(((request, seq) for request in self._active for seq in request.live),
                      key=lambda row: row[1].slot)  # fmt: skip
        if not rows:
            return
        batch = self._batch
        for i, (request, seq) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = seq.tokens[-1], request.position, 1
            batch.seq_id[i][0] = seq.slot
            batch.logits[i] = 1
        batch.n_tokens = len(rows)
        logits = self._decode_batch(len(rows))
        self.stats.decode_batches += 1
        row_of = {seq.slot: i for i, (_, seq) in enumerate(rows)}
        for request in self._active:
            request.logits = logits[[row_of[seq.slot] for seq in request.live]]
            request.position += 1

    def _compact(self) -> None:
        """Move the highest live streams into the lowest free slots, so that the live
        sequence ids run 0, 1, 2... with no gap (a gap would split the step into
        several micro-batches, each a pass over all the weights). Moving copies the
        whole stream, cell for cell, so the sample's numbers do not change."""
        live = sorted((seq for request in self._active for seq in request.live),
                      key=lambda seq: seq.slot)  # fmt: skip
        memory = llama.llama_get_memory(self._ctx)
        while live and self._free_slots and self._free_slots[0] < live[-1].slot:
            seq = live.pop()
            lowest = heapq.heapreplace(self._free_slots, seq.slot)
            llama.llama_memory_seq_cp(memory, seq.slot, lowest, -1, -1)
            llama.llama_memory_seq_rm(memory, seq.slot, -1, -1)
            seq.slot = lowest
            self.stats.moved_sequences += 1

    def _sample_request(self, request: _Request) -> None:
        live = request.live
        request.call.step_done(live, request.logits, self._piece, self._eog, self._top_logprobs)
        self.stats.sampled_tokens += len(live)

    def _finish(self, request: _Request) -> None:
        """Release the request's KV slots and cells, and wake its caller."""
        if request in self._active:
            self._active.remove(request)
            self._release(request.sequences)
            self._cells_reserved -= request.cells
        request.done.set()

    def _release(self, sequences: Iterable[SampleState]) -> None:
        """Free the KV slots of these sequences (a finished sample's at once)."""
        memory = llama.llama_get_memory(self._ctx)
        for seq in sequences:
            if seq.slot >= 0:
                llama.llama_memory_seq_rm(memory, seq.slot, -1, -1)
                heapq.heappush(self._free_slots, seq.slot)
                seq.slot = -1

    def _top_logprobs(self, logits: np.ndarray, k: int) -> dict[str, float]:
        return top_logprobs(logits, k, self._piece)

    def _decode_batch(self, n_outputs: int) -> np.ndarray:
        status = llama.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise ThinktankError(f"llama_decode failed with status {status}")
        if not n_outputs:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        pointer = llama.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(n_outputs, self.n_vocab)).copy()


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))
