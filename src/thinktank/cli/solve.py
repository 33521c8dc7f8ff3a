"""``thinktank solve``: one question (or conversation), one strategy, one model."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thinktank.cli.common import (
    add_budget_arguments,
    add_json_argument,
    add_log_texts_argument,
    budget,
    chosen_model,
    print_json,
    stderr,
    stdout,
    thinking,
)
from thinktank.errors import ThinktankError
from thinktank.problem import KINDS, Problem

if TYPE_CHECKING:
    from thinktank.solution import Solution


def add_parser(commands: Any) -> None:
    solve = commands.add_parser(
        "solve",
        help="answer one question",
        description="Answer QUESTION with a strategy on a model, within a budget. "
        "Every model call is recorded in the ledger.",
        epilog='example: thinktank solve "What is 7 + 5?" --strategy self-consistency:n=8',
    )
    solve.add_argument(
        "question",
        nargs="?",
        help="the question to answer (after the --messages conversation, as its last user"
        " message, if both are given)",
    )
    solve.add_argument(
        "--system", metavar="TEXT", help="a system prompt, put before the conversation"
    )
    solve.add_argument(
        "--messages",
        metavar="FILE",
        help='the conversation, a JSON list of {"role", "content"} messages (system, user,'
        " assistant) ending with the user message to answer; - reads stdin",
    )
    solve.add_argument(
        "--model",
        "-m",
        help="model spec (default: smollm2, or torch:smollm2 for a strategy"
        " that needs it, hogwild; see `models`)",
    )
    solve.add_argument(
        "--strategy",
        "-s",
        default="self-consistency",
        help="strategy spec NAME[:key=value,...] (default: self-consistency; see `strategies`)",
    )
    solve.add_argument(
        "--kind",
        choices=KINDS,
        help="answer type: how answers are extracted and compared (default: what the question"
        " asks for: lettered options like (A) ... (B) ... -> choice, a Python function stub ->"
        " code, numbers or arithmetic -> math, else text; a math question whose samples state"
        " no number but answer in words gets a hint)",
    )
    add_budget_arguments(solve, "")
    solve.add_argument("--seed", type=int, help="random seed: the same seed gives the same run")
    add_json_argument(solve)
    add_log_texts_argument(solve)
    solve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from thinktank.api import KindWarning, solve
    from thinktank.models import load_model
    from thinktank.strategies import build_strategy

    problem = _conversation(args)
    strategy = build_strategy(args.strategy)  # bad specs fail before the model loads
    cap = budget(args)
    spec = args.model or chosen_model(strategy)
    with thinking(f"loading {spec}"):
        model = load_model(spec)
    kind = problem.kind
    if args.kind is None:
        stderr.print(f"kind   {kind} (inferred from the question; --kind to choose)")
    started = time.monotonic()
    with (
        thinking(f"{strategy.spec} on {model.name}") as progress,
        warnings.catch_warnings(record=True, category=KindWarning) as hints,
    ):
        solution = solve(
            problem, model=model, strategy=strategy, budget=cap, seed=args.seed, progress=progress
        )
    if hints:
        stderr.print(
            "[yellow]hint:[/] no numeric answer found; for a question answered in words use"
            " --kind text"
        )
    if args.json:
        print_json({**solution.to_dict(), "kind": kind, "wall_seconds": time.monotonic() - started})
        return 0
    _print_solution(solution)
    return 0


def _print_solution(solution: Solution) -> None:
    """The answer on stdout; the votes, the usage and a spent budget on stderr."""
    usage = solution.usage
    stdout.print(f"[bold]{solution.answer if solution.answer is not None else '(no answer)'}")
    if len(solution.votes) > 1 or len(solution.candidates) > 1:
        votes = ", ".join(f"{answer}: {count:g}" for answer, count in solution.votes.items())
        stderr.print(f"votes  {votes or 'none'}")
    stderr.print(
        f"usage  {usage.completions} completions, {usage.prompt_tokens} prompt"
        f"{f' ({usage.cached_tokens} cached)' if usage.cached_tokens else ''} + "
        f"{usage.completion_tokens} completion tokens, ${usage.cost_usd:.8f}, "
        f"{usage.seconds:.1f} s  (run {solution.run_id})"
    )
    if solution.budget_exhausted:
        stderr.print(
            "[yellow]the budget ran out: "
            + ("this is the best answer found within it" if solution.answer else "no answer yet")
        )


def _conversation(args: argparse.Namespace) -> Problem:
    """The problem ``solve`` was given: ``--system``, the ``--messages`` file's
    conversation, then QUESTION, as one conversation (bad input: a ThinktankError)."""
    if args.question is None and args.messages is None:
        raise ThinktankError("a question is required: QUESTION, or --messages FILE")
    if args.question is not None and not args.question.strip():
        raise ThinktankError("the question is empty")
    messages: list[Any] = [] if args.messages is None else _messages_file(args.messages)
    if args.system is not None:
        if any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
            raise ThinktankError(f"--system: {args.messages} has a system message already")
        messages.insert(0, {"role": "system", "content": args.system})
    if args.question is not None:
        messages.append({"role": "user", "content": args.question})
    try:
        return Problem.from_messages("q0", messages, args.kind)
    except ValueError as exc:
        where = f"--messages {args.messages}" if args.messages is not None else "solve"
        raise ThinktankError(f"{where}: {exc}") from None


def _messages_file(path: str) -> list[Any]:
    """The JSON list of messages in ``path`` ("-": stdin)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ThinktankError(f"--messages {path}: cannot read it ({exc})") from None
    try:
        messages = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ThinktankError(f"--messages {path}: not JSON ({exc})") from None
    if not isinstance(messages, list):
        raise ThinktankError(f'--messages {path}: expected a JSON list of {{"role", "content"}}'
                             f" messages, got {type(messages).__name__}")  # fmt: skip
    return messages
