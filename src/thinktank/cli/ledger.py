"""``thinktank ledger``: recent runs with their tokens and cost."""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich import box
from rich.table import Table

from thinktank.cli.common import add_json_argument, positive, print_json, table_console


def add_parser(commands: Any) -> None:
    ledger = commands.add_parser("ledger", help="recent runs with their tokens and cost")
    ledger.add_argument("--limit", type=positive(int), default=20, help="runs to show (20)")
    add_json_argument(ledger)
    ledger.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from thinktank.ledger import Ledger

    runs = Ledger().recent_runs(args.limit)
    if args.json:
        print_json({"runs": [entry.__dict__ for entry in runs]})
        return 0
    # In a terminal the question and the strategy give way first.
    console = table_console()
    fixed = {"run": 8, "started": 11, "model": 10, "answer": 8, "tokens": 6, "cost $": 8, "s": 6}
    flexible = max(6, min(28, (console.width - sum(fixed.values()) - 3 * 9) // 2))
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("run", "started", "strategy", "model", "question", "answer", "tokens", "cost $",
                 "s"):  # fmt: skip
        width = fixed.get(name, flexible)
        table.add_column(name, overflow="ellipsis", no_wrap=True, max_width=width)
    for entry in runs:
        table.add_row(
            entry.run_id[:8],
            time.strftime("%m-%d %H:%M", time.localtime(entry.started_at)),
            entry.strategy or "",
            entry.model or "",
            entry.question or "",
            (entry.answer or "-") if entry.finished else "[yellow]unfinished",
            str(entry.prompt_tokens + entry.completion_tokens),
            f"{entry.cost_usd:.2e}",
            f"{entry.seconds:.1f}",
        )
    console.print(table)
    return 0
