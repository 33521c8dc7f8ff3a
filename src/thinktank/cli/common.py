"""What several commands share: the consoles, the exit codes, argument types and groups
(budget, executor, ``--json``), and the progress displays."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from thinktank.errors import ThinktankError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` above zero."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return convert


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_budget_arguments(
    parser: argparse.ArgumentParser, scope: str, cap: str = "hard cap"
) -> None:
    parser.add_argument("--budget-tokens", type=positive(int), help=f"{cap} on tokens{scope}")
    parser.add_argument("--budget-usd", type=positive(float), help=f"{cap} on cost in USD{scope}")
    parser.add_argument(
        "--budget-seconds", type=positive(float), help=f"cap on time in model calls{scope}"
    )


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where problems run: in this process (local, the default) or on Ray workers "
        "(ray: a local Ray instance unless --address names a cluster; --concurrency is then "
        "the most problems in flight per model)",
    )
    parser.add_argument("--address", help="the Ray cluster to join (e.g. ray://HEAD:10001, auto)")
    parser.add_argument("--ray-actors", type=positive(int), default=1,
                        help="Ray workers per model, each loading it once (default 1)")  # fmt: skip
    parser.add_argument("--ray-cpus", type=positive(int), default=1,
                        help="cores each Ray worker reserves and decodes with (1)")  # fmt: skip


def budget(args: argparse.Namespace) -> Any:
    """The Budget the ``--budget-*`` arguments set; None when none is set."""
    from thinktank.meter import Budget

    if args.budget_tokens is None and args.budget_usd is None and args.budget_seconds is None:
        return None
    return Budget(args.budget_tokens, args.budget_usd, args.budget_seconds)


def executor(args: argparse.Namespace) -> Any:
    """The Ray executor the arguments ask for; None runs problems in this process."""
    if args.executor == "local":
        if args.address is not None:
            raise ThinktankError("--address needs --executor ray")
        return None
    from thinktank.bench.distributed import RayExecutor

    return RayExecutor(address=args.address, actors=args.ray_actors, cpus=args.ray_cpus)


def table_console() -> Console:
    """Tables go to stdout; piped, they are not cut to 80 columns."""
    return stdout if stdout.is_terminal else Console(width=160, highlight=False)


def print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def bench_progress() -> Progress:
    """A bar with the accuracy so far, on stderr when it is a terminal."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[cyan]{task.fields[accuracy]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=not stderr.is_terminal,
    )


@contextmanager
def thinking(label: str) -> Iterator[Any]:
    """A spinner with a token count on stderr (only when stderr is a terminal)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("[cyan]{task.completed:.0f} tokens"),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    ) as progress:
        task = progress.add_task(label, total=None)
        yield lambda tokens: progress.update(task, completed=tokens)
