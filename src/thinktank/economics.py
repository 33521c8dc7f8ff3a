"""Economics: the price book that turns tokens into dollars, cost-of-pass, Pareto fronts.

The book ships with thinktank (``prices.toml``) and is overridden, model by
model, by ``$THINKTANK_HOME/prices.toml``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

from thinktank.config import home
from thinktank.errors import ThinktankError
from thinktank.models.base import Model, Price

#: Local models: dollars per million output tokens per billion parameters.
LOCAL_OUTPUT_PER_MTOK_PER_BPARAM = 0.20
#: Local models: input tokens cost this fraction of output tokens.
LOCAL_INPUT_FRACTION = 0.25


@dataclass(frozen=True)
class Configuration:
    """A strategy spec on a model spec: what a bench run compares, `tune` searches and
    a router chooses among."""

    strategy: str
    model: str

    @property
    def label(self) -> str:
        return f"{self.strategy} @ {self.model}"


def local_price(n_params: int) -> Price:
    """The documented default price of a local model with ``n_params`` parameters."""
    output = LOCAL_OUTPUT_PER_MTOK_PER_BPARAM * n_params / 1e9
    return Price(input_per_mtok=output * LOCAL_INPUT_FRACTION, output_per_mtok=output)


class PriceBook:
    """Model name -> `Price`, read from TOML files (later files win)."""

    def __init__(self, paths: list[Path]) -> None:
        self.prices: dict[str, Price] = {}
        for path in paths:
            self.prices.update(_read(path))

    def get(self, model: str) -> Price | None:
        return self.prices.get(model)


def _read(path: Path) -> dict[str, Price]:
    try:
        data = tomllib.loads(path.read_text())
        return {
            name: Price(
                float(entry["input_per_mtok"]),
                float(entry["output_per_mtok"]),
                _optional_float(entry.get("cached_input_per_mtok")),
                _optional_float(entry.get("thinking_per_mtok")),
            )
            for name, entry in data.get("models", {}).items()
        }
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ThinktankError(f"bad price book {path}: {exc}") from None


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)


@cache
def price_book() -> PriceBook:
    """The shipped price book, overridden by ``$THINKTANK_HOME/prices.toml`` if present."""
    paths = [Path(str(files("thinktank").joinpath("prices.toml")))]
    user = home() / "prices.toml"
    if user.is_file():
        paths.append(user)
    return PriceBook(paths)


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
