"""Problems in parallel on the embedded model: continuous batching across calls.

Runs the same benchmark (self-consistency@8 on easy chain_sum) twice in one
process: one problem at a time, then several at once. With one problem, the
batch empties as its samples finish and the longest sample decodes nearly
alone; with several, other problems' samples fill those slots.

    .venv/bin/python benchmarks/concurrent_problems.py [--problems 30] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import time

import thinktank
from thinktank.ledger import Ledger

SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=7"


def run(size: int, strategy: str, concurrency: int) -> tuple[float, float, int]:
    """Seconds, accuracy and completion tokens of one fresh bench run."""
    ledger = Ledger(":memory:")
    model = thinktank.load_model("smollm2")
    before = model.stats.decode_batches
    started = time.perf_counter()
    outcome = thinktank.benchmark(
        SUITE.format(size=size), [strategy], ledger=ledger, concurrency=concurrency
    )
    seconds = time.perf_counter() - started
    [summary] = outcome.summaries
    steps = model.stats.decode_batches - before
    print(
        f"concurrency {concurrency}: {seconds:6.1f} s, accuracy {summary.accuracy:.2f}, "
        f"{summary.total_tokens} tokens, {steps} decode steps"
    )
    return seconds, summary.accuracy, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--strategy", default="self-consistency:n=8,max_tokens=128")
    args = parser.parse_args()
    thinktank.load_model("smollm2")
    one, _, one_steps = run(args.problems, args.strategy, 1)
    many, _, many_steps = run(args.problems, args.strategy, args.concurrency)
    print(f"time: concurrency {args.concurrency} / concurrency 1 = {many / one:.2f}")
    print(f"decode steps: {many_steps / one_steps:.2f} of the sequential run's")


if __name__ == "__main__":
    main()
