"""Search against plain sampling at matched token budgets, on reasoning-gym suites.

Runs beam search, particle filtering, A*-decoding and tree search next to
self-consistency and best-of-n, each at a small (about 4 samples) and a large
(about 16 samples) size, in one bench run per suite, and prints one Markdown
table per suite; ``--out`` also writes each run's report (accuracy_vs_tokens.png
and the rest, as ``thinktank report`` draws them). Tokens are counted as
computed: prompt tokens the prefix cache served are shown apart.

    .venv/bin/python benchmarks/search_family.py [--size 15] [--suite SPEC ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import thinktank
from thinktank.bench.report import results_table
from thinktank.ledger import Ledger

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
STRATEGIES = tuple(f"{s},max_tokens=128" for s in ("single:temperature=0", *SMALL, *LARGE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=15, help="problems per suite")
    parser.add_argument("--suite", action="append", help="suite specs (default: two rg suites)")
    parser.add_argument("--strategy", action="append", help="strategy specs (default: all)")
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
        print(results_table(outcome.summaries), flush=True)
        if args.out:
            report = thinktank.report(outcome.run_id, args.out / outcome.run_id, ledger)
            print(f"\nreport: {report}")


if __name__ == "__main__":
    main()
