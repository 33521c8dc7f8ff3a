"""The KV cells of a llama.cpp context: how they are laid out, who holds them, and
the prompts kept in them for reuse (the prefix cache)."""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import llama_cpp as llama
import numpy as np

from thinktank.errors import ThinktankError
from thinktank.models.decoding import SampleState

#: Sequences decoded in one batch at most (over all calls); a larger ``n`` is
#: split into requests of at most this many, which wait for free slots.
MAX_BATCH_SEQUENCES = 64
#: Prompt tokens per prefill batch.
PREFILL_CHUNK = 512
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


@dataclass
class DecodeStats:
    """Work done by llama.cpp since the model was loaded (shows batching at work)."""

    prefill_tokens: int = 0  # prompt tokens decoded (once per wave, however large n is)
    cached_tokens: int = 0  # prompt tokens taken from the prefix cache instead
    decode_batches: int = 0  # llama_decode calls after the prefill, one per step
    moved_sequences: int = 0  # samples moved to a lower KV stream (see `KVCells.compact`)
    sampled_tokens: int = 0


@dataclass(frozen=True)
class Demand:
    """What a request asks of the KV cells: its prompt, shared by ``sequences``
    samples of up to ``max_tokens`` each."""

    prompt_tokens: int
    max_tokens: int
    sequences: int

    @property
    def sequence_cells(self) -> int:
        """Cells one of its sequences may need: the prompt plus a sample at full length."""
        return self.prompt_tokens + self.max_tokens

    @property
    def cells(self) -> int:
        """Cells it may need in a unified pool: the shared prompt plus every sample."""
        return self.prompt_tokens + self.sequences * self.max_tokens


@dataclass(frozen=True)
class KVLayout:
    """How a context keeps its KV cells: a stream per sequence id, or one unified pool.

    Sequence ids ``0 .. batch_slots - 1`` are decoded; the next ``cache_slots`` ids
    hold the prefix cache's prompts.
    """

    streams: bool
    cells: int  # in all
    batch_slots: int
    cache_slots: int

    @classmethod
    def of_streams(cls, sequence_cells: int, prefix_cache: int) -> KVLayout:
        """Streams of ``sequence_cells`` cells at least (a power of two), as many as
        the batch and the cache want and MAX_STREAM_CONTEXT_CELLS allows."""
        size = max(MIN_STREAM_CELLS, 1 << math.ceil(math.log2(sequence_cells)))
        streams = min(MAX_BATCH_SEQUENCES + prefix_cache, MAX_STREAM_CONTEXT_CELLS // size)
        cache_slots = min(prefix_cache, streams // 2)
        return cls(True, streams * size, streams - cache_slots, cache_slots)

    @classmethod
    def unified(cls, cells: int, prefix_cache: int) -> KVLayout:
        size = 1 << math.ceil(math.log2(cells))
        return cls(False, min(MAX_CONTEXT_CELLS, max(MIN_CONTEXT_CELLS, size)),
                   MAX_BATCH_SEQUENCES, prefix_cache)  # fmt: skip

    @property
    def stream_cells(self) -> int:
        """Cells one sequence may use (all of them in a unified pool)."""
        return self.cells // (self.batch_slots + self.cache_slots) if self.streams else self.cells

    def holds(self, demand: Demand) -> bool:
        """Whether the demand fits once nothing else is in flight."""
        if self.streams:
            return (demand.sequence_cells <= self.stream_cells
                    and demand.sequences <= self.batch_slots)  # fmt: skip
        return demand.cells <= self.cells


@dataclass
class _CachedPrompt:
    """A prompt whose KV cells are kept under their own sequence id."""

    slot: int
    prompt_ids: tuple[int, ...]
    logits: np.ndarray  # the next-token logits after the whole prompt (one row)


class PrefixCache:
    """Prompts kept in a context's KV cells after their call, each under a sequence
    id of its own, the least recently used evicted first."""

    def __init__(self) -> None:
        self._memory: llama.llama_memory_t | None = None
        self._capacity = 0
        self._prompts: OrderedDict[tuple[int, ...], _CachedPrompt] = OrderedDict()
        self._free_slots: list[int] = []

    def reset(self, memory: llama.llama_memory_t, slots: range) -> None:
        """Empty, in a new context whose sequence ids ``slots`` are the cache's."""
        self._memory, self._capacity = memory, len(slots)
        self._prompts.clear()
        self._free_slots = list(slots)

    def __bool__(self) -> bool:
        return bool(self._prompts)

    @property
    def cells(self) -> int:
        """Cells the cached prompts hold."""
        return sum(len(p) for p in self._prompts)

    def longest(self, prompt: tuple[int, ...]) -> tuple[_CachedPrompt | None, int]:
        """The cached prompt sharing the most leading tokens with ``prompt``, and how many.

        At least the last prompt token is decoded again unless the cached prompt
        is the very same (whose logits are stored).
        """
        best, best_length = None, 0
        for cached in self._prompts.values():
            if cached.prompt_ids == prompt:
                best, best_length = cached, len(prompt)
                break
            length = min(_common_prefix(cached.prompt_ids, prompt), len(prompt) - 1)
            if length > best_length:
                best, best_length = cached, length
        if best is not None:
            self._prompts.move_to_end(best.prompt_ids)
        return best, best_length

    def remember(self, prompt: tuple[int, ...], slot: int, logits: np.ndarray) -> None:
        """Keep the prompt's cells (all ``slot`` holds yet) under a cache slot of their own."""
        if not self._capacity or prompt in self._prompts:
            return
        if not self._free_slots:
            self.evict()
        cache_slot = self._free_slots.pop()
        llama.llama_memory_seq_cp(self._memory, slot, cache_slot, -1, -1)
        self._prompts[prompt] = _CachedPrompt(cache_slot, prompt, logits)

    def evict(self) -> None:
        """Drop the least recently used prompt."""
        _, cached = self._prompts.popitem(last=False)
        llama.llama_memory_seq_rm(self._memory, cached.slot, -1, -1)
        self._free_slots.append(cached.slot)


class KVCells:
    """One llama.cpp context and who holds its KV cells.

    Requests in flight take free sequence ids (the lowest first) and reserve cells
    for their prompt and every sample at full length; the prefix cache keeps recent
    prompts in what is left. ``streams`` gives each sequence a KV stream of its own;
    False shares one unified pool (see `KVLayout`).
    """

    def __init__(
        self,
        model: llama.llama_model_p,
        *,
        n_vocab: int,
        n_threads: int,
        streams: bool,
        prefix_cache: int,
        stats: DecodeStats,
    ) -> None:
        self._model = model
        self._n_vocab = n_vocab
        self._n_threads = n_threads
        self._streams = streams
        self._prefix_cache_size = prefix_cache
        self._stats = stats
        self._ctx: llama.llama_context_p | None = None
        self._batch: llama.llama_batch | None = None
        self.layout: KVLayout | None = None
        self._cells_reserved = 0
        self._free_slots: list[int] = []  # a heap: the lowest free sequence id first
        self.prefixes = PrefixCache()

    def sequences_per_request(self, prompt_tokens: int, max_tokens: int) -> int:
        """Sequences one request may hold: as many as a context has slots (streams) or
        cells (unified) for."""
        if self._streams:
            layout = KVLayout.of_streams(prompt_tokens + max_tokens, self._prefix_cache_size)
            return layout.batch_slots
        return min(MAX_BATCH_SEQUENCES, (MAX_CONTEXT_CELLS - prompt_tokens) // max_tokens)

    def holds(self, demand: Demand) -> bool:
        """Whether the current context fits ``demand`` once nothing else is in flight."""
        return self.layout is not None and self.layout.holds(demand)

    def open(self, demand: Demand) -> None:
        """A new context laid out for ``demand`` (and for smaller ones beside it); only
        while nothing is in flight."""
        self.close()
        if self._streams:
            layout = KVLayout.of_streams(demand.sequence_cells, self._prefix_cache_size)
        else:
            layout = KVLayout.unified(demand.cells, self._prefix_cache_size)
        params = llama.llama_context_default_params()
        params.n_ctx = layout.cells
        params.n_batch = params.n_ubatch = PREFILL_CHUNK
        params.n_seq_max = layout.batch_slots + layout.cache_slots
        params.kv_unified = not layout.streams
        params.n_threads = params.n_threads_batch = self._n_threads
        params.no_perf = True
        ctx = llama.llama_init_from_model(self._model, params)
        if not ctx:
            raise ThinktankError(f"llama.cpp could not create a context of {layout.cells} tokens")
        self._ctx, self.layout = ctx, layout
        self._batch = llama.llama_batch_init(PREFILL_CHUNK, 0, 1)
        self._free_slots = list(range(layout.batch_slots))
        self._cells_reserved = 0
        cache_slots = range(layout.batch_slots, layout.batch_slots + layout.cache_slots)
        self.prefixes.reset(llama.llama_get_memory(ctx), cache_slots)

    def close(self) -> None:
        """Free the context's memory."""
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama.llama_free(self._ctx)
            self._ctx = None

    def admit(self, demand: Demand) -> list[int] | None:
        """Free sequence ids for the demand's sequences, its cells reserved (cached
        prompts evicted to make room), or None while they are not free."""
        layout = self.layout
        # (With streams a free slot always has the cells; in a unified pool they bind.)
        if (not layout.holds(demand) or demand.sequences > len(self._free_slots)
                or self._cells_reserved + demand.cells > layout.cells):  # fmt: skip
            return None
        while self.prefixes and self._cells_in_use + demand.cells > layout.cells:
            self.prefixes.evict()
        self._cells_reserved += demand.cells
        return [heapq.heappop(self._free_slots) for _ in range(demand.sequences)]

    @property
    def _cells_in_use(self) -> int:
        """Cells reserved by requests in flight plus those the prefix cache holds."""
        return self._cells_reserved + self.prefixes.cells

    def release(self, sequences: Iterable[SampleState]) -> None:
        """Free the KV slots of these sequences (a finished sample's at once)."""
        memory = llama.llama_get_memory(self._ctx)
        for seq in sequences:
            if seq.slot >= 0:
                llama.llama_memory_seq_rm(memory, seq.slot, -1, -1)
                heapq.heappush(self._free_slots, seq.slot)
                seq.slot = -1

    def unreserve(self, demand: Demand) -> None:
        """Its request is done: its cells are free for others."""
        self._cells_reserved -= demand.cells

    def prefill(self, prompt: tuple[int, ...], slots: Sequence[int]) -> tuple[int, np.ndarray]:
        """Put the prompt in the KV cells of every slot; how many of its tokens the prefix
        cache supplied, and the next-token logits after it (one row).

        The longest cached prefix is copied; only the tokens after it are decoded,
        into the first slot, whose cells are then copied to the others. (A prompt
        token cannot carry several sequence ids in llama.cpp's non-unified cache;
        copies of a sequence holding nothing else can take whole streams.)
        """
        cached, reused = self.prefixes.longest(prompt)
        memory = llama.llama_get_memory(self._ctx)
        first = slots[0]
        if cached is not None:
            llama.llama_memory_seq_cp(memory, cached.slot, first, -1, -1)
            llama.llama_memory_seq_rm(memory, first, reused, -1)
        if cached is not None and reused == len(prompt):
            last_row = cached.logits
        else:
            last_row = self._decode_prompt(prompt, reused, first)
            self.prefixes.remember(prompt, first, last_row)
        for slot in slots[1:]:
            llama.llama_memory_seq_cp(memory, first, slot, -1, -1)
        self._stats.cached_tokens += reused
        return reused, last_row

    def _decode_prompt(self, prompt: tuple[int, ...], start: int, slot: int) -> np.ndarray:
        """Decode ``prompt[start:]`` into ``slot``; the logits after its last token."""
        batch, last_row = self._batch, None
        for begin in range(start, len(prompt), PREFILL_CHUNK):
            chunk = prompt[begin : begin + PREFILL_CHUNK]
            for i, token in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, begin + i, 1
                batch.seq_id[i][0] = slot
                batch.logits[i] = 0
            is_last = begin + PREFILL_CHUNK >= len(prompt)
            batch.logits[len(chunk) - 1] = int(is_last)
            batch.n_tokens = len(chunk)
            last_row = self._decode(1 if is_last else 0)
            self._stats.prefill_tokens += len(chunk)
        return last_row

    def decode_step(self, rows: Sequence[tuple[int, int, int]]) -> np.ndarray:
        """Decode one (token, position, slot) row per sequence in one batch; the
        next-token logits of each row."""
        batch = self._batch
        for i, (token, position, slot) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
            batch.seq_id[i][0] = slot
            batch.logits[i] = 1
        batch.n_tokens = len(rows)
        logits = self._decode(len(rows))
        self._stats.decode_batches += 1
        return logits

    def compact(self, live: list[SampleState]) -> None:
        """Move the highest live streams into the lowest free slots, so that the live
        sequence ids run 0, 1, 2... with no gap (a gap would split the step into
        several micro-batches, each a pass over all the weights). Moving copies the
        whole stream, cell for cell, so the sample's numbers do not change."""
        if self.layout is None or not self.layout.streams:
            return
        live = sorted(live, key=lambda seq: seq.slot)
        memory = llama.llama_get_memory(self._ctx)
        while live and self._free_slots and self._free_slots[0] < live[-1].slot:
            seq = live.pop()
            lowest = heapq.heapreplace(self._free_slots, seq.slot)
            llama.llama_memory_seq_cp(memory, seq.slot, lowest, -1, -1)
            llama.llama_memory_seq_rm(memory, seq.slot, -1, -1)
            seq.slot = lowest
            self._stats.moved_sequences += 1

    def _decode(self, n_outputs: int) -> np.ndarray:
        status = llama.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise ThinktankError(f"llama_decode failed with status {status}")
        if not n_outputs:
            return np.empty((0, self._n_vocab), dtype=np.float32)
        pointer = llama.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(n_outputs, self._n_vocab)).copy()


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))
