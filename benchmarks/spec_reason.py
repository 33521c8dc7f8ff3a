"""Speculative reasoning (SmolLM2-135M drafts, Gemma 3 270M judges and rewrites) against
each model answering alone: accuracy, cost-of-pass, seconds, and the share of steps the
large model rewrote.

SpecReason's claim: 1.5-2.5x faster than the large reasoning model alone at equal or
better accuracy, because the small model carries the easy steps.

    .venv/bin/python benchmarks/spec_reason.py [--size 20] [--suite SPEC ...]
"""

from __future__ import annotations

from common import ledger_and_suites, suite_parser

import thinktank
from thinktank.bench.report import results_table
from thinktank.bench.summary import mark_frontiers
from thinktank.ledger import Ledger

SUITES = ("rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=1",)
TOKENS = "max_tokens=96"
THRESHOLDS = (0.5, 0.8, 0.9)


def main() -> None:
    parser = suite_parser(__doc__, size=20)
    args = parser.parse_args()
    ledger, suites = ledger_and_suites(args, SUITES)
    # SpecReason's own rule (the last step scored 0-9, kept at 7 or more), then the
    # earlier rule's thresholds on the large model's P("Yes").
    speculative = [f"spec-reason:{TOKENS},step_tokens=32"] + [
        f"spec-reason:judge=value,threshold={t},{TOKENS},step_tokens=32" for t in THRESHOLDS
    ]
    for suite in suites:
        alone = thinktank.benchmark(suite, [f"single:{TOKENS}"], ["smollm2", "gemma3-270m"],
                                    ledger=ledger, concurrency=1)  # fmt: skip
        # spec-reason picks its own models; the run's model is only its label.
        pooled = thinktank.benchmark(suite, speculative, ["smollm2"], ledger=ledger,
                                     concurrency=1)  # fmt: skip
        print(f"\n### `{suite}`\n")
        summaries = alone.summaries + pooled.summaries
        mark_frontiers(summaries)  # over both runs
        print(results_table(summaries))
        large = next(s for s in alone.summaries if s.model == "gemma3-270m")
        for s in pooled.summaries:
            rewritten = _rewritten_share(ledger, pooled.run_id, s.strategy)
            print(f"\n{s.strategy}: accuracy {s.accuracy:.2f} vs Gemma alone {large.accuracy:.2f};"
                  f" model-seconds ratio {s.model_seconds / large.model_seconds:.2f};"
                  f" large model's share of completion tokens {rewritten:.2f}")  # fmt: skip


def _rewritten_share(ledger: Ledger, run_id: str, strategy: str) -> float:
    """The share of completion tokens the large model wrote (its one-token judgements
    included)."""
    calls = [c for c in ledger.calls(run_id) if c.strategy == strategy]
    total = sum(c.completion_tokens for c in calls)
    large = sum(c.completion_tokens for c in calls if c.model == "gemma3-270m")
    return large / total if total else 0.0


if __name__ == "__main__":
    main()
