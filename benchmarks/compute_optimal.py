"""batch-allocation (named compute-optimal before issue 18) against self-consistency
with the same average number of samples a problem: accuracy, samples and tokens a
problem, cost-of-pass.

The idea it tests is Snell et al.'s, that spending test-time compute by difficulty
beats spending it uniformly, but not their strategy (`compute-optimal` now is: a
fixed budget a question, the method chosen by difficulty). Here the difficulty is
the doubt of two probe samples, and both strategies draw from the same seeded
streams (the probe is self-consistency's first two samples), so the comparison is
paired.

    .venv/bin/python benchmarks/compute_optimal.py [--size 30] [--suite SPEC ...]
"""

from __future__ import annotations

from common import ledger_and_suites, suite_parser

import thinktank
from thinktank import build_strategy
from thinktank.bench.report import results_table
from thinktank.ledger import Ledger

SUITES = (
    "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=21",
    "rg:products?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=21",
)
TOKENS = "max_tokens=96"
MEANS = (4, 8)
#: Variants at a mean of 8 samples: a 4-sample probe, weighed by doubt or by
#: doubt x (1 - doubt) (starving the problems whose probe agrees on nothing).
VARIANTS = tuple(f"batch-allocation:{TOKENS},n=8,probe=4,rule={r}" for r in ("doubt", "middle"))


def main() -> None:
    parser = suite_parser(__doc__, size=30)
    args = parser.parse_args()
    ledger, suites = ledger_and_suites(args, SUITES)
    # As the ledger spells them (options at their default left out).
    uniform = [build_strategy(f"self-consistency:{TOKENS},n={n}").spec for n in MEANS]
    adaptive = [build_strategy(f"batch-allocation:{TOKENS},n={n}").spec for n in MEANS]
    for suite in suites:
        outcome = thinktank.benchmark(suite, uniform + adaptive, ["smollm2"], ledger=ledger)
        print(f"\n### `{suite}`\n")
        print(results_table(outcome.summaries))
        by_spec = {s.strategy: s for s in outcome.summaries}
        samples = {spec: _mean_samples(ledger, outcome.run_id, spec) for spec in by_spec}
        for n, (flat, smart) in zip(MEANS, zip(uniform, adaptive, strict=True), strict=True):
            a, b = by_spec[flat], by_spec[smart]
            ratio = ("-" if a.cost_of_pass_usd is None or b.cost_of_pass_usd is None
                     else f"{b.cost_of_pass_usd / a.cost_of_pass_usd:.2f}")  # fmt: skip
            print(f"\nmean n={n}: batch-allocation {b.accuracy:.2f} with {samples[smart]:.2f} "
                  f"samples/problem vs SC {a.accuracy:.2f} with {samples[flat]:.2f}; "
                  f"tokens/problem {b.tokens_per_problem:.0f} vs {a.tokens_per_problem:.0f}; "
                  f"cost-of-pass ratio {ratio}")  # fmt: skip
        # The same seeds as the run above, so self-consistency@8 is the baseline.
        variants = thinktank.benchmark(suite, VARIANTS, ["smollm2"], ledger=ledger)
        print(results_table(variants.summaries))
        baseline = by_spec[uniform[-1]]
        for v in variants.summaries:
            print(
                f"\n{v.strategy}: {v.accuracy:.2f} vs SC@8 {baseline.accuracy:.2f}; "
                f"tokens/problem {v.tokens_per_problem:.0f} vs {baseline.tokens_per_problem:.0f}"
            )


def _mean_samples(ledger: Ledger, run_id: str, strategy: str) -> float:
    rows = [r for r in ledger.results(run_id) if r.strategy == strategy]
    return sum(len(r.sample_keys) for r in rows) / len(rows)


if __name__ == "__main__":
    main()
