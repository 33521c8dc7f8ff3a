"""Routing a mixed workload: routers learned on a development split against every fixed
configuration, on the held-out split.

Every configuration (single and self-consistency@4 on SmolLM2-135M and Gemma 3 270M)
answers every problem of a mixed suite once: one resumable bench run, the ledger's
data. Then, for several seeded dev/held-out splits, routers are trained on the dev
rows and their picks scored on the held-out rows, next to each fixed configuration,
the fixed configuration `thinktank tune` would pick (lowest cost-of-pass on dev), and
the oracle (the cheapest configuration that is right on each query: an upper bound
that reads the ground truth, never reachable). A route run draws the same seeded
samples as the configuration it picks, so these replays are what `route` would score.

    .venv/bin/python benchmarks/router.py [--size 20] [--splits 5] [--suite SPEC]
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict

import numpy as np

import thinktank
from thinktank.ledger import Ledger
from thinktank.router import FEATURES, METHODS, Router, RoutingData

PARTS = (
    "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=11",
    "rg:products?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=11",
    "rg:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=11",
)
CONFIGURATIONS = ("single:max_tokens=128", "self-consistency:max_tokens=128,n=4")
MODELS = ("smollm2", "gemma3-270m")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20, help="problems per part of the mix")
    parser.add_argument("--splits", type=int, default=5, help="seeded dev/held-out splits")
    parser.add_argument("--suite", help="suite spec (default: a mix of three rg datasets)")
    parser.add_argument("--ledger", default=None, help="ledger path (default: the usual one)")
    args = parser.parse_args()
    ledger = Ledger(args.ledger) if args.ledger else Ledger()
    suite = args.suite or " + ".join(p.format(size=args.size) for p in PARTS)
    run = thinktank.benchmark(suite, CONFIGURATIONS, MODELS, ledger=ledger, concurrency=4)
    data = RoutingData.from_ledger(ledger, [run.run_id])
    print(f"{len(data.texts)} problems, run {run.run_id}, {args.splits} splits (dev = half)\n")

    totals: dict[str, list[tuple[float, float]]] = defaultdict(list)  # name -> (acc, $/problem)
    for split in range(args.splits):
        rows = list(range(len(data.texts)))
        random.Random(split).shuffle(rows)
        dev, held = data.take(rows[: len(rows) // 2]), data.take(rows[len(rows) // 2 :])
        every = np.arange(len(held.texts))

        def score(name: str, picks: np.ndarray, held=held, every=every) -> None:
            totals[name].append((held.solved[every, picks].mean(), held.costs[every, picks].mean()))

        for index, configuration in enumerate(data.configurations):
            score(configuration.label, np.full(len(every), index))
        dev_cop = dev.costs.mean(axis=0) / np.maximum(dev.solved.mean(axis=0), 1e-9)
        score("fixed: lowest dev cost-of-pass (tune's pick)", np.full(len(every), dev_cop.argmin()))
        for method in METHODS:
            for features in FEATURES:
                for objective in ("cost-of-pass", "accuracy"):
                    router = Router(dev, method, features, objective, clusters=4, seed=split)
                    score(f"route {method}/{features}/{objective}",
                          np.array(router.choose(held.texts)))  # fmt: skip
        # The oracle: the cheapest right configuration per query (else the cheapest).
        cost_if_right = np.where(held.solved > 0, held.costs, np.inf)
        oracle = np.where(np.isfinite(cost_if_right.min(axis=1)), cost_if_right.argmin(axis=1),
                          held.costs.argmin(axis=1))  # fmt: skip
        score("oracle (reads the ground truth)", oracle)

    fixed = totals["fixed: lowest dev cost-of-pass (tune's pick)"]
    fixed_cop = _cop(fixed)
    print("| configuration | held-out accuracy | $/problem | cost-of-pass $ | vs tune's pick |")
    print("|---|---|---|---|---|")
    for name, results in totals.items():
        accuracy, cost = np.mean([a for a, _ in results]), np.mean([c for _, c in results])
        cop = _cop(results)
        print(f"| {name} | {accuracy:.3f} | {cost:.3g} | {cop:.3g} | {cop / fixed_cop:.2f} |")


def _cop(results: list[tuple[float, float]]) -> float:
    """Cost-of-pass over all splits: mean dollars per problem / mean accuracy."""
    accuracy = np.mean([a for a, _ in results])
    return float(np.mean([c for _, c in results]) / accuracy) if accuracy else float("inf")


if __name__ == "__main__":
    main()
