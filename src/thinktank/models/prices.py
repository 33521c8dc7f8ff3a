"""The price book that turns a model's tokens into dollars, read as a model loads.

The book ships with thinktank (``prices.toml``) and is overridden, model by
model, by ``$THINKTANK_HOME/prices.toml``; a local model it does not name is
priced by its size (`local_price`).
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.resources import files
from pathlib import Path

from thinktank.config import home
from thinktank.errors import ThinktankError
from thinktank.models.base import Price

#: Local models: dollars per million output tokens per billion parameters.
LOCAL_OUTPUT_PER_MTOK_PER_BPARAM = 0.20
#: Local models: input tokens cost this fraction of output tokens.
LOCAL_INPUT_FRACTION = 0.25


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
