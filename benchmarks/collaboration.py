"""Collaboration (debate, Mixture-of-Agents, LeaP; Hogwild! on the torch backend)
against self-consistency with about as many tokens, on reasoning-gym suites.

One bench run per suite; prints a Markdown table (tokens as computed, prompt
tokens a prefix cache served apart; seconds per problem, for the wall-clock
comparison). ``--model torch:...`` runs the Hogwild! set instead (the same
weights through PyTorch, so self-consistency there is the same-backend baseline).

    .venv/bin/python benchmarks/collaboration.py [--size 15] [--suite SPEC ...]
    .venv/bin/python benchmarks/collaboration.py --model "torch:smollm2?weights=bfloat16"
"""

from __future__ import annotations

import time

from common import ledger_and_suites, suite_parser

import thinktank
from thinktank.bench.report import results_table

SUITES = (
    "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=1",
    "rg:products?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=1",
)
#: thinktank's Hogwild! before issue 18: a short team prompt, token layout, a line per step,
#: no redundancy check, no final-answer step, a token visible to the others one step later.
EARLIER_HOGWILD = (
    "hogwild:workers=4,prompt=team,layout=token,step=line,check_every=0,final_tokens=0,"
    "visibility=next-step"
)
#: Every strategy writes at most 128 tokens per sample.
STRATEGIES = {
    "smollm2": tuple(
        f"{s},max_tokens=128"
        for s in (
            "self-consistency:n=4",
            "self-consistency:n=8",
            "debate:agents=3,rounds=2",
            "mixture-of-agents:proposers=3,layers=1",
            "leap:paths=4,interval=32,summary_tokens=24",
        )
    ),
    "torch": tuple(
        f"{s},max_tokens=128"
        for s in (
            "self-consistency:n=2",
            "self-consistency:n=4",
            "self-consistency:n=8",
            "hogwild:workers=2",
            "hogwild:workers=4",
            "hogwild:workers=4,layout=token",
            EARLIER_HOGWILD,
            "hogwild:workers=4,layout=independent",
        )
    ),
}


def main() -> None:
    parser = suite_parser(__doc__, size=15)
    parser.add_argument("--model", default="smollm2",
                        help="smollm2, or torch:smollm2?weights=bfloat16")  # fmt: skip
    args = parser.parse_args()
    ledger, suites = ledger_and_suites(args, SUITES)
    for suite in suites:
        started = time.monotonic()
        strategies = STRATEGIES["torch" if args.model.startswith("torch:") else "smollm2"]
        outcome = thinktank.benchmark(suite, strategies, [args.model], ledger=ledger,
                                      concurrency=1)  # fmt: skip
        print(f"\n### `{suite}` (run {outcome.run_id}, {time.monotonic() - started:.0f} s)\n")
        print(results_table(outcome.summaries), flush=True)


if __name__ == "__main__":
    main()
