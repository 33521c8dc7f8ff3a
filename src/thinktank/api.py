"""The Python entry points: `solve` one question, `bench` a suite, `report` a bench run."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from thinktank.bench.runner import BenchPlan, Executor, plan_bench, run_bench
from thinktank.bench.suites import Suite
from thinktank.bench.summary import ConfigSummary, summarize
from thinktank.config import home
from thinktank.errors import ThinktankError
from thinktank.ledger import BenchAttempt, Ledger, ResultRow
from thinktank.ledger_texts import Transcript
from thinktank.meter import Budget, Meter
from thinktank.models import DEFAULT_MODEL, Model, default_model_for, load_model
from thinktank.models.base import Message, ProgressCallback
from thinktank.problem import Kind, Problem, infer_kind
from thinktank.resolver import Resolver
from thinktank.solution import Solution
from thinktank.strategies import DEFAULT_STRATEGY, Context, Strategy, build_strategy
from thinktank.verify import answered_in_words


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def solve(
    question: str | Sequence[Message] | Problem,
    *,
    model: str | Model | None = None,
    strategy: str | Strategy = DEFAULT_STRATEGY,
    budget: Budget | None = None,
    seed: int | None = None,
    kind: Kind | None = None,
    ledger: Ledger | None = None,
    progress: ProgressCallback | None = None,
) -> Solution:
    """Answer ``question`` with ``strategy`` on ``model`` within ``budget``.

    ``question`` is a string, a `Problem`, or a conversation: ``{"role", "content"}``
    messages (system, user, assistant) ending with the user message to answer,
    which the strategy's prompts keep whole (see `Problem.from_messages`; a
    ValueError says what is wrong with one). The ledger's run records the question.

    ``model`` defaults to `DEFAULT_MODEL`, or to the embedded model that can do what
    the strategy needs when that one cannot (hogwild: ``torch:smollm2``; see
    `thinktank.models.default_model_for`).

    Every model call is recorded in ``ledger`` (default: ``$THINKTANK_HOME/ledger.db``)
    under a new run id, which the returned `Solution` carries.

    ``kind`` (how answers are extracted and compared) defaults to the one the question
    asks for (`thinktank.problem.infer_kind`); a `Problem` keeps its own. When a
    ``math`` question's samples state no number but do answer in words, a `KindWarning`
    says so.

    >>> thinktank.solve("What is 7 + 5?", strategy="self-consistency:n=8", seed=0).answer
    '12'
    """
    problem = _as_problem(question, kind)
    strategy = build_strategy(strategy)
    resolver = Resolver()
    resolver.check(strategy.references())  # every model, verifier... it names, before spending
    model = load_model(model if model is not None else default_model_for(strategy.needs))
    ledger = ledger if ledger is not None else Ledger()
    run_id = new_run_id()
    ledger.start_run(
        run_id, "solve", strategy=strategy.spec, model=model.name, question=problem.prompt
    )
    meter = Meter(
        budget, ledger=ledger, run_id=run_id, strategy=strategy.spec, problem_id=problem.id
    )
    ctx = Context(model=model, meter=meter, seed=seed, progress=progress, resolver=resolver)
    solution = strategy.solve(problem, ctx)
    solution = replace(
        solution,
        usage=replace(meter.usage),
        budget_exhausted=solution.budget_exhausted or meter.exhausted,
        strategy=strategy.spec,
        model=model.name,
        problem_id=problem.id,
        run_id=run_id,
    )
    ledger.finish_run(run_id, answer=solution.answer, budget_exhausted=solution.budget_exhausted)
    ledger.record_transcript(run_id, strategy.spec, model.name, problem.id,
                             Transcript(problem.prompt, None, solution.to_dict()))  # fmt: skip
    texts = [candidate.text for candidate in solution.candidates]
    if problem.kind == "math" and solution.answer is None and answered_in_words(texts):
        message = "no numeric answer found; for a question answered in words use kind='text'"
        warnings.warn(KindWarning(message), stacklevel=2)
    return solution


def _as_problem(question: str | Sequence[Message] | Problem, kind: Kind | None) -> Problem:
    if isinstance(question, Problem):
        return question
    if isinstance(question, str):
        return Problem("q0", question, kind or infer_kind(question))
    return Problem.from_messages("q0", question, kind)


class KindWarning(UserWarning):
    """The problem's kind found no answer in the samples where another kind would."""


@dataclass
class BenchOutcome:
    """A bench run: its id, its arguments, one summary per strategy x model, and its
    attempts (the first and each resume), whose wall times add up to the run's."""

    run_id: str
    config: dict[str, Any]
    summaries: list[ConfigSummary]
    attempts: list[BenchAttempt] = field(default_factory=list)

    @property
    def wall_seconds(self) -> float:
        """The run's wall time: concurrent problems overlap (unlike ``model_seconds``)."""
        return sum(a.wall_seconds for a in self.attempts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "suite": self.config["suite"],
            "wall_seconds": self.wall_seconds,
            "attempts": [asdict(a) for a in self.attempts],
            "runs": [s.to_dict() for s in self.summaries],
        }


def benchmark(
    suite: str | Suite,
    strategies: Sequence[str | Strategy],
    models: Sequence[str | Model] = (DEFAULT_MODEL,),
    *,
    seed: int = 0,
    budget: Budget | None = None,
    ledger: Ledger | None = None,
    concurrency: int = 4,
    share_samples: bool = True,
    on_plan: Callable[[BenchPlan], None] | None = None,
    on_result: Callable[[ResultRow], None] | None = None,
    executor: Executor | None = None,
) -> BenchOutcome:
    """Run every strategy x model on every problem of ``suite``; resumable.

    Calling again with the same arguments continues the same run (same run id):
    problems already scored are not redone; any argument that changes what is
    measured (``share_samples`` too, and the models' prices) makes a new run.
    ``budget`` applies to each problem.
    ``concurrency`` problems are solved at once; the embedded backend batches
    their samples together, each in a KV stream of its own, so a seed gives the
    same run at any concurrency (on models whose kernels depend on the batch's
    size, Gemma 3, only at concurrency 1 in a fresh process: see README).
    ``share_samples`` lets strategies that draw the same seeded samples share
    them (drawn once, metered for each; see `run_bench`). With ``executor``
    (`thinktank.bench.distributed.RayExecutor`) problems run on Ray workers,
    ``concurrency`` at most per model; this process still writes the ledger.
    """
    ledger = ledger if ledger is not None else Ledger()
    plan = plan_bench(suite, strategies, models, seed=seed, budget=budget,
                      share_samples=share_samples, ledger=ledger)  # fmt: skip
    if on_plan is not None:
        on_plan(plan)
    results = run_bench(
        plan, ledger=ledger, concurrency=concurrency, on_result=on_result, executor=executor
    )
    config = ledger.bench_config(plan.run_id) or {}
    return BenchOutcome(
        plan.run_id, config, summarize(results, config), ledger.bench_attempts(plan.run_id)
    )


def load_bench(run_id: str, ledger: Ledger | None = None) -> BenchOutcome:
    """A bench run as stored in the ledger (finished or not): ``run_id`` is its id, a
    unique prefix of it, or ``last`` (`Ledger.find_run`)."""
    ledger = ledger if ledger is not None else Ledger()
    run_id = ledger.find_run(run_id, command="bench")
    config = ledger.bench_config(run_id)
    if config is None:
        raise ThinktankError(f"no bench run {run_id!r} in {ledger.path}")
    return BenchOutcome(run_id, config, summarize(ledger.results(run_id), config),
                        ledger.bench_attempts(run_id))  # fmt: skip


def report(run_id: str, out_dir: str | Path | None = None, ledger: Ledger | None = None) -> Path:
    """Write the Markdown report and plots of a bench run (its id, a unique prefix, or
    ``last``); returns the report's path."""
    from thinktank.bench.report import write_report  # matplotlib loads only when needed

    outcome = load_bench(run_id, ledger)
    target = Path(out_dir) if out_dir is not None else home() / "reports" / outcome.run_id
    return write_report(outcome.run_id, outcome.config, outcome.summaries, target, outcome.attempts)
