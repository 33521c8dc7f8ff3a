"""``thinktank ledger``: recent runs with their tokens and cost, of one command, strategy,
model or client, since a day."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from thinktank.cli.common import add_json_argument, positive, print_json, stderr, table_console

if TYPE_CHECKING:
    from thinktank.ledger_runs import RunSummary


def add_parser(commands: Any) -> None:
    ledger = commands.add_parser("ledger", help="recent runs with their tokens and cost")
    ledger.add_argument("--limit", type=positive(int), default=20, help="runs to show (20)")
    # Not args.command: that names the thinktank command itself.
    ledger.add_argument("--command", dest="of_command", metavar="COMMAND",
                        help="only runs of this command (solve, bench, serve...)")  # fmt: skip
    ledger.add_argument("--strategy", help="only runs whose strategy contains this")
    ledger.add_argument("--model", help="only runs whose model contains this")
    ledger.add_argument("--client", help="only server requests from this client (its user "
                        "field or address)")  # fmt: skip
    ledger.add_argument("--since", type=_day, metavar="YYYY-MM-DD",
                        help="only runs started on or after this day (local time)")  # fmt: skip
    add_json_argument(ledger)
    ledger.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from thinktank.ledger import Ledger

    runs = Ledger().recent_runs(args.limit, command=args.of_command, strategy=args.strategy,
                                model=args.model, client=args.client, since=args.since)  # fmt: skip
    if args.json:
        print_json({"runs": [entry.__dict__ for entry in runs]})
        return 0
    if not runs:
        stderr.print("no runs match" if _filtered(args) else "the ledger has no runs yet")
        return 0
    console = table_console()
    (_run_table if console.width >= WIDE else _run_list)(console, runs)
    stderr.print(
        "tokens: prompt + completion, all calls; s: seconds inside model calls. Any run id"
        " above, a unique start of it, or 'last' works wherever a run is named"
        " (thinktank report, logs --run, view)",
        soft_wrap=True,
    )
    return 0


#: From this many columns the runs are a table; below, a list of two lines a run.
WIDE = 120


def _filtered(args: argparse.Namespace) -> bool:
    return any(
        value is not None
        for value in (args.of_command, args.strategy, args.model, args.client, args.since)
    )


def _run_table(console: Console, runs: list[RunSummary]) -> None:
    """One row a run: whole ids first (they are what is pasted back), the question and
    the strategy giving way to the width."""
    # Clients are a server's: the column only when some run shown has one.
    with_client = any(entry.client for entry in runs)
    rows = [_row(entry, with_client) for entry in runs]
    flexible = ["strategy", "model", *(["client"] if with_client else []), "question", "answer"]
    headers = ["run", "started", *flexible, "tokens", "cost $", "s"]
    # Every column but the flexible ones as wide as its widest cell; those share the rest.
    widths = [max(len(header), *(len(Text.from_markup(row[i])) for row in rows))
              for i, header in enumerate(headers)]  # fmt: skip
    fixed = sum(w for h, w in zip(headers, widths, strict=True) if h not in flexible)
    share = max(8, (console.width - fixed - 3 * len(headers)) // len(flexible))
    table = Table(box=box.SIMPLE_HEAD)
    for header, width in zip(headers, widths, strict=True):
        if header in flexible:
            table.add_column(header, overflow="ellipsis", no_wrap=True, max_width=share)
        else:
            numeric = header in ("tokens", "cost $", "s")
            table.add_column(header, no_wrap=True, min_width=min(width, 24),
                             justify="right" if numeric else "left")  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _row(entry: RunSummary, with_client: bool) -> list[str]:
    return [
        entry.run_id,
        _started(entry),
        escape(entry.strategy or ""),
        escape(entry.model or ""),
        *([escape(entry.client or "")] if with_client else []),
        escape((entry.question or "").replace("\n", " ")),
        _answer(entry),
        str(entry.prompt_tokens + entry.completion_tokens),
        f"{entry.cost_usd:.2e}",
        f"{entry.seconds:.1f}",
    ]


def _run_list(console: Console, runs: list[RunSummary]) -> None:
    """Two lines a run, for a narrow terminal: its whole id and its numbers, then what
    it ran (strategy, model, client) and what it was asked and answered."""
    for entry in runs:
        tokens = entry.prompt_tokens + entry.completion_tokens
        console.print(
            f"[bold]{entry.run_id}[/]  {_started(entry)}  {entry.command}  {tokens} tokens"
            f"  ${entry.cost_usd:.2e}  {entry.seconds:.1f} s",
            soft_wrap=True,
            highlight=False,
        )
        what = " · ".join(part for part in (entry.strategy, entry.model, entry.client) if part)
        asked = (entry.question or "").replace("\n", " ")
        # The answer first: cut to the width, the question gives way, not the answer.
        answer = Text.from_markup(f" → {_answer(entry)}")
        room = max(8, console.width - 2 - answer.cell_len)
        asked = asked if len(asked) <= room else asked[: room - 1] + "…"
        for line in (Text(f"  {what}"), Text(f"  {asked}") + answer):
            console.print(line, no_wrap=True, overflow="ellipsis", highlight=False)


def _started(entry: RunSummary) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(entry.started_at))


def _answer(entry: RunSummary) -> str:
    return escape(entry.answer or "-") if entry.finished else "[yellow]unfinished[/]"


def _day(text: str) -> float:
    """An argparse type: a day, YYYY-MM-DD, as the Unix time of its local midnight."""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%d"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day as YYYY-MM-DD, got {text!r}") from None
