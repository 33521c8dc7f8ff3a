"""``thinktank models``: every model a spec can name, what it can do and what it costs."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich import box
from rich.markup import escape
from rich.table import Table

from thinktank.cli.common import add_json_argument, print_json, table_console

if TYPE_CHECKING:
    from thinktank.models import Listing


def add_parser(commands: Any) -> None:
    models = commands.add_parser(
        "models",
        help="list the models and spec forms, their backends, capabilities and prices",
        description="List every model a spec can name (and the forms of spec: gguf:PATH, "
        "torch:PATH, openai:MODEL@BASE_URL): its backend, what it can do, its price and the "
        "sampling a strategy option left unset takes.",
    )
    add_json_argument(models)
    models.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from thinktank.models import listings

    rows = listings()
    if args.json:
        print_json({"models": [_listing_dict(row) for row in rows]})
        return 0
    table = Table(
        box=box.SIMPLE_HEAD, caption="default sampling: what a strategy option left unset takes"
    )
    table.add_column("model", style="bold", no_wrap=True)
    table.add_column("what it is: backend, capabilities, price, default sampling")
    for row in rows:
        table.add_row(
            escape(row.spec),
            escape(
                f"{row.description}\n"
                f"{row.backend}: {_capability_words(row.capabilities)}\n"
                f"price: {row.pricing}\ndefault sampling: {row.sampling.describe()}"
            ),
        )
    table_console().print(table)
    return 0


def _listing_dict(row: Listing) -> dict[str, Any]:
    """A model for ``--json``."""
    return {
        "name": row.spec,
        "description": row.description,
        "backend": row.backend,
        "capabilities": row.capabilities,
        "price": None if row.price is None else asdict(row.price),
        "pricing": row.pricing,
        "default_sampling": asdict(row.sampling),
    }


def _capability_words(capabilities: dict[str, bool | None]) -> str:
    """``chat, logprobs, streaming``: what a model can do, for people."""
    words = {"shared_cache": "generate_together (shared KV cache)"}
    chat = {True: ["chat"], False: ["no chat"], None: ["chat with ?chat=1"]}[capabilities["chat"]]
    rest = [words.get(name, name) for name, can in capabilities.items() if can and name != "chat"]
    return ", ".join(chat + rest)
