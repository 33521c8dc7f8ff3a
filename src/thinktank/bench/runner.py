"""The benchmark runner: every strategy x model on every problem, resumable.

A run's id is a hash of everything that changes what it measures (suite and its
problems, strategies, models and their prices, seed, budget, sample sharing), so
running the same command again continues the same run: problems with a stored
result are skipped, the rest are solved; a changed option starts a new run. Each
result is committed as soon as it is scored, so an interrupted run (Ctrl-C or
kill) loses at most the problems in flight. Each attempt's wall time is stored
with it (`Ledger.bench_attempts`).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Protocol

from thinktank.bench.suites import Suite, load_suite
from thinktank.economics import run_prices
from thinktank.errors import ThinktankError
from thinktank.ledger import BenchAttempt, CallLog, Ledger, ResultRow
from thinktank.ledger_texts import Transcript
from thinktank.meter import Budget, Meter, SampleStore
from thinktank.models import Model, load_model, load_models, sampling_profile
from thinktank.problem import Task
from thinktank.resolver import Reference, Resolver
from thinktank.solution import Solution
from thinktank.spec import options_string
from thinktank.strategies import Context, Strategy, build_strategy
from thinktank.verify import answer_key
from thinktank.verify.process import parse_process_reward
from thinktank.verify.verifiers import parse_verifier


@dataclass(frozen=True)
class BenchPlan:
    """What a run will do, and how much of it a previous attempt already did."""

    run_id: str
    suite: Suite
    strategies: list[Strategy]
    models: list[Model]
    seed: int
    budget: Budget | None  # per problem
    done: int
    total: int
    #: The spec each model was loaded from (what a remote worker loads again).
    model_specs: list[str] = field(default_factory=list)
    #: Strategies drawing the same seeded samples get them once (see `run_bench`).
    share_samples: bool = True
    #: Models the run may call that have no price: their cost is unknown, not $0.
    unpriced: list[str] = field(default_factory=list)


class Executor(Protocol):
    """Solves a plan's jobs somewhere other than this process, storing each result as it
    arrives (`thinktank.bench.distributed.RayExecutor`: on Ray workers)."""

    def run(
        self,
        plan: BenchPlan,
        jobs: Sequence[tuple[Strategy, Model, list[Task]]],
        *,
        ledger: Ledger,
        concurrency: int,
        on_result: Callable[[ResultRow], None] | None = None,
    ) -> None: ...


def bench_run_id(config: dict) -> str:
    """The same arguments give the same id: that is what makes a run resumable."""
    return "bench-" + hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def plan_bench(
    suite: str | Suite,
    strategies: Sequence[str | Strategy],
    models: Sequence[str | Model],
    *,
    seed: int = 0,
    budget: Budget | None = None,
    share_samples: bool = True,
    ledger: Ledger,
) -> BenchPlan:
    """Load everything and register the run (or find the run these arguments started).

    A dollar budget is refused when a model the run may call has no price: it could
    not hold.
    """
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    built = [build_strategy(s) for s in strategies]
    resolver = Resolver()
    for strategy in built:  # every model, verifier... a strategy names, before spending
        resolver.check(strategy.references())
    loaded = load_models(models)  # two specs of one model are refused
    specs, names = [s.spec for s in built], [m.name for m in loaded]
    # Models the strategies' options name (pools, judges) are priced and hashed too.
    named = {s.spec: [load_model(spec) for spec in dict.fromkeys(_named_models(s.references()))]
             for s in built}  # fmt: skip
    prices = run_prices([*loaded, *(m for group in named.values() for m in group)])
    unpriced = [name for name, price in prices.items() if price is None]
    if unpriced and budget is not None and budget.max_cost_usd is not None:
        raise ThinktankError(
            f"a dollar budget cannot hold: {', '.join(unpriced)} has no price in the price "
            "book (add it to $THINKTANK_HOME/prices.toml)"
        )
    # The digest keeps an edited JSONL file from resuming into a run of its old problems
    # (a problem's conversation counts; one without has the digest it always had).
    digest = hashlib.sha256(json.dumps([
        (t.problem.id, t.problem.prompt, *([list(t.problem.context)] if t.problem.context else []))
        for t in suite.tasks
    ]).encode()).hexdigest()[:12]  # fmt: skip
    config = {"suite": suite.spec, "suite_digest": digest, "strategies": specs, "models": names,
              "seed": seed, "budget": asdict(budget) if budget else None,
              "share_samples": share_samples, "prices": prices,
              "strategy_models": {spec: sorted({m.name for m in group})
                                  for spec, group in named.items() if group},
              # Every option, defaults included: a changed default is another measurement.
              "strategy_options": {s.spec: options_string(s) for s in built},
              # The options a strategy leaves unset are the model's: they are measured too.
              "sampling_profiles": {m.name: asdict(sampling_profile(m)) for m in
                                    [*loaded, *(m for g in named.values() for m in g)]},
              }  # fmt: skip
    run_id = bench_run_id(config)
    ledger.start_bench(run_id, config)
    ledger.start_run(run_id, "bench", strategy=", ".join(specs), model=", ".join(names),
                     question=suite.spec)  # fmt: skip
    done = len(ledger.results(run_id))
    total = len(suite.tasks) * len(built) * len(loaded)
    specs_given = [m if isinstance(m, str) else m.name for m in models]
    return BenchPlan(run_id, suite, built, loaded, seed, budget, done, total, specs_given,
                     share_samples, unpriced)  # fmt: skip


def _named_models(references: Iterable[Reference]) -> Iterator[str]:
    """The model specs among a strategy's references: pools, judges (``judge@MODEL``,
    ``pairwise@MODEL``), a rollout's judge."""
    for kind, spec in references:
        if kind == "process-reward":
            reward = parse_process_reward(spec)
            if reward.name != "rollout":
                continue
            kind, spec = "verifier", reward.verifier
        if kind == "verifier":
            verifier = parse_verifier(spec)
            if verifier.name == "py" or verifier.argument is None:
                continue
            kind, spec = "model", verifier.argument
        if kind == "model":
            yield spec


def run_bench(
    plan: BenchPlan,
    *,
    ledger: Ledger,
    concurrency: int = 1,
    samples: SampleStore | None = None,
    on_result: Callable[[ResultRow], None] | None = None,
    executor: Executor | None = None,
) -> list[ResultRow]:
    """Solve what is left of ``plan``; returns all of the run's results.

    With ``plan.share_samples``, strategies drawing the same seeded samples of a
    problem (self-consistency and best-of-n with the same n, say) get the very
    same samples, drawn once: their comparison is paired, and each is still
    metered as if it had drawn them alone (see `SampleStore`). Pass ``samples``
    to share them with other runs too (`thinktank.tune` does).

    The attempt's wall time (from here to its last result, concurrent problems
    overlapping) goes to the ledger as results come (`Ledger.bench_attempts`).

    With an ``executor`` (`thinktank.bench.distributed.RayExecutor`) the units
    run on Ray workers, ``concurrency`` of them at most per model, and this
    process stays the only writer of the ledger.
    """
    finished = {(r.strategy, r.model, r.problem_id) for r in ledger.results(plan.run_id)}
    # A job is a (strategy, model) and the tasks it solves together: one task each,
    # except for strategies that share a budget across the batch (all their tasks).
    jobs: list[tuple[Strategy, Model, list[Task]]] = []
    for model in plan.models:
        for strategy in plan.strategies:
            left = [t for t in plan.suite.tasks
                    if (strategy.spec, model.name, t.problem.id) not in finished]  # fmt: skip
            if strategy.batched and left:
                jobs.append((strategy, model, left))
            else:
                jobs += [(strategy, model, [task]) for task in left]

    if not jobs:
        return _finish(plan, ledger)
    started, clock = time.time(), time.monotonic()

    def note_wall_time() -> None:
        attempt = BenchAttempt(started, time.monotonic() - clock, concurrency)
        ledger.record_bench_attempt(plan.run_id, attempt)

    def stored(row: ResultRow) -> None:
        note_wall_time()
        if on_result is not None:
            on_result(row)

    try:
        if executor is not None:
            executor.run(plan, jobs, ledger=ledger, concurrency=concurrency, on_result=stored)
        else:
            _solve_here(plan, jobs, ledger, concurrency, samples, stored)
    finally:
        note_wall_time()
    return _finish(plan, ledger)


def _solve_here(
    plan: BenchPlan,
    jobs: Sequence[tuple[Strategy, Model, list[Task]]],
    ledger: Ledger,
    concurrency: int,
    samples: SampleStore | None,
    on_result: Callable[[ResultRow], None],
) -> None:
    """Solve ``jobs`` in this process, ``concurrency`` at once."""
    cancel = threading.Event()
    if not plan.share_samples:
        samples = None
    elif samples is None:
        samples = SampleStore()

    def solve(job: tuple[Strategy, Model, list[Task]]) -> None:
        rows = solve_tasks(
            *job,
            run_id=plan.run_id,
            seed=plan.seed,
            budget=plan.budget,
            ledger=ledger,
            cancel=cancel,
            samples=samples,
        )
        for row in rows:
            if ledger.record_result(row):
                on_result(row)

    if concurrency <= 1:
        for job in jobs:  # in this thread, so Ctrl-C stops at once
            solve(job)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            futures = [pool.submit(solve, job) for job in jobs]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                cancel.set()  # problems in flight stop at their next token
                pool.shutdown(wait=False, cancel_futures=True)
                raise


def _finish(plan: BenchPlan, ledger: Ledger) -> list[ResultRow]:
    revise_batches(plan, ledger)
    ledger.finish_run(plan.run_id, answer=None, budget_exhausted=False)
    return ledger.results(plan.run_id)


def revise_batches(plan: BenchPlan, ledger: Ledger) -> None:
    """Let strategies that pool evidence across problems re-answer the whole batch.

    The new answer is one the problem's samples gave, so its score is the one the
    evaluator already gave that sample: no ground truth reaches the strategy.
    """
    results = ledger.results(plan.run_id)
    for strategy in plan.strategies:
        for model in plan.models:
            rows = [r for r in results if (r.strategy, r.model) == (strategy.spec, model.name)]
            items = [
                [(worker or "", key) for worker, key in
                 zip(r.sample_workers or [None] * len(r.sample_keys), r.sample_keys, strict=True)]
                for r in rows
            ]  # fmt: skip
            revised = strategy.revise_batch(items) if rows else None
            if revised is None:
                continue
            for row, key in zip(rows, revised[0], strict=True):
                score = row.sample_scores[row.sample_keys.index(key)] if key is not None else 0.0
                if key != row.answer or score != row.score:
                    ledger.revise_result(plan.run_id, row.strategy, row.model, row.problem_id,
                                         key, score)  # fmt: skip


def solve_tasks(
    strategy: Strategy,
    model: Model,
    tasks: Sequence[Task],
    *,
    run_id: str,
    seed: int,
    budget: Budget | None,
    ledger: Ledger | CallLog,
    cancel: threading.Event | None = None,
    samples: SampleStore | None = None,
) -> list[ResultRow]:
    """Solve tasks with `Strategy.solve_batch` (each problem with its own meter, budget
    and seed) and score each. The strategy receives Problems, never Tasks. Calls go
    to ``ledger`` as they return (a `CallLog` keeps them for a remote worker's
    driver)."""
    meters = [
        Meter(budget, ledger=ledger, run_id=run_id, strategy=strategy.spec,
              problem_id=task.problem.id, cancel=cancel, samples=samples)
        for task in tasks
    ]  # fmt: skip
    resolver = Resolver().sealing(run_id)
    contexts = [
        Context(model=model, meter=meter, resolver=resolver,
                seed=zlib.crc32(f"{seed}/{task.problem.id}".encode()))
        for task, meter in zip(tasks, meters, strict=True)
    ]  # fmt: skip
    solutions = strategy.solve_batch([task.problem for task in tasks], contexts)
    return [
        _score(strategy, model, task, solution, meter, run_id)
        for task, solution, meter in zip(tasks, solutions, meters, strict=True)
    ]


def _score(
    strategy: Strategy, model: Model, task: Task, solution: Solution, meter: Meter, run_id: str
) -> ResultRow:
    problem = task.problem
    # Evaluation starts here: only now is the reference used.
    scores: dict[str | None, float] = {}
    for answer in [c.answer for c in solution.candidates] + solution.answers:
        if answer not in scores:
            scores[answer] = task.score(answer)
    usage = meter.usage
    answer_scores = [scores[answer] for answer in solution.answers]
    return ResultRow(
        run_id=run_id,
        strategy=strategy.spec,
        model=model.name,
        problem_id=problem.id,
        answer=solution.answer,
        # The committed answer alone: a pass@k output's other guesses never count here.
        score=answer_scores[0],
        answer_scores=answer_scores if len(answer_scores) > 1 else [],
        sample_keys=[
            None if c.answer is None else answer_key(c.answer, problem.kind)
            for c in solution.candidates
        ],
        sample_scores=[scores[c.answer] for c in solution.candidates],
        prompt_tokens=usage.prompt_tokens,
        cached_tokens=usage.cached_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=usage.cost_usd,
        seconds=usage.seconds,
        budget_exhausted=solution.budget_exhausted or meter.exhausted,
        sample_workers=(
            [c.worker for c in solution.candidates]
            if any(c.worker is not None for c in solution.candidates)
            else []
        ),
        sample_verifier_scores=(
            [c.score for c in solution.candidates]
            if any(c.score is not None for c in solution.candidates)
            else []
        ),
        transcript=Transcript(problem.prompt, task.reference, solution.to_dict()),
    )
