"""Batched sampling throughput: `generate(n=8)` against two baselines, in one process.

1. sequential: 8 calls of `generate(n=1)` (what a plain loop over the model does);
2. raw loop: a bare llama.cpp batched decode loop over the same weights, with one
   shared prefill and greedy argmax (no stop checks, no logprobs): the ceiling.

Throughput is completion tokens per second; the ratios are what matter.
Targets (issue 2): >= 1.4x the sequential throughput, >= 85% of the raw loop.

    .venv/bin/python benchmarks/batched_sampling.py [--n 8] [--max-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import llama_cpp as llama
import numpy as np

from thinktank.models import load_model
from thinktank.models.base import Sampling

PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to count."}]


def raw_batched_loop(model_path: str, prompt_ids: list[int], n: int, steps: int) -> float:
    """Completion tokens per second of a bare llama.cpp loop (one context, reused)."""
    params = llama.llama_model_default_params()
    model = llama.llama_model_load_from_file(model_path.encode(), params)
    vocab_size = llama.llama_vocab_n_tokens(llama.llama_model_get_vocab(model))
    cparams = llama.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_seq_max = 4096, 512, n
    cparams.kv_unified = True
    cparams.n_threads = cparams.n_threads_batch = os.cpu_count() or 1  # as thinktank does
    ctx = llama.llama_init_from_model(model, cparams)
    batch = llama.llama_batch_init(512, 0, n)

    def run() -> float:
        llama.llama_memory_clear(llama.llama_get_memory(ctx), False)
        started = time.perf_counter()
        for i, token in enumerate(prompt_ids):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, n
            for s in range(n):
                batch.seq_id[i][s] = s
            batch.logits[i] = i == len(prompt_ids) - 1
        batch.n_tokens = len(prompt_ids)
        llama.llama_decode(ctx, batch)
        logits = np.ctypeslib.as_array(llama.llama_get_logits(ctx), shape=(1, vocab_size))
        tokens = np.repeat(logits.argmax(axis=1), n)
        for step in range(steps - 1):
            for s in range(n):
                batch.token[s], batch.pos[s] = int(tokens[s]), len(prompt_ids) + step
                batch.n_seq_id[s], batch.seq_id[s][0], batch.logits[s] = 1, s, 1
            batch.n_tokens = n
            llama.llama_decode(ctx, batch)
            logits = np.ctypeslib.as_array(llama.llama_get_logits(ctx), shape=(n, vocab_size))
            tokens = logits.argmax(axis=1)
        return n * steps / (time.perf_counter() - started)

    return run


def tokens_per_second(call) -> float:
    started = time.perf_counter()
    completions = call()
    return sum(c.completion_tokens for c in completions) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = load_model("smollm2")
    sampling = Sampling(temperature=0.8, max_tokens=args.max_tokens, seed=0)
    prompt_ids = list(model.tokenize(model.render(PROMPT)))
    raw = raw_batched_loop(str(model.path), prompt_ids, args.n, args.max_tokens)
    model.generate(PROMPT, args.n, sampling.with_(max_tokens=8))  # warm-up

    def batched():
        return model.generate(PROMPT, args.n, sampling)

    def sequential():
        return [c for i in range(args.n) for c in model.generate(PROMPT, 1, sampling.with_(seed=i))]

    results: dict[str, list[float]] = {"batched": [], "sequential": [], "raw loop": []}
    for _ in range(args.repeats):  # interleaved, so drift hits all three alike
        results["batched"].append(tokens_per_second(batched))
        results["sequential"].append(tokens_per_second(sequential))
        results["raw loop"].append(raw())
    median = {name: statistics.median(values) for name, values in results.items()}
    for name, value in median.items():
        print(f"{name:>10}: {value:7.1f} completion tok/s (median of {args.repeats})")
    print(
        f"batched / sequential = {median['batched'] / median['sequential']:.2f}x  (target >= 1.4)"
    )
    print(f"batched / raw loop   = {median['batched'] / median['raw loop']:.2f}   (target >= 0.85)")


if __name__ == "__main__":
    main()
