"""``thinktank logs``: the latest model calls with what they were sent and wrote, newest
first (as ``llm logs`` shows its prompts): of one run, or one problem of it."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from thinktank.cli.common import add_json_argument, print_json, stderr, stdout

if TYPE_CHECKING:
    from thinktank.ledger_texts import LoggedCall

#: What a call whose texts the ledger did not keep shows in their place.
NOT_KEPT = "(texts not kept)"


def add_parser(commands: Any) -> None:
    logs = commands.add_parser(
        "logs",
        help="the latest model calls with their prompts and completions",
        description="The latest model calls, newest first: run, model, strategy, stage, "
        "tokens, cost and time, the prompt (chat messages role by role) and each "
        "completion with why it ended. Texts are kept unless a command ran with "
        "--no-log-texts (or $THINKTANK_LOG_TEXTS=0).",
    )
    logs.add_argument("-n", type=_count, default=3, metavar="N", help="calls to show (3; 0: all)")
    logs.add_argument(
        "--run",
        metavar="RUN_ID",
        help="only this run's calls: its id, a unique prefix of it, or last",
    )
    logs.add_argument("--problem", metavar="ID", help="only the calls for this problem")
    add_json_argument(logs)
    logs.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from thinktank.ledger import Ledger

    ledger = Ledger()
    # A run's id, a unique prefix of it, or `last`; a SpecError is exit 2 with its message.
    run_id = None if args.run is None else ledger.find_run(args.run)
    # SQLite reads a negative LIMIT as none.
    calls = ledger.logged_calls(args.n or -1, run_id=run_id, problem_id=args.problem)
    if args.json:
        print_json({"calls": [call.to_dict() for call in calls]})
        return 0
    if not calls:
        said = "no calls match" if run_id or args.problem else "the ledger has no calls yet"
        stderr.print(f"{said} ({ledger.path})")
        return 0
    for call in calls:
        _show(stdout, call)
    return 0


def _show(console: Console, call: LoggedCall) -> None:
    """One call: a heading with its numbers, then its prompt and completions as text."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(call.created_at))
    console.print(Text(f"## {when} · run {call.run_id}", style="bold cyan"))
    numbers = [f"model {call.model}", f"strategy {call.strategy or '-'}", f"stage {call.stage}"]
    if call.problem_id:
        numbers.append(f"problem {call.problem_id}")
    numbers += [f"n {call.n}", f"{call.prompt_tokens} prompt + {call.completion_tokens} "
                f"completion tokens", f"${call.cost_usd:.2e}", f"{call.seconds:.2f} s"]  # fmt: skip
    console.print(Text(" · ".join(numbers), style="dim"))
    if call.prompt is None and not call.completions:
        console.print(Text(NOT_KEPT, style="yellow"))
        console.print()
        return
    console.print(Text("### prompt", style="bold"))
    _show_prompt(console, call.prompt)
    for completion in call.completions:
        about = [completion.finish_reason, f"{completion.completion_tokens} tokens"]
        if completion.worker:
            about.append(f"worker {completion.worker}")
        console.print(Text(f"### completion {completion.index + 1} ({', '.join(about)})",
                           style="bold"))  # fmt: skip
        console.print(Text(completion.text), soft_wrap=True)
    if not call.completions:
        console.print(Text("(no completion: the call was cut short)", style="yellow"))
    console.print()


def _show_prompt(console: Console, prompt: str | list[dict[str, Any]] | None) -> None:
    """A text prompt as it is; chat messages role by role (a message's tool calls as
    JSON)."""
    if prompt is None:
        console.print(Text(NOT_KEPT, style="yellow"))
    elif isinstance(prompt, str):
        console.print(Text(prompt), soft_wrap=True)
    else:
        for message in prompt:
            console.print(Text(f"{message.get('role', '?')}:", style="bold magenta"))
            console.print(Text(str(message.get("content") or "")), soft_wrap=True)
            if message.get("tool_calls"):
                console.print(Text(json.dumps(message["tool_calls"])), soft_wrap=True)


def _count(text: str) -> int:
    """An argparse type: how many calls, 0 or more."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of calls, got {text!r}")
    return int(text)
