"""``thinktank bench``: strategies x models on a suite, scored and resumable."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.markup import escape
from rich.table import Table

from thinktank.cli.common import (
    add_budget_arguments,
    add_executor_arguments,
    add_json_argument,
    add_log_texts_argument,
    bench_progress,
    budget,
    chosen_model,
    executor,
    positive,
    print_json,
    stderr,
    table_console,
)
from thinktank.config import home

if TYPE_CHECKING:
    from thinktank.api import BenchOutcome


def add_parser(commands: Any) -> None:
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
    add_budget_arguments(bench, " per problem")
    bench.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    bench.add_argument(
        "--concurrency",
        type=positive(int),
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
    add_executor_arguments(bench)
    bench.add_argument("--out", help="also write the report and results.json into this folder")
    add_json_argument(bench)
    add_log_texts_argument(bench)
    bench.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from thinktank.api import benchmark, report
    from thinktank.strategies import build_strategy

    built = [build_strategy(spec) for spec in args.strategy]  # bad specs fail before loading
    models = args.model or [chosen_model(*built)]
    progress = bench_progress()
    solved: list[bool] = []
    task_id = progress.add_task("loading", total=None, accuracy="")

    def on_plan(plan: Any) -> None:
        resumed = f" (resuming: {plan.done} done)" if plan.done else ""
        if plan.done:
            left = plan.total - plan.done
            stderr.print(f"resuming run {plan.run_id}: {plan.done} of {plan.total} results are"
                         f" in the ledger already and are not redone; {left} to go",
                         soft_wrap=True)  # fmt: skip
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
            models,
            seed=args.seed,
            budget=budget(args),
            concurrency=args.concurrency,
            share_samples=args.share_samples,
            on_plan=on_plan,
            on_result=on_result,
            executor=executor(args),
        )
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(outcome.to_dict(), indent=2))
        stderr.print(f"report: {report(outcome.run_id, out)}", soft_wrap=True)  # to paste
    if args.json:
        print_json(outcome.to_dict())
        return 0
    _print_summaries(outcome)
    return 0


def _print_summaries(outcome: BenchOutcome) -> None:
    """One numbered row per strategy and model on stdout, each configuration's whole
    spec below the table (numbers stay in 80 columns, specs can be pasted back), and
    on stderr what the columns mean and where the report is."""
    from thinktank.bench.report import (
        cost_of_pass_text,
        cost_per_problem_text,
        pass_at_k_output_text,
        wall_time_text,
    )

    several = any(s.pass_at_k_output is not None for s in outcome.summaries)
    table = Table("#", "problems", "accuracy", "95% CI", "tokens\n/problem", "$\n/problem",
                  "cost-of-\npass $", "model\nseconds", *(["pass@k output\n(k answers)"]
                                                          if several else []),
                  box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
    for number, s in enumerate(outcome.summaries, start=1):
        cop = cost_of_pass_text(s)
        table.add_row(
            str(number),
            str(s.n_problems),
            f"{s.accuracy:.2f}",
            f"{s.ci95[0]:.2f}-{s.ci95[1]:.2f}",
            f"{s.tokens_per_problem:.0f}",
            cost_per_problem_text(s),
            f"[green]{cop}" if s.on_frontier else cop,
            f"{s.model_seconds:.0f}",
            *([pass_at_k_output_text(s)] if several else []),
        )
    console = table_console()
    console.print(table)
    for number, s in enumerate(outcome.summaries, start=1):
        console.print(f"{number:>2}  {escape(s.strategy)} on {escape(s.model)}", soft_wrap=True)
    stderr.print(
        f"run {outcome.run_id}: {wall_time_text(outcome.attempts)}. accuracy: the share of"
        " problems whose committed answer the grader scored right (95% CI: Wilson);"
        " tokens: prompt + completion, every call; cost-of-pass: $ per problem /"
        " accuracy (green: on the accuracy-cost Pareto front); model seconds: time in"
        " model calls, summed over problems (concurrent problems overlap)"
        + ("; a pass@k output's any-of-k figure is not its accuracy" if several else "")
        + f". The run is in {home() / 'ledger.db'}; its plots and whole report: thinktank"
        f" report {outcome.run_id} (or bench --out DIR); every answer: thinktank view",
        soft_wrap=True,
    )
