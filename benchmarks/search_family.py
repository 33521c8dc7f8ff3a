"""Search against plain sampling at matched token budgets, on reasoning-gym suites.

Runs beam search, particle filtering, A*-decoding and tree search next to
self-consistency and best-of-n, each at a small (about 4 samples) and a large
(about 16 samples) size, and the small searches again with rollout values, in
one bench run per suite, and prints one Markdown
table per suite; ``--out`` also writes each run's report (accuracy_vs_tokens.png
and the rest, as ``thinktank report`` draws them). Tokens are counted as
computed: prompt tokens the prefix cache served are shown apart. For each
strategy that values its solutions, the value's AUC (how often a right
solution is valued above a wrong one of the same problem) says how good the
signal guiding the search was.

    .venv/bin/python benchmarks/search_family.py [--size 15] [--suite SPEC ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import thinktank
from thinktank.bench.report import results_table
from thinktank.ledger import Ledger, ResultRow

SUITES = (
    "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=1",
    "rg:products?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=1",
)
#: Every strategy writes at most 128 tokens per solution.
SMALL = (
    "self-consistency:n=4",
    "best-of-n:n=4",
    "beam:beams=2,expand=2",
    "particle-filter:particles=4",
    "a-star:expand=4,max_expansions=8",
    "tree-search:rollouts=4",
)
LARGE = (
    "self-consistency:n=16",
    "best-of-n:n=16",
    "beam:beams=4,expand=4",
    "particle-filter:particles=16",
    "a-star:expand=4,max_expansions=24",
    "tree-search:rollouts=16",
)
#: The small searches again, valued by rollouts (2 per partial, scored by agreement)
#: instead of the model's self-evaluation: is the value signal what limits them?
ROLLOUT_VALUED = (
    "beam:beams=2,expand=2,value=rollout2",
    "particle-filter:particles=4,value=rollout2",
    "a-star:expand=4,max_expansions=8,value=rollout2",
)
STRATEGIES = tuple(
    f"{s},max_tokens=128" for s in ("single:temperature=0", *SMALL, *LARGE, *ROLLOUT_VALUED)
)


def value_auc(rows: list[ResultRow]) -> float | None:
    """How well the values a strategy gave its solutions rank right above wrong ones
    within a problem: the share of (right, wrong) pairs the value orders correctly
    (ties half). 0.5 is no signal; None when no problem had both."""
    ordered = ties = pairs = 0
    for row in rows:
        scored = [(v, s) for v, s in zip(row.sample_verifier_scores, row.sample_scores,
                                         strict=False) if v is not None]  # fmt: skip
        for right in (v for v, s in scored if s == 1):
            for wrong in (v for v, s in scored if s < 1):
                pairs += 1
                ordered += right > wrong
                ties += right == wrong
    return (ordered + ties / 2) / pairs if pairs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=15, help="problems per suite")
    parser.add_argument("--suite", action="append", help="suite specs (default: two rg suites)")
    parser.add_argument("--strategy", "-s", action="append", help="strategy specs (default: all)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--ledger", default=None, help="ledger path (default: the usual one)")
    parser.add_argument("--out", type=Path, default=None, help="write each run's report here")
    args = parser.parse_args()
    ledger = Ledger(args.ledger) if args.ledger else Ledger()
    for suite in args.suite or [s.format(size=args.size) for s in SUITES]:
        started = time.monotonic()
        outcome = thinktank.benchmark(
            suite, args.strategy or STRATEGIES, ledger=ledger, concurrency=args.concurrency
        )
        print(f"\n### `{suite}` (run {outcome.run_id}, {time.monotonic() - started:.0f} s)\n")
        print(results_table(outcome.summaries))
        by_strategy: dict[str, list[ResultRow]] = {}
        for row in ledger.results(outcome.run_id):
            by_strategy.setdefault(row.strategy, []).append(row)
        print("\nvalue signal (AUC of values, right vs wrong solutions of a problem):")
        for strategy, rows in by_strategy.items():
            auc = value_auc(rows)
            if auc is not None:
                print(f"- {strategy}: {auc:.2f}")
        if args.out:
            report = thinktank.report(outcome.run_id, args.out / outcome.run_id, ledger)
            print(f"\nreport: {report}")


if __name__ == "__main__":
    main()
