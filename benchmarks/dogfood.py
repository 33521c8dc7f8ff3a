"""A thinktank behind a thinktank: the same bench on the embedded model and through
the server as an ``openai:`` backend.

Starts the server's app (embedded SmolLM2) on a free loopback port in this
process, then runs the same suite, strategies and seeds twice: on the embedded
model directly (the baseline) and on ``openai:smollm2@http://127.0.0.1:PORT/v1``.
Prints both accuracies and tokens, and the seconds ratio.

    .venv/bin/python benchmarks/dogfood.py [--size 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from server_load import start  # the sibling script (benchmarks run as scripts)

import thinktank
from thinktank.ledger import Ledger
from thinktank.models import load_model
from thinktank.server import create_app

SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=5"
STRATEGIES = ("single:max_tokens=96", "self-consistency:n=8,max_tokens=96")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=30)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    embedded = load_model("smollm2")
    server, url = start(create_app([embedded], ledger=Ledger(folder / "server.db")))
    suite = SUITE.format(size=args.size)
    rows = {}
    for label, model in (("embedded", "smollm2"), ("through the server", f"openai:smollm2@{url}")):
        started = time.perf_counter()
        outcome = thinktank.benchmark(suite, STRATEGIES, [model], concurrency=1,
                                      ledger=Ledger(folder / f"{len(rows)}.db"))  # fmt: skip
        rows[label] = (outcome, time.perf_counter() - started)
    print(f"{suite}\n")
    print("| backend | strategy | accuracy (95% CI) | completion tokens | model-seconds |")
    print("|---|---|---|---|---|")
    for label, (outcome, _) in rows.items():
        for s in outcome.summaries:
            print(f"| {label} | {s.strategy} | {s.accuracy:.2f} ({s.ci95[0]:.2f}-{s.ci95[1]:.2f}) "
                  f"| {s.completion_tokens:,} | {s.model_seconds:.0f} |")  # fmt: skip
    ratio = rows["through the server"][1] / rows["embedded"][1]
    print(f"\nwall time, through the server / embedded: {ratio:.2f}")
    server.should_exit = True


if __name__ == "__main__":
    main()
