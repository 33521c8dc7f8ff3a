"""``thinktank tune``: the configuration that buys correct answers cheapest, cross-validated."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Column, Table

from thinktank.cli.common import (
    add_budget_arguments,
    add_executor_arguments,
    add_json_argument,
    add_log_texts_argument,
    bench_progress,
    budget,
    executor,
    positive,
    print_json,
    stderr,
    table_console,
)

if TYPE_CHECKING:
    from thinktank.tune import TuneOutcome


def add_parser(commands: Any) -> None:
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
    add_budget_arguments(tune, scope, cap="cap")
    goal = tune.add_mutually_exclusive_group()
    goal.add_argument("--max-cost-per-problem", type=positive(float),
                      help="recommend the most accurate configuration within this many USD"
                      " per problem")  # fmt: skip
    goal.add_argument(
        "--target-accuracy",
        type=float,
        help="recommend the cheapest configuration reaching this accuracy",
    )
    tune.add_argument("--seed", type=int, default=0, help="fold and sampling seed (default 0)")
    tune.add_argument("--concurrency", type=positive(int), default=4,
                      help="problems in flight at once (default 4)")  # fmt: skip
    add_executor_arguments(tune)
    tune.add_argument("--out", help="folder for pareto.png and tune.json "
                      "(default: ~/.thinktank/tune/ID)")  # fmt: skip
    add_json_argument(tune)
    add_log_texts_argument(tune)
    tune.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from thinktank.strategies import build_strategy
    from thinktank.tune import tune

    for spec in args.strategy or []:
        build_strategy(spec)  # bad specs fail before anything loads
    progress = bench_progress()
    task_id = progress.add_task("tuning", total=None, accuracy="")

    def on_result(row: Any) -> None:
        progress.update(task_id, advance=1, accuracy=f"{row.strategy} @ {row.model}")

    def resumed(done: int) -> None:
        stderr.print(f"resuming: {done} results of earlier runs are in the ledger already"
                     " and are not redone", soft_wrap=True)  # fmt: skip
        progress.update(task_id, advance=done)

    with progress:
        outcome = tune(
            args.suite,
            args.model or ["smollm2"],
            args.strategy,
            folds=args.folds,
            budget=budget(args),
            max_cost_per_problem=args.max_cost_per_problem,
            target_accuracy=args.target_accuracy,
            seed=args.seed,
            concurrency=args.concurrency,
            out_dir=args.out,
            executor=executor(args),
            on_start=lambda total: progress.update(task_id, total=total),
            on_resumed=resumed,
            on_result=on_result,
        )
    if args.json:
        print_json(outcome.to_dict())
        return 0
    _print_search(outcome)
    _print_folds(outcome)
    _print_recommendation(outcome)
    for warning in outcome.warnings:
        stderr.print(f"[yellow]warning: {warning}")
    stderr.print(f"plot: {outcome.plot}", soft_wrap=True)  # a path to paste: never folded
    return 0


def _print_search(outcome: TuneOutcome) -> None:
    """Every configuration scored, cheapest first, the Pareto front marked; what it cost."""
    # Specs fold onto more lines rather than lose their end: they are what is compared.
    table = Table(Column("configuration", overflow="fold"), "accuracy, all problems (95% CI)",
                  "$/problem", "cost-of-pass $", "Pareto", box=box.SIMPLE_HEAD)  # fmt: skip
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
    table_console().print(table)
    spent = outcome.spent
    stderr.print(f"search: {len(outcome.evaluated)} configurations on {outcome.problems} "
                 f"problems, {spent['tokens']:,.0f} tokens, ${spent['cost_usd']:.3g}"
                 + (f"; {len(outcome.skipped)} left untried by the budget" if outcome.skipped
                    else ""))  # fmt: skip


def _print_folds(outcome: TuneOutcome) -> None:
    """Each fold's choice on its development problems and on its held-out ones, and the
    spread of the held-out figures."""
    table = Table("fold", Column("chosen on the other folds", overflow="fold"),
                  "development (95% CI)", "held out", box=box.SIMPLE_HEAD)  # fmt: skip
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
    console = table_console()
    console.print(table)
    spread = outcome.held_out_spread
    if spread is not None:
        console.print(f"held-out accuracy of the folds' choices: mean {spread['mean']:.2f},"
                      f" range {spread['min']:.2f}-{spread['max']:.2f}")  # fmt: skip


def _print_recommendation(outcome: TuneOutcome) -> None:
    """The recommended configuration with its figures on all problems and held out."""
    if outcome.recommended is None or outcome.held_out is None:
        stderr.print(f"[yellow]no recommendation: {outcome.reason}")
        return
    console = table_console()
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
