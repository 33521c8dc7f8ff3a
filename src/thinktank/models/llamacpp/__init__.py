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

The parts: `vocab` (tokenizer and chat template), `kv` (the KV cells' layout, who
holds them, the prefix cache), `scheduler` (admission and the batched steps) and
`model` (`LlamaCppModel`, which composes them).
"""

from thinktank.models.llamacpp.kv import (
    MAX_BATCH_SEQUENCES,
    MAX_CONTEXT_CELLS,
    MAX_STREAM_CONTEXT_CELLS,
    MIN_CONTEXT_CELLS,
    MIN_STREAM_CELLS,
    DecodeStats,
)
from thinktank.models.llamacpp.model import PREFIX_CACHE_ENTRIES, LlamaCppModel

__all__ = [
    "MAX_BATCH_SEQUENCES",
    "MAX_CONTEXT_CELLS",
    "MAX_STREAM_CONTEXT_CELLS",
    "MIN_CONTEXT_CELLS",
    "MIN_STREAM_CELLS",
    "PREFIX_CACHE_ENTRIES",
    "DecodeStats",
    "LlamaCppModel",
]
