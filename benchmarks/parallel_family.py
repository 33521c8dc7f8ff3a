"""The parallel family on reasoning-gym suites: accuracy, tokens and cost-of-pass.

Runs every strategy of issue 4 on each suite in one bench run (samples shared
between strategies that draw the same seeded stream, so the comparison is
paired) and prints one Markdown table per suite. The baseline is
self-consistency@16; the last line gives adaptive-consistency's token ratio to
it, the issue's target being at most 0.5 within 2 accuracy points.

    .venv/bin/python benchmarks/parallel_family.py [--size 30] [--suite SPEC ...]

Tokens are counted as computed: completion tokens plus the prompt tokens that
were prefilled (prompt tokens served by the prefix cache are shown apart).
"""

from __future__ import annotations

import argparse
import time

import thinktank
from thinktank.bench.report import results_table
from thinktank.ledger import Ledger

SUITES = (
    "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=1",
    "rg:products?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=1",
    "rg:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=1",
)
BASELINE = "self-consistency:n=16"
STRATEGIES = (
    "single",
    BASELINE,
    "weighted-vote:n=16",
    "deepconf",
    "best-of-n:n=16",
    "best-of-majority",
    "adaptive-consistency",
    "truth-inference",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=30, help="problems per suite")
    parser.add_argument("--suite", action="append", help="suite specs (default: three rg suites)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--ledger", default=None, help="ledger path (default: the usual one)")
    args = parser.parse_args()
    ledger = Ledger(args.ledger) if args.ledger else Ledger()
    for suite in args.suite or [s.format(size=args.size) for s in SUITES]:
        started = time.monotonic()
        outcome = thinktank.benchmark(
            suite, STRATEGIES, ledger=ledger, concurrency=args.concurrency
        )
        print(f"\n### `{suite}` (run {outcome.run_id}, {time.monotonic() - started:.0f} s)\n")
        print(results_table(outcome.summaries))
        by_spec = {s.strategy: s for s in outcome.summaries}
        base, adaptive = by_spec[BASELINE], by_spec["adaptive-consistency"]
        print(
            f"\nadaptive-consistency / {BASELINE}: tokens "
            f"{adaptive.computed_tokens / base.computed_tokens:.2f}, accuracy "
            f"{adaptive.accuracy - base.accuracy:+.2f}"
        )
        for s in outcome.summaries:
            if s.worker_reliability:
                print(f"\n{s.strategy} workers (estimated reliability / true accuracy):")
                for worker, p in s.worker_reliability.items():
                    print(f"- {worker}: {p:.2f} / {s.worker_accuracy[worker]:.2f}")
            if s.verifier_false_positive_rate is not None:
                print(f"- {s.strategy}: verifier FPR {s.verifier_false_positive_rate:.2f}")


if __name__ == "__main__":
    main()
