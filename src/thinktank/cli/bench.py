"""``thinktank bench``: strategies x models on a suite, scored and resumable."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table

from thinktank.cli.common import (
    add_budget_arguments,
    add_executor_arguments,
    add_json_argument,
    bench_progress,
    budget,
    executor,
    positive,
    print_json,
    stderr,
    table_console,
)

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
    bench.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from thinktank.api import benchmark, report
    from thinktank.strategies import build_strategy

    for spec in args.strategy:
        build_strategy(spec)  # bad specs fail before anything loads
    progress = bench_progress()
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
        stderr.print(f"report: {report(outcome.run_id, out)}")
    if args.json:
        print_json(outcome.to_dict())
        return 0
    _print_summaries(outcome)
    return 0


def _print_summaries(outcome: BenchOutcome) -> None:
    """One row per strategy and model on stdout, the run's wall time on stderr."""
    from thinktank.bench.report import (
        cost_of_pass_text,
        cost_per_problem_text,
        pass_at_k_output_text,
        wall_time_text,
    )

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
    table_console().print(table)
    stderr.print(f"run {outcome.run_id}: {wall_time_text(outcome.attempts)}; model-s sums each "
                 "problem's time in model calls (concurrent problems overlap)"
                 + ("; a pass@k output's any-of-k figure is not its accuracy" if several else "")
                 + f"; `thinktank report {outcome.run_id}` draws the plots")  # fmt: skip
