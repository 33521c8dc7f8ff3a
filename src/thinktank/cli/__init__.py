"""The ``thinktank`` command line. Each command is a thin layer over the Python API,
in a module of its own: ``add_parser`` registers its arguments, ``run`` carries it out.

Exit codes: 0 success, 2 bad input (unknown model/strategy, bad spec, empty
question), 130 interrupted. With ``--json`` exactly one JSON object goes to
stdout; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator, Sequence

from rich.markup import escape

from thinktank.cli import (
    bench,
    ledger,
    logs,
    models,
    report,
    serve,
    solve,
    strategies,
    tune,
    view,
)
from thinktank.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, stderr
from thinktank.errors import ThinktankError
from thinktank.spec import RenamedOptionWarning

#: In the order ``thinktank --help`` lists them.
COMMANDS = (solve, bench, tune, report, view, models, strategies, serve, ledger, logs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        with _renamed_options_on_stderr():
            return args.handler(args)
    except ThinktankError as exc:
        stderr.print(f"[red]error:[/] {exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        stderr.print("interrupted: model calls made so far are in the ledger (`thinktank ledger`)")
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _renamed_options_on_stderr() -> Iterator[None]:
    """Each spec option spelled by its old name, once, as one stderr line: Python hides
    a `DeprecationWarning` outside ``__main__``, and would show it as two."""
    with warnings.catch_warnings():
        warnings.simplefilter("default", RenamedOptionWarning)
        show = warnings.showwarning

        def show_renamed(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, RenamedOptionWarning):
                stderr.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = show_renamed
        yield


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thinktank",
        description="Make language models think harder: sample, vote, verify, search "
        "- and price every answer.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser
