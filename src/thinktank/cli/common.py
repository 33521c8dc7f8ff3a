"""What several commands share: the consoles, the exit codes, argument types and groups
(budget, executor, ``--json``, ``--no-log-texts``), and the progress displays."""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
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


def port(text: str) -> int:
    """An argparse type: a TCP port number."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 1 and 65535, got {number}")
    return number


def check_bindable(host: str, number: int) -> None:
    """Refuse, before a server says it is serving, an address it could not bind: a port
    another process holds, a host this machine does not have."""
    try:
        infos = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ThinktankError(f"--host {host}: not an address of this machine ({exc})") from None
    family, kind, protocol, _, address = infos[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                message = f"port {number} on {host} is in use (another server?): choose another"
                raise ThinktankError(f"{message} with --port") from None
            raise ThinktankError(f"cannot serve on {host}:{number}: {exc.strerror}") from None


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


class _UsageOnly(argparse.Action):
    """``--no-log-texts``: set as it is parsed, before the command runs, in the
    environment, where every `Ledger` the command opens (in the API, the bench
    runner, the server) reads it (`thinktank.config.log_texts`)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        os.environ["THINKTANK_LOG_TEXTS"] = "0"
        setattr(namespace, self.dest, False)


def add_log_texts_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-log-texts",
        dest="log_texts",
        action=_UsageOnly,
        nargs=0,
        default=True,
        help="keep usage only: no prompts or completions in the ledger "
        "(also $THINKTANK_LOG_TEXTS=0)",
    )


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


def chosen_model(*strategies: Any) -> str:
    """The model for strategies when none is named: the default, or the embedded one
    that can do what one of them needs, said on stderr so the user knows why."""
    from thinktank.models import DEFAULT_MODEL, default_model_for
    from thinktank.models.base import CAPABILITY_WORDS

    needs = set().union(*(strategy.needs for strategy in strategies))
    spec = default_model_for(needs)
    if spec != DEFAULT_MODEL:
        needing = ", ".join(s.name for s in strategies if s.needs)
        wanted = " and ".join(CAPABILITY_WORDS[need] for need in sorted(needs))
        stderr.print(f"model  {spec} ({needing} needs {wanted}, which {DEFAULT_MODEL} has"
                     " not; --model to choose)", soft_wrap=True)  # fmt: skip
    return spec


def table_console() -> Console:
    """Tables go to stdout; piped, they are not cut to 80 columns."""
    return stdout if stdout.is_terminal else Console(width=160, highlight=False)


def print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class LinesWhenPiped(Progress):
    """A progress bar on a terminal; on a stderr that is not one (a pipe, a CI log),
    where a bar cannot redraw, a line each tenth of the way and one at the end, so a
    long run is never silent."""

    def __init__(self, *columns: Any, **options: Any) -> None:
        super().__init__(*columns, **options)
        self._told: dict[Any, int] = {}  # tenths already said, by task

    def update(self, task_id: Any, **changes: Any) -> None:
        super().update(task_id, **changes)
        if not self.disable:
            return
        task = next(task for task in self.tasks if task.id == task_id)
        if not task.total:
            return
        tenths = int(10 * task.completed / task.total)
        if tenths > self._told.get(task_id, 0 if task.completed < task.total else -1):
            self._told[task_id] = tenths
            note = " ".join(str(value) for value in task.fields.values() if value)
            stderr.print(f"{task.description}: {task.completed:.0f}/{task.total:.0f} {note}",
                         soft_wrap=True, highlight=False)  # fmt: skip

    def advance(self, task_id: Any, advance: float = 1) -> None:
        self.update(task_id, advance=advance)


def bench_progress() -> Progress:
    """A bar with the accuracy so far, on stderr when it is a terminal (else lines)."""
    return LinesWhenPiped(
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
    """A spinner with a token count on stderr when it is a terminal; else the label as
    one line, so a slow step (loading a torch model) is not silence."""
    if not stderr.is_terminal:
        stderr.print(f"{label}...", soft_wrap=True, highlight=False)
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
