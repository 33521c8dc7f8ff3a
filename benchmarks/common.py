"""What the suite benchmarks share: their command line (problems per suite, suites,
ledger) and the ledger it names."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from thinktank.ledger import Ledger


def suite_parser(doc: str, size: int) -> argparse.ArgumentParser:
    """A parser with --size, --suite (repeatable) and --ledger; add your own options."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=size, help="problems per suite")
    parser.add_argument("--suite", action="append", help="suite specs (default: the script's)")
    parser.add_argument("--ledger", default=None, help="ledger path (default: the usual one)")
    return parser


def ledger_and_suites(
    args: argparse.Namespace, defaults: Sequence[str]
) -> tuple[Ledger, list[str]]:
    """The ledger the arguments name, and their suites (else ``defaults`` at --size)."""
    ledger = Ledger(args.ledger) if args.ledger else Ledger()
    return ledger, args.suite or [spec.format(size=args.size) for spec in defaults]
