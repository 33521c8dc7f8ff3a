"""`solve`: one question, one strategy, one model, metered and recorded."""

from __future__ import annotations

import uuid
from dataclasses import replace

from thinktank.ledger import Ledger
from thinktank.meter import Budget, Meter
from thinktank.models import DEFAULT_MODEL, Model, load_model
from thinktank.models.base import ProgressCallback
from thinktank.problem import Kind, Problem
from thinktank.solution import Solution
from thinktank.strategies import DEFAULT_STRATEGY, Context, Strategy, build_strategy


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def solve(
    question: str | Problem,
    *,
    model: str | Model = DEFAULT_MODEL,
    strategy: str | Strategy = DEFAULT_STRATEGY,
    budget: Budget | None = None,
    seed: int | None = None,
    kind: Kind = "math",
    ledger: Ledger | None = None,
    progress: ProgressCallback | None = None,
) -> Solution:
    """Answer ``question`` with ``strategy`` on ``model`` within ``budget``.

    Every model call is recorded in ``ledger`` (default: ``$THINKTANK_HOME/ledger.db``)
    under a new run id, which the returned `Solution` carries.

    >>> thinktank.solve("What is 7 + 5?", strategy="self-consistency:n=8", seed=0).answer
    '12'
    """
    problem = question if isinstance(question, Problem) else Problem("q0", question, kind)
    strategy = build_strategy(strategy)
    model = load_model(model)
    ledger = ledger if ledger is not None else Ledger()
    run_id = new_run_id()
    ledger.start_run(
        run_id, "solve", strategy=strategy.spec, model=model.name, question=problem.prompt
    )
    meter = Meter(
        budget, ledger=ledger, run_id=run_id, strategy=strategy.spec, problem_id=problem.id
    )
    ctx = Context(model=model, meter=meter, seed=seed, progress=progress)
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
    return solution
