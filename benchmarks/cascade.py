"""A two-model cascade (SmolLM2-135M, then Gemma 3 270M) against self-consistency on
each model alone, on reasoning-gym suites: accuracy and cost-of-pass.

Issue 8's bar: the cascade reaches at least the larger model's self-consistency
accuracy at no more than 60% of its cost-of-pass. The last lines of each suite
give that comparison for every threshold.

    .venv/bin/python benchmarks/cascade.py [--size 30] [--suite SPEC ...] [--max-tokens 64]
"""

from __future__ import annotations

from common import ledger_and_suites, suite_parser

import thinktank
from thinktank.bench.report import results_table
from thinktank.bench.summary import mark_frontiers

SUITES = (
    "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=1",
    "rg:products?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=1",
)
N = 4
THRESHOLDS = (0.3, 0.5, 0.7)


def main() -> None:
    parser = suite_parser(__doc__, size=30)
    parser.add_argument("--max-tokens", type=int, default=64, help="per sample (64)")
    args = parser.parse_args()
    ledger, suites = ledger_and_suites(args, SUITES)
    baseline = f"self-consistency:n={N},max_tokens={args.max_tokens}"
    cascades = [f"cascade:n={N},threshold={t},max_tokens={args.max_tokens}" for t in THRESHOLDS]
    for suite in suites:
        alone = thinktank.benchmark(suite, [baseline], ["smollm2", "gemma3-270m"],
                                    ledger=ledger, concurrency=1)  # fmt: skip
        # The cascade picks its own models; the run's model is only its label.
        pooled = thinktank.benchmark(suite, cascades, ["smollm2"], ledger=ledger, concurrency=1)
        summaries = alone.summaries + pooled.summaries
        mark_frontiers(summaries)  # over both runs
        print(f"\n### `{suite}`\n")
        print(results_table(summaries))
        large = next(s for s in alone.summaries if s.model == "gemma3-270m")
        for s in pooled.summaries:
            ratio = (
                "-"
                if s.cost_of_pass_usd is None or large.cost_of_pass_usd is None
                else f"{s.cost_of_pass_usd / large.cost_of_pass_usd:.2f}"
            )
            print(f"\n{s.strategy}: accuracy {s.accuracy:.2f} vs Gemma SC@{N} {large.accuracy:.2f};"
                  f" cost-of-pass ratio {ratio}")  # fmt: skip


if __name__ == "__main__":
    main()
