"""``thinktank strategies``: the strategies; one in full, with every option."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich import box
from rich.markup import escape
from rich.table import Table

from thinktank.cli.common import add_json_argument, print_json, table_console

if TYPE_CHECKING:
    from thinktank.strategies import Strategy


def add_parser(commands: Any) -> None:
    strategies = commands.add_parser(
        "strategies",
        help="list the strategies; one in full with its options",
        description="List the strategies; with NAME, that strategy in full: every option "
        "with its type, default and meaning, and an example spec.",
        epilog="example: thinktank strategies deepconf",
    )
    strategies.add_argument("name", nargs="?", metavar="NAME", help="the strategy to show in full")
    add_json_argument(strategies)
    strategies.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from thinktank.strategies import STRATEGIES, strategy_class
    from thinktank.strategies.registry import is_plugin

    if args.name is not None:
        return _strategy_in_full(strategy_class(args.name), as_json=args.json)
    if args.json:
        print_json({"strategies": [_strategy_dict(cls) for cls in STRATEGIES.values()]})
        return 0
    table = Table(
        "strategy",
        "what it does",
        box=box.SIMPLE_HEAD,
        caption="thinktank strategies NAME: its options, their defaults and meanings",
    )
    for cls in STRATEGIES.values():
        table.add_row(cls.name, escape(cls.summary + (" (plugin)" if is_plugin(cls.name) else "")))
    table_console().print(table)
    return 0


def _strategy_in_full(cls: type[Strategy], *, as_json: bool) -> int:
    """One strategy: what it does, every option (type, default, meaning), an example."""
    described = _strategy_dict(cls)
    if as_json:
        print_json(described)
        return 0
    console = table_console()
    console.print(
        f"[bold]{cls.name}[/]: {escape(cls.summary)}\n\n{escape(described['description'])}"
    )
    table = Table("option", "type", "default", "meaning", box=box.SIMPLE_HEAD)
    for option in described["options"]:
        table.add_row(
            option["name"],
            option["type"],
            escape(_spec_value(option["default"])),
            escape(option["meaning"] or ""),
        )
    console.print(table)
    console.print(f"example: {escape(cls.example)}", soft_wrap=True)  # a spec to paste
    return 0


def _strategy_dict(cls: type[Strategy]) -> dict[str, Any]:
    """A strategy for ``--json``: the name, summary, first docstring paragraph, example
    and every option with its type, default and meaning."""
    import inspect
    from dataclasses import asdict

    from thinktank.spec import describe_options
    from thinktank.strategies.registry import is_plugin

    first_paragraph = (inspect.getdoc(cls) or "").split("\n\n")[0]
    description = " ".join(first_paragraph.replace("``", "`").split())
    return {
        "name": cls.name,
        "summary": cls.summary,
        "description": description,
        "example": cls.example,
        "plugin": is_plugin(cls.name),
        "options": [asdict(o) for o in describe_options(cls)],
    }


def _spec_value(value: Any) -> str:
    """An option's default as a spec string spells it (an empty string shows as "")."""
    return '""' if value == "" else str(value)
