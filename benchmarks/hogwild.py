"""Hogwild! on the torch backend, in one process:

1. aggregate throughput of W workers sharing one KV cache (one batched forward pass
   per step) against one worker alone, as a ratio (target: >= 3x at W = 4);
2. the torch backend's single-stream speed against llama.cpp's on the same GGUF
   weights (and prompt), as a ratio;
3. with ``--transcripts N``: hogwild runs on N chain_sum problems, printing each
   worker's text and whether the answer was right (the good and bad collaborations
   quoted in RESULTS.md come from here).

Throughput is completion tokens per second of wall time (median of ``--repeats``),
prefill included; workers write ``--max-tokens`` tokens each unless they end.

    .venv/bin/python benchmarks/hogwild.py [--workers 1 2 4 8] [--max-tokens 96] [--repeats 3]
        [--model "torch:smollm2?weights=bfloat16"]
    .venv/bin/python benchmarks/hogwild.py --transcripts 6
"""

from __future__ import annotations

import argparse
import statistics
import time

import thinktank
from thinktank.bench.suites import load_suite
from thinktank.models import load_model
from thinktank.models.base import Sampling
from thinktank.strategies.collaborate import WORKER_NAMES

PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to count."}]
SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=7"


def throughput(call, repeats: int) -> float:
    """Median completion tokens per second of ``call()`` (which returns completions)."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        completions = call()
        rates.append(
            sum(c.completion_tokens for c in completions) / (time.perf_counter() - started)
        )
    return statistics.median(rates)


def speed(args: argparse.Namespace) -> None:
    torch_model, llama_model = load_model(args.model), load_model("smollm2")
    sampling = Sampling(temperature=0.7, max_tokens=args.max_tokens, seed=0)
    print("| workers | tokens/s (torch, shared cache) | ratio to 1 worker |\n|---|---|---|")
    alone = None
    for workers in args.workers:
        headers = [f"\n{name}: " for name in WORKER_NAMES[:workers]]
        rate = throughput(
            lambda h=headers: torch_model.generate_together(PROMPT, h, sampling), args.repeats
        )
        alone = alone or rate
        print(f"| {workers} | {rate:.1f} | {rate / alone:.2f}x |", flush=True)
    torch_rate = throughput(lambda: torch_model.generate(PROMPT, 1, sampling), args.repeats)
    llama_rate = throughput(lambda: llama_model.generate(PROMPT, 1, sampling), args.repeats)
    print(
        f"\nsingle stream: torch {torch_rate:.1f} tok/s, llama.cpp {llama_rate:.1f} tok/s,"
        f" torch/llama.cpp = {torch_rate / llama_rate:.2f}"
    )


def transcripts(args: argparse.Namespace) -> None:
    model = load_model(args.model)
    for task in load_suite(SUITE.format(size=args.transcripts)).tasks:
        solution = thinktank.solve(task.problem, model=model, strategy=args.strategy, seed=1)
        verdict = "right" if task.score(solution.answer) >= 1 else "wrong"
        declared = solution.trace[0]["declared"]
        print(f"\n#### {task.problem.prompt!r} -> {solution.answer!r} ({verdict}; {declared})")
        for candidate in solution.candidates:
            print(f"- **{candidate.worker}**: {candidate.text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--transcripts", type=int, default=0, help="problems to show, then stop")
    parser.add_argument("--strategy", default="hogwild:workers=2,max_tokens=96")
    parser.add_argument("--model", default="torch:smollm2",
                        help="a torch model spec: torch:smollm2?weights=bfloat16")  # fmt: skip
    args = parser.parse_args()
    if args.transcripts:
        transcripts(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
