"""`thinktank tune`: search configurations (strategy, n, temperature, model, cascade
threshold) on a development split under a budget, recommend one from the accuracy-cost
Pareto front, and check it on a held-out split the search never saw.

The search is Archon's idea (inference-time architectures as hyperparameters) with
Cost-of-Pass economics: configurations run cheapest first, each as a resumable bench
run, and all of them share one store of seeded samples, so self-consistency at n=2,
4 and 8 on a model draws its samples once (each is still charged as if it drew them
alone). Running the same tuning again resumes it.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thinktank.bench.runner import plan_bench, run_bench
from thinktank.bench.suites import Suite, load_suite
from thinktank.bench.summary import ConfigSummary, mark_frontiers, summarize
from thinktank.config import home
from thinktank.economics import Configuration
from thinktank.errors import ThinktankError
from thinktank.ledger import Ledger, ResultRow
from thinktank.meter import Budget, SampleStore
from thinktank.models import DEFAULT_MODEL, load_model
from thinktank.strategies import Cascade, Strategy, build_strategy
from thinktank.strategies.route import POOL_SEPARATOR

if TYPE_CHECKING:
    from thinktank.bench.distributed import RayExecutor

#: The default search space: self-consistency at these n on every model ...
DEFAULT_SAMPLES = (2, 4, 8)
#: ... and, at n=4, these temperatures besides the default one ...
DEFAULT_TEMPERATURES = (0.7, 1.0)
#: ... plus, with several models, cascades (n=4) at these thresholds of the vote share.
DEFAULT_THRESHOLDS = (0.3, 0.5, 0.7)


def search_space(
    models: Sequence[str],
    strategies: Sequence[str] | None = None,
    *,
    samples: Sequence[int] = DEFAULT_SAMPLES,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> list[Configuration]:
    """Every strategy on every model, a cascade once (on its own first model).

    Without ``strategies``: single, self-consistency at each of ``samples`` (and at
    n=4 at each of ``temperatures``) on every model, and with two models or more a
    cascade through them, cheapest first, at each of ``thresholds``.
    """
    if not models:
        raise ThinktankError("tune needs at least one model")
    if strategies is None:
        strategies = ["single", *(f"self-consistency:n={n}" for n in samples)]
        strategies += [f"self-consistency:n=4,temperature={t}" for t in temperatures]
        if len(models) > 1:
            pool = POOL_SEPARATOR.join(sorted(models, key=_output_price))
            strategies += [f"cascade:models={pool},n=4,threshold={t}" for t in thresholds]
    configurations: list[Configuration] = []
    for spec in strategies:
        strategy = build_strategy(spec)
        on = [strategy.pool[0]] if isinstance(strategy, Cascade) else models
        for model in on:
            configuration = Configuration(strategy.spec, model)
            if configuration not in configurations:  # a default temperature given twice
                configurations.append(configuration)
    return configurations


def split_suite(suite: Suite, dev_fraction: float, seed: int) -> tuple[Suite, Suite]:
    """A seeded split into a development and a held-out suite, both non-empty."""
    if not 0 < dev_fraction < 1:
        raise ThinktankError(f"dev fraction must be between 0 and 1, got {dev_fraction}")
    if len(suite.tasks) < 2:
        raise ThinktankError(f"suite {suite.spec} has {len(suite.tasks)} problem(s): need 2+")
    tasks = list(suite.tasks)
    random.Random(seed).shuffle(tasks)
    cut = min(max(round(len(tasks) * dev_fraction), 1), len(tasks) - 1)
    split = f"dev_fraction={dev_fraction},seed={seed}"
    return (
        Suite(f"{suite.spec}#dev({split})", tasks[:cut]),
        Suite(f"{suite.spec}#held-out({split})", tasks[cut:]),
    )


@dataclass
class Evaluated:
    """A configuration and how it did on one split."""

    configuration: Configuration
    summary: ConfigSummary

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.configuration.strategy, "model": self.configuration.model,
                **{k: v for k, v in self.summary.to_dict().items()
                   if k not in ("strategy", "model")}}  # fmt: skip


@dataclass
class TuneOutcome:
    """What `tune` found: every configuration tried on the development split, the
    recommendation, and the recommendation's figures on the held-out split."""

    suite: str
    dev_problems: int
    held_out_problems: int
    evaluated: list[Evaluated]
    #: Configurations the budget left untried.
    skipped: list[Configuration]
    recommended: Evaluated | None
    #: Why this configuration (or why none).
    reason: str
    held_out: Evaluated | None
    #: What the search on the development split spent (the held-out check is extra).
    spent: dict[str, float]
    plot: Path | None = None
    run_ids: list[str] = field(default_factory=list)

    @property
    def front(self) -> list[Evaluated]:
        """The accuracy-cost Pareto front on the development split, cheapest first."""
        front = [e for e in self.evaluated if e.summary.on_pareto_front]
        return sorted(front, key=lambda e: e.summary.cost_per_problem)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "dev_problems": self.dev_problems,
            "held_out_problems": self.held_out_problems,
            "configurations": [e.to_dict() for e in self.evaluated],
            "skipped": [c.label for c in self.skipped],
            "pareto_front": [e.configuration.label for e in self.front],
            "recommended": self.recommended.to_dict() if self.recommended else None,
            "reason": self.reason,
            "held_out": self.held_out.to_dict() if self.held_out else None,
            "spent": self.spent,
            "plot": str(self.plot) if self.plot else None,
            "run_ids": self.run_ids,
        }


def recommend(
    evaluated: Sequence[Evaluated],
    *,
    max_cost_per_problem: float | None = None,
    target_accuracy: float | None = None,
) -> tuple[Evaluated | None, str]:
    """The configuration to use, and why.

    With ``max_cost_per_problem``: the most accurate one within it. With
    ``target_accuracy``: the cheapest one that reaches it. Otherwise the one with the
    lowest cost-of-pass. Ties go to the cheaper configuration.
    """
    if max_cost_per_problem is not None and target_accuracy is not None:
        raise ThinktankError("give a cost per problem or a target accuracy, not both")
    by_cost = sorted(evaluated, key=lambda e: e.summary.cost_per_problem)
    if max_cost_per_problem is not None:
        within = [e for e in by_cost if e.summary.cost_per_problem <= max_cost_per_problem]
        if not within:
            return None, f"no configuration costs at most ${max_cost_per_problem:.3g} a problem"
        best = max(within, key=lambda e: e.summary.accuracy)  # max keeps the first: cheapest
        return best, f"the most accurate at most ${max_cost_per_problem:.3g} a problem"
    if target_accuracy is not None:
        reaching = [e for e in by_cost if e.summary.accuracy >= target_accuracy]
        if not reaching:
            return None, f"no configuration reaches accuracy {target_accuracy:g}"
        return reaching[0], f"the cheapest with accuracy at least {target_accuracy:g}"
    solving = [e for e in by_cost if e.summary.cost_of_pass_usd is not None]
    if not solving:
        return None, "no configuration solved any development problem"
    best = min(solving, key=lambda e: e.summary.cost_of_pass_usd)
    return best, "the lowest cost-of-pass (dollars per correct answer)"


def tune(
    suite: str | Suite,
    models: Sequence[str] = (DEFAULT_MODEL,),
    strategies: Sequence[str] | None = None,
    *,
    dev_fraction: float = 0.5,
    budget: Budget | None = None,
    max_cost_per_problem: float | None = None,
    target_accuracy: float | None = None,
    seed: int = 0,
    ledger: Ledger | None = None,
    concurrency: int = 4,
    out_dir: str | Path | None = None,
    executor: RayExecutor | None = None,
    on_start: Callable[[int], None] | None = None,
    on_resumed: Callable[[int], None] | None = None,
    on_result: Callable[[ResultRow], None] | None = None,
) -> TuneOutcome:
    """Tune on a development split of ``suite``, recommend, check on the held-out split.

    Configurations come from `search_space` (``strategies`` crossed with ``models``,
    or the default space). They run cheapest first (samples times price). ``budget``
    caps the whole search on the development split: a configuration starts only
    if what was spent plus its estimate fits (the estimate is the dearest cost per
    sample measured so far on each of its models; a model not yet measured always
    gets its first run, so the cap can be passed by one cheap configuration). The
    recommendation (see `recommend`) then runs on the held-out split, outside the
    budget. ``on_start`` gets the number of problem runs at most to come,
    ``on_resumed`` how many of a run an earlier attempt already scored, and
    ``on_result`` each one as it is scored. Writes ``pareto.png`` and ``tune.json``
    into ``out_dir`` (default ``$THINKTANK_HOME/tune/ID``). With ``executor``
    (`thinktank.bench.distributed.RayExecutor`) every run's problems go to Ray
    workers; samples are then shared within a worker only.
    """
    if max_cost_per_problem is not None and target_accuracy is not None:
        raise ThinktankError("give a cost per problem or a target accuracy, not both")
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    configurations = search_space(list(models), strategies)
    dev, held_out = split_suite(suite, dev_fraction, seed)
    ledger = ledger if ledger is not None else Ledger()
    configurations.sort(key=_relative_cost)
    if on_start is not None:
        on_start(len(configurations) * len(dev.tasks) + len(held_out.tasks))

    samples = SampleStore()
    evaluated: list[Evaluated] = []
    skipped: list[Configuration] = []
    run_ids: list[str] = []

    def evaluate(configuration: Configuration, split: Suite) -> Evaluated:
        plan = plan_bench(split, [configuration.strategy], [configuration.model], seed=seed,
                          ledger=ledger)  # fmt: skip
        run_ids.append(plan.run_id)
        if plan.done and on_resumed is not None:
            on_resumed(plan.done)
        rows = run_bench(plan, ledger=ledger, concurrency=concurrency, samples=samples,
                         on_result=on_result, executor=executor)  # fmt: skip
        return Evaluated(configuration, summarize(rows, ledger.bench_config(plan.run_id))[0])

    for configuration in configurations:
        estimate = _estimate(configuration, evaluated, len(dev.tasks))
        if not _fits(budget, _spent(evaluated), estimate):
            skipped.append(configuration)
            continue
        evaluated.append(evaluate(configuration, dev))
    mark_frontiers([e.summary for e in evaluated])
    recommended, reason = recommend(evaluated, max_cost_per_problem=max_cost_per_problem,
                                    target_accuracy=target_accuracy)  # fmt: skip
    checked = evaluate(recommended.configuration, held_out) if recommended else None
    outcome = TuneOutcome(suite.spec, len(dev.tasks), len(held_out.tasks), evaluated, skipped,
                          recommended, reason, checked, _spent(evaluated),
                          run_ids=run_ids)  # fmt: skip
    _write(outcome, Path(out_dir) if out_dir is not None else home() / "tune" / _tune_id(outcome))
    return outcome


def _write(outcome: TuneOutcome, out_dir: Path) -> None:
    from thinktank.bench.report import plot_pareto  # matplotlib loads only when needed

    out_dir.mkdir(parents=True, exist_ok=True)
    outcome.plot = plot_pareto(
        [(e.configuration.label, e.summary) for e in outcome.evaluated],
        out_dir / "pareto.png",
        title="Tuning: the development split (stars: Pareto front), and the held-out check",
        recommended=outcome.recommended.summary if outcome.recommended else None,
        held_out=outcome.held_out.summary if outcome.held_out else None,
    )
    (out_dir / "tune.json").write_text(json.dumps(outcome.to_dict(), indent=2))


def _tune_id(outcome: TuneOutcome) -> str:
    return "tune-" + hashlib.sha256("\n".join(outcome.run_ids).encode()).hexdigest()[:12]


def _output_price(model: str) -> float:
    return load_model(model).price.output_per_mtok


def _models_of(strategy: Strategy, model: str) -> list[str]:
    """The models a configuration samples from, each ``n`` times at most."""
    return strategy.pool if isinstance(strategy, Cascade) else [model]


def _samples(strategy: Strategy) -> int:
    return int(getattr(strategy, "n", 1))


def _relative_cost(configuration: Configuration) -> float:
    strategy = build_strategy(configuration.strategy)
    return _samples(strategy) * sum(map(_output_price, _models_of(strategy, configuration.model)))


def _spent(evaluated: Sequence[Evaluated]) -> dict[str, float]:
    return {
        "tokens": sum(e.summary.total_tokens for e in evaluated),
        "cost_usd": sum(e.summary.cost_usd for e in evaluated),
        "seconds": sum(e.summary.seconds for e in evaluated),
    }


def _estimate(
    configuration: Configuration, evaluated: Sequence[Evaluated], problems: int
) -> dict[str, float] | None:
    """The dearest cost per sample measured on each of the configuration's models, times
    its samples and the problems; None while one of its models is unmeasured."""
    strategy = build_strategy(configuration.strategy)
    estimate = {"tokens": 0.0, "cost_usd": 0.0, "seconds": 0.0}
    for model in _models_of(strategy, configuration.model):
        measured = [
            e.summary
            for e in evaluated
            if e.configuration.model == model
            and not isinstance(build_strategy(e.configuration.strategy), Cascade)
            and e.summary.samples
        ]
        if not measured:
            return None
        for key, total in (("tokens", "total_tokens"), ("cost_usd", "cost_usd"),
                           ("seconds", "seconds")):  # fmt: skip
            per_sample = max(getattr(s, total) / (s.n_problems * s.samples) for s in measured)
            estimate[key] += per_sample * _samples(strategy) * problems
    return estimate


def _fits(
    budget: Budget | None, spent: dict[str, float], estimate: dict[str, float] | None
) -> bool:
    if budget is None:
        return True
    caps = {"tokens": budget.max_tokens, "cost_usd": budget.max_cost_usd,
            "seconds": budget.max_seconds}  # fmt: skip
    for key, cap in caps.items():
        if cap is None:
            continue
        needed = 0.0 if estimate is None else estimate[key]
        if spent[key] >= cap or spent[key] + needed > cap:
            return False
    return True
