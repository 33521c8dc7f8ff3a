"""``thinktank report``: report.md and plots for a bench run, from the ledger."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from thinktank.cli.common import stdout


def add_parser(commands: Any) -> None:
    report = commands.add_parser(
        "report",
        help="write a Markdown report with plots for a bench run",
        description="Write report.md and PNG plots for a bench run, from the ledger.",
    )
    report.add_argument("run", help="a bench run id, or a folder written by `bench --out`")
    report.add_argument("--out", help="folder for the report (default: ~/.thinktank/reports/RUN)")
    report.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from thinktank.api import report

    run_id, out = args.run, args.out
    saved = Path(args.run) / "results.json"
    if saved.is_file():  # a folder written by `bench --out`
        run_id = json.loads(saved.read_text())["run_id"]
        out = out or args.run
    stdout.print(str(report(run_id, out)), soft_wrap=True)  # a path to paste: never folded
    return 0
