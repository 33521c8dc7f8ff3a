"""Self-consistency@8 on easy reasoning-gym chain_sum: thinktank against a plain loop.

The bar from DESIGN.md: a plain llama-cpp-python loop (one completion at a time
through `Llama.create_chat_completion`, last-number extraction) does
self-consistency@8 on 30 easy chain_sum problems in about 40 s. thinktank batches
the 8 samples of each problem, so it must be faster at the same accuracy.
Both run here, in one process, on the same weights and problems.

    .venv/bin/python benchmarks/self_consistency_vs_loop.py [--problems 30] [--n 8]
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections import Counter

import reasoning_gym
from llama_cpp import Llama

import thinktank
from thinktank.ledger import Ledger


def chain_sum(size: int, seed: int) -> list[thinktank.Task]:
    data = reasoning_gym.create_dataset(
        "chain_sum", size=size, seed=seed, min_terms=2, max_terms=2, min_digits=1, max_digits=1
    )
    return [
        thinktank.Task(thinktank.Problem(f"chain_sum-{i}", row["question"]), row["answer"])
        for i, row in enumerate(data)
    ]


def plain_loop(tasks: list[thinktank.Task], n: int, max_tokens: int) -> tuple[float, int, float]:
    """Accuracy, completion tokens and seconds of the one-at-a-time baseline."""
    model = thinktank.load_model("smollm2")
    llm = Llama(str(model.path), n_ctx=2048, n_threads=os.cpu_count(), verbose=False, seed=0)
    started, tokens, correct = time.perf_counter(), 0, 0
    for task in tasks:
        answers = []
        for _ in range(n):
            reply = llm.create_chat_completion(
                [{"role": "user", "content": task.problem.prompt}],
                temperature=0.7,
                max_tokens=max_tokens,
            )
            tokens += reply["usage"]["completion_tokens"]
            numbers = re.findall(r"-?\d+", reply["choices"][0]["message"]["content"])
            if numbers:
                answers.append(numbers[-1])
        vote = Counter(answers).most_common(1)
        correct += task.score(vote[0][0] if vote else None)
    return correct / len(tasks), tokens, time.perf_counter() - started


def batched(tasks: list[thinktank.Task], n: int, max_tokens: int) -> tuple[float, int, float]:
    strategy = thinktank.build_strategy(f"self-consistency:n={n},max_tokens={max_tokens}")
    ledger = Ledger(":memory:")
    started, tokens, correct = time.perf_counter(), 0, 0
    for i, task in enumerate(tasks):
        solution = thinktank.solve(task.problem, strategy=strategy, seed=i, ledger=ledger)
        tokens += solution.usage.completion_tokens
        correct += task.score(solution.answer)
    return correct / len(tasks), tokens, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    tasks = chain_sum(args.problems, args.seed)
    thinktank.load_model("smollm2")
    results = {
        "plain loop": plain_loop(tasks, args.n, args.max_tokens),
        "thinktank": batched(tasks, args.n, args.max_tokens),
    }
    for name, (accuracy, tokens, seconds) in results.items():
        print(
            f"{name:>10}: accuracy {accuracy:.2f}, {tokens} completion tokens, {seconds:.1f} s,"
            f" {tokens / seconds:.0f} tok/s"
        )
    loop, ours = results["plain loop"], results["thinktank"]
    print(f"time: thinktank / plain loop = {ours[2] / loop[2]:.2f}")
    print(f"throughput: thinktank / plain loop = {(ours[1] / ours[2]) / (loop[1] / loop[2]):.2f}x")


if __name__ == "__main__":
    main()
