"""Economics: what runs cost, cost-of-pass, Pareto fronts, price reversals.

Prices come from the price book, `thinktank.models.prices` (a model is priced as it
loads); `price_book`, `local_price` and `PriceBook` are importable from here too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from thinktank.models.base import Model
from thinktank.models.prices import PriceBook, local_price, price_book

__all__ = [
    "Configuration",
    "PriceBook",
    "cost_of_pass",
    "local_price",
    "pareto_front",
    "price_book",
    "price_reversals",
    "run_prices",
    "unpriced_models",
]


@dataclass(frozen=True)
class Configuration:
    """A strategy spec on a model spec: what a bench run compares, `tune` searches and
    a router chooses among."""

    strategy: str
    model: str

    @property
    def label(self) -> str:
        return f"{self.strategy} @ {self.model}"


def run_prices(models: Sequence[Model]) -> dict[str, dict[str, float | None] | None]:
    """Each model's price as a bench run records it (and hashes into its id, so a
    changed price starts a new run): its rates, or None for a model without a price."""
    return {
        m.name: {k: v for k, v in asdict(m.price).items() if k != "known"}
        if m.price.known
        else None
        for m in models
    }


def unpriced_models(config: Mapping, configuration: Configuration) -> list[str]:
    """The models a configuration of a bench run calls that have no price: while there
    is one, the configuration's cost (and cost-of-pass) is unknown, not $0."""
    prices = config.get("prices", {})  # older runs recorded none: taken as priced
    named = config.get("strategy_models", {}).get(configuration.strategy, [])
    called = [configuration.model, *named]
    return sorted({m for m in called if m in prices and prices[m] is None})


def cost_of_pass(cost_per_problem: float, accuracy: float) -> float:
    """Expected cost of one correct answer (Erol et al., 2025): cost / success rate."""
    return cost_per_problem / accuracy if accuracy > 0 else math.inf


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of (cost, accuracy) points no other point beats on both, cheapest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for index in order:
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def price_reversals(
    configurations: Sequence[tuple[float, float | None]],
) -> list[tuple[int, int]]:
    """Pairs (i, j) where configuration i pays less per token than j but more per
    correct answer (Price Reversal, Chen et al., 2025). Each configuration is
    (dollars per token, cost-of-pass; None when it solved nothing, i.e. infinite)."""

    def per_answer(index: int) -> float:
        cop = configurations[index][1]
        return math.inf if cop is None else cop

    return [
        (i, j)
        for i in range(len(configurations))
        for j in range(len(configurations))
        if configurations[i][0] < configurations[j][0] and per_answer(i) > per_answer(j)
    ]
