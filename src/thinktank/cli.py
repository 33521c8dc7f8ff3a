"""The ``thinktank`` command line. Each command is a thin layer over the Python API.

Exit codes: 0 success, 2 bad input (unknown model/strategy, bad spec, empty
question), 130 interrupted. With ``--json`` exactly one JSON object goes to
stdout; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
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
from rich.table import Table

from thinktank.errors import ThinktankError
from thinktank.problem import KINDS, Problem
from thinktank.server.limits import FLAGS as LIMIT_FLAGS
from thinktank.server.limits import RequestLimits

if TYPE_CHECKING:
    from thinktank.tune import TuneOutcome

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args.handler(args)
    except ThinktankError as exc:
        stderr.print(f"[red]error:[/] {exc}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        stderr.print("interrupted: model calls made so far are in the ledger (`thinktank ledger`)")
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thinktank",
        description="Make language models think harder: sample, vote, verify, search "
        "- and price every answer.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

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
        "--model", "-m", default="smollm2", help="model spec (default: smollm2; see `models`)"
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
    _add_budget_arguments(solve, "")
    solve.add_argument("--seed", type=int, help="random seed: the same seed gives the same run")
    solve.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    solve.set_defaults(handler=_solve)

    bench = commands.add_parser(
        "bench",
        help="run strategies x models on a suite; resumable",
        description="Run every strategy on every model over every problem of SUITE, scoring "
        "each answer against the suite's ground truth (which strategies never see). Results "
        "go to the ledger as they come: run the same command again to resume (an option "
        "that changes what is measured, --no-share-samples included, starts a new run).",
        epilog='example: thinktank bench --suite "rg:chain_sum?min_terms=2&max_terms=2'
        '&min_digits=1&max_digits=1&size=30&seed=1" --strategy single '
        "--strategy self-consistency:n=8",
    )
    bench.add_argument(
        "--suite",
        required=True,
        help="rg:DATASET?param=value&size=N&seed=S | humaneval[?size=N] | jsonl:PATH",
    )
    bench.add_argument(
        "--strategy", "-s", action="append", required=True, help="strategy spec (repeatable)"
    )
    bench.add_argument(
        "--model", "-m", action="append", help="model spec (repeatable; default: smollm2)"
    )
    _add_budget_arguments(bench, " per problem")
    bench.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    bench.add_argument(
        "--concurrency",
        type=_positive(int),
        default=4,
        help="problems in flight at once (default 4): the embedded model decodes their "
        "samples in one batch",
    )
    bench.add_argument(
        "--no-share-samples",
        dest="share_samples",
        action="store_false",
        help="draw every strategy's samples afresh (by default strategies that draw the same "
        "seeded samples get them once, and each is still charged for them); a run of its own",
    )
    _add_executor_arguments(bench)
    bench.add_argument("--out", help="also write the report and results.json into this folder")
    bench.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    bench.set_defaults(handler=_bench)

    tune = commands.add_parser(
        "tune",
        help="find the configuration that buys correct answers cheapest; cross-validate it",
        description="Score configurations (strategy, n, temperature, model, cascade "
        "threshold) on SUITE under a budget, cheapest first, and print the accuracy-cost "
        "Pareto front. Then split the problems into seeded folds: each fold chooses the "
        "configuration for a cost per problem or a target accuracy (default: the lowest "
        "cost-of-pass) on the other folds' problems and is checked on its own, which played no "
        "part in the choice. The recommendation is the choice of most folds; the spread of "
        "the held-out figures is printed, with a warning for each fold whose held-out accuracy "
        "falls outside its development interval. Folds cost no extra model calls. Resumable: "
        "run the same command again to continue.",
        epilog='example: thinktank tune --suite "rg:chain_sum?min_terms=2&max_terms=2'
        '&min_digits=1&max_digits=1&size=40&seed=3" -m smollm2 -m gemma3-270m '
        "--budget-usd 0.001",
    )
    tune.add_argument("--suite", required=True, help="suite spec, as for `bench`")
    tune.add_argument("--model", "-m", action="append",
                      help="model spec (repeatable; default: smollm2)")  # fmt: skip
    tune.add_argument(
        "--strategy",
        "-s",
        action="append",
        help="strategy spec to try on every model (repeatable; default: single, "
        "self-consistency n=2/4/8 and temperatures 0.7/1.0, and with several models cascades "
        "at thresholds 0.3/0.5/0.7)",
    )
    tune.add_argument("--folds", type=int,
                      help="cross-validation folds, 2 or more (default 5, or one per problem"
                      " on a smaller suite)")  # fmt: skip
    scope = " for the whole search: a configuration starts only if its estimated cost fits"
    _add_budget_arguments(tune, scope, cap="cap")
    goal = tune.add_mutually_exclusive_group()
    goal.add_argument("--max-cost-per-problem", type=_positive(float),
                      help="recommend the most accurate configuration within this many USD"
                      " per problem")  # fmt: skip
    goal.add_argument(
        "--target-accuracy",
        type=float,
        help="recommend the cheapest configuration reaching this accuracy",
    )
    tune.add_argument("--seed", type=int, default=0, help="fold and sampling seed (default 0)")
    tune.add_argument("--concurrency", type=_positive(int), default=4,
                      help="problems in flight at once (default 4)")  # fmt: skip
    _add_executor_arguments(tune)
    tune.add_argument("--out", help="folder for pareto.png and tune.json "
                      "(default: ~/.thinktank/tune/ID)")  # fmt: skip
    tune.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    tune.set_defaults(handler=_tune)

    report = commands.add_parser(
        "report",
        help="write a Markdown report with plots for a bench run",
        description="Write report.md and PNG plots for a bench run, from the ledger.",
    )
    report.add_argument("run", help="a bench run id, or a folder written by `bench --out`")
    report.add_argument("--out", help="folder for the report (default: ~/.thinktank/reports/RUN)")
    report.set_defaults(handler=_report)

    models = commands.add_parser("models", help="list the models available")
    models.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    models.set_defaults(handler=_models)

    strategies = commands.add_parser("strategies", help="list the strategies and their options")
    strategies.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    strategies.set_defaults(handler=_strategies)

    serve = commands.add_parser(
        "serve",
        help="serve models and strategies behind the OpenAI chat-completions API",
        description="An OpenAI-compatible server: POST /v1/chat/completions with model "
        "MODEL (plain sampling) or STRATEGY/MODEL (e.g. self-consistency:n=8/smollm2), or "
        'extra_body={"thinktank": {"strategy": ...}}; GET /v1/models. Every call is in the '
        "ledger. What you configure here is all a request can name: the served models (for "
        "pools and judges too), the process-reward endpoints and the strategies, by name; "
        "never a URL, a file, an environment variable or a module. Each request is held to "
        "the --max-request-* limits.",
        epilog="example: thinktank serve --port 8000 --model smollm2 "
        "--model qwen=openai:Qwen/Qwen3-8B@http://gpu:8000/v1 --api-key secret",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (8000)")
    serve.add_argument("--model", "-m", action="append", metavar="[NAME=]SPEC",
                       help="model to serve, under NAME or its spec (repeatable; default: "
                       "smollm2)")  # fmt: skip
    serve.add_argument("--process-reward", action="append", default=[],
                       metavar="NAME=URL[#MODEL]",
                       help="a process reward model endpoint requests may use as "
                       "value=prm@NAME (repeatable)")  # fmt: skip
    serve.add_argument("--strategy", "-s", action="append", metavar="NAME",
                       help="a strategy requests may use (repeatable; default: all)")  # fmt: skip
    serve.add_argument("--api-key", default=os.environ.get("THINKTANK_API_KEY"), metavar="KEY",
                       help="required as 'Authorization: Bearer KEY' (default: "
                       "$THINKTANK_API_KEY; none: no key needed)")  # fmt: skip
    serve.add_argument("--max-concurrent", type=_positive(int), default=4, metavar="N",
                       help="requests worked on at once; the rest wait (4)")  # fmt: skip
    defaults = RequestLimits()
    for field, what in (
        ("tokens", "tokens one request may spend, all calls"),
        ("seconds", "seconds one request may hold the model"),
        ("samples", "samples, agents, beams, rollouts... in one request"),
        ("steps", "rounds, layers, steps... of one request"),
        ("sample_tokens", "tokens of one sample or step"),
    ):
        default = getattr(defaults, field)
        serve.add_argument(LIMIT_FLAGS[field], dest=f"limit_{field}", type=_positive(type(default)),
                           default=default, metavar="N" if isinstance(default, int) else "S",
                           help=f"{what} ({default:g})")  # fmt: skip
    serve.set_defaults(handler=_serve)

    ledger = commands.add_parser("ledger", help="recent runs with their tokens and cost")
    ledger.add_argument("--limit", type=_positive(int), default=20, help="runs to show (20)")
    ledger.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ledger.set_defaults(handler=_ledger)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from thinktank.ledger import Ledger
    from thinktank.models import load_model
    from thinktank.server import create_app

    models = dict(_named(entry, "--model") for entry in args.model or ["smollm2"])
    rewards = dict(_named(entry, "--process-reward", need_name=True)
                   for entry in args.process_reward)  # fmt: skip
    loaded = {name: load_model(spec) for name, spec in models.items()}  # fail before binding
    limits = RequestLimits(**{field: getattr(args, f"limit_{field}") for field in LIMIT_FLAGS})
    app = create_app(loaded, api_key=args.api_key, max_concurrent=args.max_concurrent,
                     ledger=Ledger(), limits=limits, process_rewards=rewards,
                     strategies=args.strategy)  # fmt: skip
    stderr.print(f"serving {', '.join(loaded)} on http://{args.host}:{args.port}/v1")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _named(entry: str, flag: str, *, need_name: bool = False) -> tuple[str, str]:
    """``NAME=SPEC`` (or a bare ``SPEC``, named by itself) from a repeatable option."""
    name, equals, spec = entry.partition("=")
    if equals and name.strip() and spec.strip() and "/" not in name and ":" not in name:
        return name.strip(), spec.strip()
    if need_name:
        raise ThinktankError(f"{flag} {entry!r}: expected NAME=VALUE")
    return entry.strip(), entry.strip()


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 1 and 65535, got {port}")
    return port


def _add_budget_arguments(
    parser: argparse.ArgumentParser, scope: str, cap: str = "hard cap"
) -> None:
    parser.add_argument("--budget-tokens", type=_positive(int), help=f"{cap} on tokens{scope}")
    parser.add_argument("--budget-usd", type=_positive(float), help=f"{cap} on cost in USD{scope}")
    parser.add_argument(
        "--budget-seconds", type=_positive(float), help=f"cap on time in model calls{scope}"
    )


def _add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where problems run: in this process (local, the default) or on Ray workers "
        "(ray: a local Ray instance unless --address names a cluster; --concurrency is then "
        "the most problems in flight per model)",
    )
    parser.add_argument("--address", help="the Ray cluster to join (e.g. ray://HEAD:10001, auto)")
    parser.add_argument("--ray-actors", type=_positive(int), default=1,
                        help="Ray workers per model, each loading it once (default 1)")  # fmt: skip
    parser.add_argument("--ray-cpus", type=_positive(int), default=1,
                        help="cores each Ray worker reserves and decodes with (1)")  # fmt: skip


def _budget(args: argparse.Namespace) -> Any:
    from thinktank.meter import Budget

    if args.budget_tokens is None and args.budget_usd is None and args.budget_seconds is None:
        return None
    return Budget(args.budget_tokens, args.budget_usd, args.budget_seconds)


def _positive(kind: type) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return convert


def _table_console() -> Console:
    """Tables go to stdout; piped, they are not cut to 80 columns."""
    return stdout if stdout.is_terminal else Console(width=160, highlight=False)


def _print_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextmanager
def _thinking(label: str) -> Iterator[Any]:
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


def _solve(args: argparse.Namespace) -> int:
    from thinktank.api import KindWarning, solve
    from thinktank.models import load_model
    from thinktank.strategies import build_strategy

    problem = _conversation(args)
    strategy = build_strategy(args.strategy)  # bad specs fail before the model loads
    budget = _budget(args)
    with _thinking(f"loading {args.model}"):
        model = load_model(args.model)
    kind = problem.kind
    if args.kind is None:
        stderr.print(f"kind   {kind} (inferred from the question; --kind to choose)")
    started = time.monotonic()
    with (
        _thinking(f"{strategy.spec} on {model.name}") as progress,
        warnings.catch_warnings(record=True, category=KindWarning) as hints,
    ):
        solution = solve(
            problem,
            model=model,
            strategy=strategy,
            budget=budget,
            seed=args.seed,
            progress=progress,
        )
    if hints:
        stderr.print(
            "[yellow]hint:[/] no numeric answer found; for a question answered in words use"
            " --kind text"
        )
    if args.json:
        _print_json(
            {**solution.to_dict(), "kind": kind, "wall_seconds": time.monotonic() - started}
        )
        return 0
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
    return 0


def _bench(args: argparse.Namespace) -> int:
    from thinktank.api import benchmark, report
    from thinktank.bench.report import (
        cost_of_pass_text,
        cost_per_problem_text,
        pass_at_k_output_text,
        wall_time_text,
    )
    from thinktank.strategies import build_strategy

    for spec in args.strategy:
        build_strategy(spec)  # bad specs fail before anything loads
    progress = _bench_progress()
    solved: list[bool] = []
    task_id = progress.add_task("loading", total=None, accuracy="")

    def on_plan(plan: Any) -> None:
        resumed = f" (resuming: {plan.done} done)" if plan.done else ""
        progress.update(task_id, description=f"{plan.run_id}{resumed}", total=plan.total,
                        completed=plan.done)  # fmt: skip
        if plan.unpriced:
            stderr.print(f"[yellow]warning:[/] {', '.join(plan.unpriced)} has no price in the "
                         "price book: its cost and cost-of-pass are reported unknown, not $0 "
                         "(add it to $THINKTANK_HOME/prices.toml)")  # fmt: skip

    def on_result(row: Any) -> None:
        solved.append(row.score >= 1)  # full credit, as the summary counts it
        accuracy = f"accuracy so far {sum(solved) / len(solved):.2f}"
        progress.update(task_id, advance=1, accuracy=accuracy)

    with progress:
        outcome = benchmark(
            args.suite,
            args.strategy,
            args.model or ["smollm2"],
            seed=args.seed,
            budget=_budget(args),
            concurrency=args.concurrency,
            share_samples=args.share_samples,
            on_plan=on_plan,
            on_result=on_result,
            executor=_executor(args),
        )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(outcome.to_dict(), indent=2))
        stderr.print(f"report: {report(outcome.run_id, out)}")
    if args.json:
        _print_json(outcome.to_dict())
        return 0
    several = any(s.pass_at_k_output is not None for s in outcome.summaries)
    table = Table("strategy", "model", "n", "accuracy (95% CI)", "tokens/problem", "$/problem",
                  "cost-of-pass $", "model-s", *(["pass@k output (k answers)"] if several else []),
                  box=box.SIMPLE_HEAD)  # fmt: skip
    for s in outcome.summaries:
        cop = cost_of_pass_text(s)
        table.add_row(
            s.strategy,
            s.model,
            str(s.n_problems),
            f"{s.accuracy:.2f} ({s.ci95[0]:.2f}-{s.ci95[1]:.2f})",
            f"{s.tokens_per_problem:.0f}",
            cost_per_problem_text(s),
            f"[green]{cop}" if s.on_frontier else cop,
            f"{s.model_seconds:.0f}",
            *([pass_at_k_output_text(s)] if several else []),
        )
    _table_console().print(table)
    stderr.print(f"run {outcome.run_id}: {wall_time_text(outcome.attempts)}; model-s sums each "
                 "problem's time in model calls (concurrent problems overlap)"
                 + ("; a pass@k output's any-of-k figure is not its accuracy" if several else "")
                 + f"; `thinktank report {outcome.run_id}` draws the plots")  # fmt: skip
    return 0


def _bench_progress() -> Progress:
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


def _executor(args: argparse.Namespace) -> Any:
    """The Ray executor the arguments ask for; None runs problems in this process."""
    if args.executor == "local":
        if args.address is not None:
            raise ThinktankError("--address needs --executor ray")
        return None
    from thinktank.bench.distributed import RayExecutor

    return RayExecutor(address=args.address, actors=args.ray_actors, cpus=args.ray_cpus)


def _tune(args: argparse.Namespace) -> int:
    from thinktank.strategies import build_strategy
    from thinktank.tune import tune

    for spec in args.strategy or []:
        build_strategy(spec)  # bad specs fail before anything loads
    progress = _bench_progress()
    task_id = progress.add_task("tuning", total=None, accuracy="")

    def on_result(row: Any) -> None:
        progress.update(task_id, advance=1, accuracy=f"{row.strategy} @ {row.model}")

    with progress:
        outcome = tune(
            args.suite,
            args.model or ["smollm2"],
            args.strategy,
            folds=args.folds,
            budget=_budget(args),
            max_cost_per_problem=args.max_cost_per_problem,
            target_accuracy=args.target_accuracy,
            seed=args.seed,
            concurrency=args.concurrency,
            out_dir=args.out,
            executor=_executor(args),
            on_start=lambda total: progress.update(task_id, total=total),
            on_resumed=lambda done: progress.update(task_id, advance=done),
            on_result=on_result,
        )
    if args.json:
        _print_json(outcome.to_dict())
        return 0
    table = Table("configuration", "accuracy, all problems (95% CI)", "$/problem",
                  "cost-of-pass $", "Pareto", box=box.SIMPLE_HEAD)  # fmt: skip
    for e in sorted(outcome.evaluated, key=lambda e: e.summary.cost_per_problem):
        s = e.summary
        chosen = outcome.recommended is e
        table.add_row(
            f"[bold green]{e.configuration.label}" if chosen else e.configuration.label,
            f"{s.accuracy:.2f} ({s.ci95[0]:.2f}-{s.ci95[1]:.2f})",
            f"{s.cost_per_problem:.3g}",
            "-" if s.cost_of_pass_usd is None else f"{s.cost_of_pass_usd:.3g}",
            "*" if s.on_pareto_front else "",
        )
    _table_console().print(table)
    spent = outcome.spent
    stderr.print(f"search: {len(outcome.evaluated)} configurations on {outcome.problems} "
                 f"problems, {spent['tokens']:,.0f} tokens, ${spent['cost_usd']:.3g}"
                 + (f"; {len(outcome.skipped)} left untried by the budget" if outcome.skipped
                    else ""))  # fmt: skip
    _print_folds(outcome)
    if outcome.recommended is None or outcome.held_out is None:
        stderr.print(f"[yellow]no recommendation: {outcome.reason}")
    else:
        console = _table_console()
        console.print(f"recommended: [bold]{outcome.recommended.configuration.label}[/] "
                      f"({outcome.reason})")  # fmt: skip
        for figures, s in (("all problems", outcome.recommended.summary),
                           ("held out", outcome.held_out.summary)):  # fmt: skip
            cop = "-" if s.cost_of_pass_usd is None else f"${s.cost_of_pass_usd:.3g}"
            console.print(f"  {figures:<12} accuracy {s.accuracy:.2f} ({s.ci95[0]:.2f}-"
                          f"{s.ci95[1]:.2f}) on {s.n_problems}, ${s.cost_per_problem:.3g}/problem,"
                          f" cost-of-pass {cop}")  # fmt: skip
        console.print("  (held out: the problems of the folds that chose it, none of which"
                      " played a part in choosing it there)")  # fmt: skip
    for warning in outcome.warnings:
        stderr.print(f"[yellow]warning: {warning}")
    stderr.print(f"plot: {outcome.plot}")
    return 0


def _print_folds(outcome: TuneOutcome) -> None:
    """Each fold's choice on its development problems and on its held-out ones, and the
    spread of the held-out figures."""
    table = Table("fold", "chosen on the other folds", "development (95% CI)", "held out",
                  box=box.SIMPLE_HEAD)  # fmt: skip
    for fold in outcome.folds:
        if fold.chosen is None or fold.held_out is None:
            table.add_row(str(fold.number), f"none: {fold.reason}", "-", "-")
            continue
        dev, held = fold.chosen.summary, fold.held_out.summary
        table.add_row(
            str(fold.number),
            fold.chosen.configuration.label,
            f"{dev.accuracy:.2f} ({dev.ci95[0]:.2f}-{dev.ci95[1]:.2f}) on {dev.n_problems}",
            f"{held.accuracy:.2f} on {held.n_problems}"
            + (" [yellow](outside)" if fold.outside_dev_interval else ""),
        )
    console = _table_console()
    console.print(table)
    spread = outcome.held_out_spread
    if spread is not None:
        console.print(f"held-out accuracy of the folds' choices: mean {spread['mean']:.2f},"
                      f" range {spread['min']:.2f}-{spread['max']:.2f}")  # fmt: skip


def _report(args: argparse.Namespace) -> int:
    from thinktank.api import report

    run_id, out = args.run, args.out
    saved = Path(args.run) / "results.json"
    if saved.is_file():  # a folder written by `bench --out`
        run_id = json.loads(saved.read_text())["run_id"]
        out = out or args.run
    stdout.print(str(report(run_id, out)))
    return 0


def _models(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from thinktank.models import MODELS
    from thinktank.models.profiles import LOCAL_PROFILE, OPENAI_PROFILE, PROFILES

    rows = [
        (m.name, m.description, PROFILES.get(m.name, LOCAL_PROFILE)) for m in MODELS.values()
    ] + [
        ("gguf:PATH[?chat=1]", "any local GGUF file through llama.cpp", LOCAL_PROFILE),
        (
            "torch:PATH[?chat=1&weights=bfloat16]",
            "a local llama-architecture GGUF file through PyTorch (shared KV cache: hogwild)",
            LOCAL_PROFILE,
        ),
        (
            "openai:MODEL@BASE_URL",
            "any OpenAI-compatible endpoint (vLLM, SGLang, ...)",
            OPENAI_PROFILE,
        ),
    ]
    if args.json:
        _print_json(
            {
                "models": [
                    {"name": name, "description": text, "default_sampling": asdict(profile)}
                    for name, text, profile in rows
                ]
            }
        )
        return 0
    table = Table(
        "model",
        "description",
        "default sampling",
        caption="a strategy option left unset takes the model's default sampling",
    )
    for name, text, profile in rows:
        table.add_row(name, text, profile.describe())
    stdout.print(table)
    return 0


def _strategies(args: argparse.Namespace) -> int:
    from thinktank.spec import options_string
    from thinktank.strategies import STRATEGIES

    rows = [
        {"name": cls.name, "summary": cls.summary, "options": options_string(cls)}
        for cls in STRATEGIES.values()
    ]
    if args.json:
        _print_json({"strategies": rows})
        return 0
    table = Table(
        "strategy",
        "what it does",
        "options (defaults)",
        caption="an option at None takes the model's default (thinktank models)",
    )
    for row in rows:
        table.add_row(row["name"], row["summary"], row["options"])
    stdout.print(table)
    return 0


def _ledger(args: argparse.Namespace) -> int:
    from thinktank.ledger import Ledger

    runs = Ledger().recent_runs(args.limit)
    if args.json:
        _print_json({"runs": [run.__dict__ for run in runs]})
        return 0
    # In a terminal the question and the strategy give way first.
    console = _table_console()
    fixed = {"run": 8, "started": 11, "model": 10, "answer": 8, "tokens": 6, "cost $": 8, "s": 6}
    flexible = max(6, min(28, (console.width - sum(fixed.values()) - 3 * 9) // 2))
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("run", "started", "strategy", "model", "question", "answer", "tokens", "cost $",
                 "s"):  # fmt: skip
        width = fixed.get(name, flexible)
        table.add_column(name, overflow="ellipsis", no_wrap=True, max_width=width)
    for run in runs:
        table.add_row(
            run.run_id[:8],
            time.strftime("%m-%d %H:%M", time.localtime(run.started_at)),
            run.strategy or "",
            run.model or "",
            run.question or "",
            (run.answer or "-") if run.finished else "[yellow]unfinished",
            str(run.prompt_tokens + run.completion_tokens),
            f"{run.cost_usd:.2e}",
            f"{run.seconds:.1f}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
