"""Benchmark units on Ray: the same runs, the same ledger, on as many machines as a
Ray cluster has.

A unit is one problem (or, for a batched strategy, its whole batch) under one
strategy on one model. Each model gets ``actors`` Ray actors that load it once and
keep it; a unit runs in one of them, and its result comes back to the driver with
the calls that paid for it. The driver is the only writer of the ledger and
stores both in one transaction, and only if the problem has no result yet: a
worker killed mid-problem is restarted and the unit retried by Ray, and what the
killed attempt spent is never counted. At most ``concurrency`` units of a model
are in flight at once (back-pressure on a shared endpoint). Resuming is the
in-process runner's: the run id is the same, and scored problems are skipped.

Ray is the optional ``ray`` extra. Every node needs thinktank installed, and the
suite reachable (a ``jsonl:`` file at the same path).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from thinktank.bench.runner import BenchPlan, solve_tasks
from thinktank.bench.suites import load_parent_suite
from thinktank.config import threads
from thinktank.errors import ThinktankError
from thinktank.ledger import CallLog, CallRow, Ledger, ResultRow
from thinktank.meter import Budget, SampleStore
from thinktank.models import Model, credential_variables, load_model
from thinktank.problem import Task
from thinktank.strategies import Strategy, build_strategy

#: How often Ray restarts a dead worker, and retries a unit it was running.
RETRIES = 3


@dataclass(frozen=True)
class Unit:
    """What a worker needs to solve some problems: all of it plain data."""

    strategy: str
    suite: str
    problem_ids: tuple[str, ...]
    run_id: str
    seed: int
    budget: Budget | None


class UnitSolver:
    """Solves units for one model in a worker process: the model is loaded once, and
    units solved there share one store of seeded samples."""

    def __init__(self, model_spec: str) -> None:
        self.model_spec = model_spec
        self._model: Model | None = None
        self._samples = SampleStore()
        self._tasks: dict[str, dict[str, Task]] = {}

    def warm(self) -> str:
        """Load the model now; its name."""
        if self._model is None:
            self._model = load_model(self.model_spec)
        return self._model.name

    def solve(self, unit: Unit) -> list[tuple[ResultRow, list[CallRow]]]:
        self.warm()
        if unit.suite not in self._tasks:
            self._tasks[unit.suite] = {t.problem.id: t for t in load_parent_suite(unit.suite).tasks}
        tasks = [self._tasks[unit.suite][pid] for pid in unit.problem_ids]
        calls = CallLog()
        results = solve_tasks(build_strategy(unit.strategy), self._model, tasks,
                              run_id=unit.run_id, seed=unit.seed, budget=unit.budget,
                              ledger=calls, samples=self._samples)  # fmt: skip
        return [(r, [c for c in calls.rows if c.problem_id == r.problem_id]) for r in results]

    def pid(self) -> int:
        return os.getpid()

    def threads(self) -> int:
        """The threads this worker's model decodes with."""
        return threads()


@dataclass
class RayExecutor:
    """Runs a bench plan's units on Ray (``address``: a cluster's, or None to start or
    join a local one), with ``actors`` workers per model."""

    address: str | None = None
    actors: int = 1
    #: Cores each worker reserves and decodes with (``$THINKTANK_THREADS`` there).
    cpus: int = 1
    #: Called with each model's actors once they exist (monitoring; tests kill one).
    on_workers: Callable[[dict[str, list[Any]]], None] | None = None

    def __post_init__(self) -> None:
        if self.actors < 1 or self.cpus < 1:
            raise ThinktankError("actors and cpus must be >= 1")

    def run(
        self,
        plan: BenchPlan,
        jobs: Sequence[tuple[Strategy, Model, list[Task]]],
        *,
        ledger: Ledger,
        concurrency: int,
        on_result: Callable[[ResultRow], None] | None = None,
    ) -> None:
        """Solve ``jobs`` on Ray; each result is stored as it arrives."""
        for strategy, _, _ in jobs:
            build_strategy(strategy.spec)  # as each worker will: an object option fails here
        ray = _ray()
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)  # fmt: skip
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local instance"
                raise ThinktankError(f"cannot start or join Ray ({where}): {exc}") from None
        spec_of = dict(zip([m.name for m in plan.models], plan.model_specs, strict=True))
        per_actor = max(1, math.ceil(concurrency / self.actors))
        worker = ray.remote(
            num_cpus=self.cpus,
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
            max_concurrency=per_actor,
        )(UnitSolver)
        queues: dict[str, deque[Unit]] = {}
        for strategy, model, tasks in jobs:
            ids = tuple(t.problem.id for t in tasks)
            unit = Unit(strategy.spec, plan.suite.spec, ids, plan.run_id, plan.seed, plan.budget)
            queues.setdefault(model.name, deque()).append(unit)
        actors = {
            name: [worker.options(runtime_env=self._environment(spec_of[name]))
                   .remote(spec_of[name]) for _ in range(self.actors)]
            for name in queues
        }  # fmt: skip
        if self.on_workers is not None:
            self.on_workers(actors)
        pending: dict[Any, tuple[str, int]] = {}  # ref -> (model, actor index)
        load = {name: [0] * self.actors for name in queues}
        try:
            while pending or any(queues.values()):
                for name, queue in queues.items():
                    while queue and sum(load[name]) < concurrency:
                        index = min(range(self.actors), key=load[name].__getitem__)
                        ref = actors[name][index].solve.remote(queue.popleft())
                        pending[ref] = (name, index)
                        load[name][index] += 1
                [done], _ = ray.wait(list(pending), num_returns=1)
                name, index = pending.pop(done)
                load[name][index] -= 1
                for result, calls in _get(ray, done):
                    if ledger.record_outcome(result, calls) and on_result is not None:
                        on_result(result)
        finally:  # killing the workers also stops the units still in flight
            for group in actors.values():
                for actor in group:
                    ray.kill(actor)

    def _environment(self, model_spec: str) -> dict[str, Any]:
        """A worker's environment: its thread count, and a remote model's API key (a
        worker on another node does not have the driver's environment)."""
        env = {"THINKTANK_THREADS": str(self.cpus)}
        for name in credential_variables(model_spec):
            if name in os.environ:
                env[name] = os.environ[name]
        return {"env_vars": env}


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ThinktankError(
            "--executor ray needs the ray extra: pip install 'thinktank[ray]'"
        ) from None
    return ray


def _get(ray: Any, ref: Any) -> list[tuple[ResultRow, list[CallRow]]]:
    """A unit's outcome; a worker's error becomes a clear one."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        if isinstance(cause, ThinktankError):
            raise ThinktankError(str(cause)) from None
        raise
    except ray.exceptions.RayActorError as exc:
        raise ThinktankError(f"a Ray worker died {RETRIES + 1} times: {exc}") from None
