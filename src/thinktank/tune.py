"""`thinktank tune`: search configurations (strategy, n, temperature, model, cascade
threshold) under a budget, recommend one by k-fold cross-validation, and report how the
choice did on problems that played no part in making it.

The search is Archon's idea (inference-time architectures as hyperparameters) with
Cost-of-Pass economics: configurations run cheapest first, each as a resumable bench
run on the whole suite, and all of them share one store of seeded samples, so
self-consistency at n=2, 4 and 8 on a model draws its samples once (each is still
charged as if it drew them alone). Running the same tuning again resumes it.

One dev/held-out split is a coin toss on a small suite (a pick can score 0.70 on its
development half and 0.40 held out), so the scored problems are re-partitioned into
seeded folds: each fold chooses on the others' problems and is checked on its own,
the recommendation is the configuration most folds chose, and the spread of the
held-out figures is reported, with a warning where one falls outside its development
interval. Every (configuration, problem) is scored once; the folds cost no model call.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from statistics import fmean
from typing import Any

from thinktank.bench.runner import BenchPlan, Executor, plan_bench, run_bench
from thinktank.bench.suites import Suite, load_suite
from thinktank.bench.summary import ConfigSummary, mark_frontiers, summarize
from thinktank.config import home
from thinktank.economics import Configuration
from thinktank.errors import ThinktankError
from thinktank.ledger import Ledger, ResultRow
from thinktank.meter import Budget, SampleStore
from thinktank.models import DEFAULT_MODEL, load_model, load_models
from thinktank.models.base import Model
from thinktank.strategies import ComputeOptimal, Strategy, build_strategy
from thinktank.strategies.allocate import (
    CHOICES,
    LIST_SEPARATOR,
    best_choices,
    difficulty_level,
    estimated_difficulty,
    quantile_edges,
)
from thinktank.strategies.route import POOL_SEPARATOR

#: The default search space: self-consistency at these n on every model ...
DEFAULT_SAMPLES = (2, 4, 8)
#: ... and, at n=4, these temperatures besides the model's default one ...
DEFAULT_TEMPERATURES = (1.0,)
#: ... plus, with several models, cascades (n=4) at these thresholds of the vote share.
DEFAULT_THRESHOLDS = (0.3, 0.5, 0.7)
#: Folds of the cross-validation (a smaller suite gets one per problem).
DEFAULT_FOLDS = 5


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
        # A strategy with its own pool runs once, named after its first model.
        on = strategy.own_models()[:1] or models
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


def fold_problems(problem_ids: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    """A seeded k-fold partition: each problem is held out in exactly one fold, and
    fold sizes differ by one at most."""
    if folds < 2:
        raise ThinktankError(f"cross-validation needs at least 2 folds, got {folds}")
    if len(problem_ids) < folds:
        raise ThinktankError(f"{len(problem_ids)} problems cannot make {folds} folds")
    shuffled = list(problem_ids)
    random.Random(seed).shuffle(shuffled)
    return [shuffled[index::folds] for index in range(folds)]


@dataclass
class Evaluated:
    """A configuration and how it did on some problems."""

    configuration: Configuration
    summary: ConfigSummary

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.configuration.strategy, "model": self.configuration.model,
                **{k: v for k, v in self.summary.to_dict().items()
                   if k not in ("strategy", "model")}}  # fmt: skip


@dataclass
class Scored:
    """A configuration's results on every problem of the suite: scored once, then
    re-partitioned by each fold."""

    configuration: Configuration
    rows: list[ResultRow]
    #: The bench run's config: `summarize` reads its model names and strategy specs.
    bench_config: dict[str, Any]

    def on(self, problem_ids: Collection[str], suite: str) -> Evaluated:
        """The configuration's figures on those problems alone, labelled ``suite``."""
        rows = [r for r in self.rows if r.problem_id in problem_ids]
        return Evaluated(self.configuration,
                         summarize(rows, {**self.bench_config, "suite": suite})[0])  # fmt: skip


@dataclass
class Fold:
    """One re-partition of the scored problems: what its development problems (every
    other fold's) chose, and how that choice did on its own held-out problems, which
    played no part in it."""

    number: int
    held_out_ids: list[str]
    #: The choice, with its figures on the development problems; None: none qualified.
    chosen: Evaluated | None
    reason: str
    held_out: Evaluated | None

    @property
    def outside_dev_interval(self) -> bool:
        """The held-out accuracy lies outside the 95% interval of the development
        accuracy: this split alone would have told a different story."""
        if self.chosen is None or self.held_out is None:
            return False
        low, high = self.chosen.summary.ci95
        return not low <= self.held_out.summary.accuracy <= high

    def to_dict(self) -> dict[str, Any]:
        return {
            "fold": self.number,
            "held_out_problems": self.held_out_ids,
            "chosen": self.chosen.configuration.label if self.chosen else None,
            "reason": self.reason,
            "development": _figures(self.chosen),
            "held_out": _figures(self.held_out),
            "outside_development_interval": self.outside_dev_interval,
        }


def _figures(evaluated: Evaluated | None) -> dict[str, Any] | None:
    """A fold side's headline figures (its curves would only repeat the configuration's)."""
    if evaluated is None:
        return None
    s = evaluated.summary
    return {
        "n_problems": s.n_problems,
        "accuracy": s.accuracy,
        "ci95": list(s.ci95),
        "cost_per_problem_usd": s.cost_per_problem,
        "cost_of_pass_usd": s.cost_of_pass_usd,
    }


@dataclass
class TuneOutcome:
    """What `tune` found: every configuration tried, on all the suite's problems; each
    fold's choice and its held-out check; the recommendation (the choice of most
    folds) and its held-out figures."""

    suite: str
    problems: int
    evaluated: list[Evaluated]
    #: Configurations the budget left untried.
    skipped: list[Configuration]
    folds: list[Fold]
    #: The configuration most folds chose, with its figures on all problems.
    recommended: Evaluated | None
    #: Why this configuration (or why none).
    reason: str
    #: The recommendation on the held-out problems of the folds that chose it, pooled:
    #: none of them played a part in choosing it there.
    held_out: Evaluated | None
    #: What the search spent.
    spent: dict[str, float]
    plot: Path | None = None
    run_ids: list[str] = field(default_factory=list)

    @property
    def front(self) -> list[Evaluated]:
        """The accuracy-cost Pareto front on all problems, cheapest first."""
        front = [e for e in self.evaluated if e.summary.on_pareto_front]
        return sorted(front, key=lambda e: e.summary.cost_per_problem)

    @property
    def held_out_spread(self) -> dict[str, Any] | None:
        """Each fold's choice's held-out accuracy (None: the fold chose nothing), their
        mean and range: how far one split's figure could be from another's."""
        per_fold = [f.held_out.summary.accuracy if f.held_out else None for f in self.folds]
        measured = [a for a in per_fold if a is not None]
        if not measured:
            return None
        return {"per_fold": per_fold, "mean": fmean(measured), "min": min(measured),
                "max": max(measured)}  # fmt: skip

    @property
    def warnings(self) -> list[str]:
        """One line per fold whose held-out accuracy fell outside its development interval."""
        return [
            f"fold {f.number}: {f.chosen.configuration.label} scored"
            f" {f.held_out.summary.accuracy:.2f} held out, outside its development interval"
            f" {f.chosen.summary.ci95[0]:.2f}-{f.chosen.summary.ci95[1]:.2f}"
            " (that split alone would have misled)"
            for f in self.folds
            if f.outside_dev_interval
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "problems": self.problems,
            "configurations": [e.to_dict() for e in self.evaluated],
            "skipped": [c.label for c in self.skipped],
            "pareto_front": [e.configuration.label for e in self.front],
            "folds": [f.to_dict() for f in self.folds],
            "held_out_spread": self.held_out_spread,
            "warnings": self.warnings,
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


def cross_validate(
    scored: Sequence[Scored],
    folds: Sequence[Sequence[str]],
    suite: str,
    *,
    max_cost_per_problem: float | None = None,
    target_accuracy: float | None = None,
) -> list[Fold]:
    """Each fold's choice (see `recommend`) on every other fold's problems, and that
    choice's figures on the fold's own problems."""
    result = []
    for number, held_ids in enumerate(folds, 1):
        dev_ids = {pid for other, ids in enumerate(folds, 1) if other != number for pid in ids}
        label = f"{suite}#fold({number}/{len(folds)})"
        chosen, reason = recommend([s.on(dev_ids, f"{label}-dev") for s in scored],
                                   max_cost_per_problem=max_cost_per_problem,
                                   target_accuracy=target_accuracy)  # fmt: skip
        held_out = None
        if chosen is not None:
            held_out = _scored(scored, chosen.configuration).on(set(held_ids), f"{label}-held-out")
        result.append(Fold(number, list(held_ids), chosen, reason, held_out))
    return result


def choose_by_folds(
    folds: Sequence[Fold], evaluated: Sequence[Evaluated]
) -> tuple[Evaluated | None, str]:
    """Of ``evaluated``, the configuration most folds chose (ties: the cheaper), and why."""
    votes = Counter(f.chosen.configuration for f in folds if f.chosen is not None)
    if not votes:
        return None, folds[0].reason
    most = max(votes.values())
    by_cost = sorted(evaluated, key=lambda e: e.summary.cost_per_problem)
    best = next(e for e in by_cost if votes[e.configuration] == most)
    by_best = [f for f in folds if f.chosen and f.chosen.configuration == best.configuration]
    return best, f"{by_best[0].reason}; chosen by {most} of {len(folds)} folds"


def tune(
    suite: str | Suite,
    models: Sequence[str] = (DEFAULT_MODEL,),
    strategies: Sequence[str] | None = None,
    *,
    folds: int | None = None,
    budget: Budget | None = None,
    max_cost_per_problem: float | None = None,
    target_accuracy: float | None = None,
    seed: int = 0,
    ledger: Ledger | None = None,
    concurrency: int = 4,
    out_dir: str | Path | None = None,
    executor: Executor | None = None,
    on_start: Callable[[int], None] | None = None,
    on_resumed: Callable[[int], None] | None = None,
    on_result: Callable[[ResultRow], None] | None = None,
) -> TuneOutcome:
    """Score configurations on ``suite``, cross-validate the choice, recommend.

    Configurations come from `search_space` (``strategies`` crossed with ``models``,
    or the default space). They run cheapest first (samples times price), each on
    every problem. ``budget`` caps the whole search: a configuration starts only
    if what was spent plus its estimate fits (the estimate is the dearest cost per
    sample measured so far on each of its models; a model not yet measured always
    gets its first run, so the cap can be passed by one cheap configuration). The
    scored problems are then split into ``folds`` seeded folds (default
    `DEFAULT_FOLDS`, or one per problem on a smaller suite): each fold chooses (see
    `recommend`) on the other folds' problems and is checked on its own, and the
    recommendation is the configuration most folds chose, its held-out figures
    pooled over the folds that chose it (`cross_validate`, `choose_by_folds`).
    ``on_start`` gets the number of problem runs at most to come,
    ``on_resumed`` how many of a run an earlier attempt already scored, and
    ``on_result`` each one as it is scored. Writes ``pareto.png`` and ``tune.json``
    into ``out_dir`` (default ``$THINKTANK_HOME/tune/ID``). With ``executor``
    (`thinktank.bench.distributed.RayExecutor`) every run's problems go to Ray
    workers; samples are then shared within a worker only.
    """
    if max_cost_per_problem is not None and target_accuracy is not None:
        raise ThinktankError("give a cost per problem or a target accuracy, not both")
    if target_accuracy is not None and not 0 < target_accuracy <= 1:
        raise ThinktankError(
            f"a target accuracy is a share of problems solved, above 0 and at most 1"
            f" (0.8 for 80%), not {target_accuracy:g}"
        )
    if max_cost_per_problem is not None and not max_cost_per_problem > 0:
        raise ThinktankError(f"a cost per problem is above 0 USD, not {max_cost_per_problem:g}")
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    if len(suite.tasks) < 2:
        raise ThinktankError(f"suite {suite.spec} has {len(suite.tasks)} problem(s): need 2+")
    problem_ids = [t.problem.id for t in suite.tasks]
    partition = fold_problems(
        problem_ids, min(DEFAULT_FOLDS, len(problem_ids)) if folds is None else folds, seed
    )
    load_models(models)  # one model named twice would be tuned against itself
    configurations = search_space(list(models), strategies)
    ledger = ledger if ledger is not None else Ledger()
    configurations.sort(key=_relative_cost)
    if on_start is not None:
        on_start(len(configurations) * len(suite.tasks))

    run = partial(run_bench, ledger=ledger, concurrency=concurrency, samples=SampleStore(),
                  on_result=on_result, executor=executor)  # fmt: skip
    runs = _run_configurations(configurations, suite, budget=budget, seed=seed, ledger=ledger,
                               on_resumed=on_resumed, run=run)  # fmt: skip
    mark_frontiers([e.summary for e in runs.evaluated])
    checked_folds = cross_validate(runs.scored, partition, suite.spec,
                                   max_cost_per_problem=max_cost_per_problem,
                                   target_accuracy=target_accuracy)  # fmt: skip
    recommended, reason = choose_by_folds(checked_folds, runs.evaluated)
    held_out = _held_out(runs.scored, checked_folds, recommended, suite.spec)
    outcome = TuneOutcome(suite.spec, len(suite.tasks), runs.evaluated, runs.skipped,
                          checked_folds, recommended, reason, held_out, _spent(runs.evaluated),
                          run_ids=runs.run_ids)  # fmt: skip
    _write(outcome, Path(out_dir) if out_dir is not None else home() / "tune" / _tune_id(outcome))
    return outcome


@dataclass
class _Runs:
    """What `tune` ran: each configuration scored, and on every problem; those the
    budget skipped; the bench run ids."""

    scored: list[Scored] = field(default_factory=list)
    evaluated: list[Evaluated] = field(default_factory=list)
    skipped: list[Configuration] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)


def _run_configurations(
    configurations: Sequence[Configuration],
    suite: Suite,
    *,
    budget: Budget | None,
    seed: int,
    ledger: Ledger,
    on_resumed: Callable[[int], None] | None,
    run: Callable[[BenchPlan], list[ResultRow]],
) -> _Runs:
    """Each configuration's bench run (``run(plan)``), in order, while the budget's
    estimate of it fits what is left."""
    runs = _Runs()
    problem_ids = [t.problem.id for t in suite.tasks]
    for configuration in configurations:
        estimate = _estimate(configuration, runs.evaluated, len(suite.tasks))
        if not _fits(budget, _spent(runs.evaluated), estimate):
            runs.skipped.append(configuration)
            continue
        plan = plan_bench(suite, [configuration.strategy], [configuration.model], seed=seed,
                          ledger=ledger)  # fmt: skip
        if plan.unpriced:  # priced at $0, they sort first: refused before anything runs
            raise ThinktankError(
                f"{', '.join(plan.unpriced)} has no price in the price book: "
                "tune compares costs (add it to $THINKTANK_HOME/prices.toml)"
            )
        runs.run_ids.append(plan.run_id)
        if plan.done and on_resumed is not None:
            on_resumed(plan.done)
        rows = run(plan)
        runs.scored.append(Scored(configuration, rows, ledger.bench_config(plan.run_id)))
        runs.evaluated.append(runs.scored[-1].on(problem_ids, suite.spec))
    return runs


def _held_out(
    scored: Sequence[Scored],
    folds: Sequence[Fold],
    recommended: Evaluated | None,
    suite_spec: str,
) -> Evaluated | None:
    """The recommended configuration on the held-out problems of the folds that chose it."""
    if recommended is None:
        return None
    chose = [f for f in folds if f.chosen and f.chosen.configuration == recommended.configuration]
    return _scored(scored, recommended.configuration).on(
        {pid for f in chose for pid in f.held_out_ids},
        f"{suite_spec}#held-out(folds {','.join(str(f.number) for f in chose)})",
    )


@dataclass
class ComputeOptimalFit:
    """What `fit_compute_optimal` learned on development problems: the strategy with its
    table, and per level its problems, each choice's accuracy on them and the pick."""

    strategy: ComputeOptimal
    run_id: str
    levels: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy.spec, "run_id": self.run_id, "levels": self.levels}


def fit_compute_optimal(
    suite: str | Suite,
    model: str | Model = DEFAULT_MODEL,
    strategy: str | Strategy = "compute-optimal",
    *,
    choices: Sequence[str] = CHOICES,
    levels: int = 5,
    seed: int = 0,
    ledger: Ledger | None = None,
    concurrency: int = 4,
) -> ComputeOptimalFit:
    """Learn `ComputeOptimal`'s table on ``suite``'s development problems (Snell et al.'s
    per-difficulty selection): ``strategy`` sets the budget, probe, verifier and
    sampling (its own table is replaced). One resumable bench run scores its probe
    (`ComputeOptimal.probe_strategy`) and each of ``choices`` (the strategy with that
    choice at every level) on every problem, the samples shared, so every choice sees
    the same probe; the probes' difficulties are cut into ``levels`` quantiles (the
    paper's 5), and each level takes the choice that solved most of its problems
    (ties: the one named first). The paper picks on half of its test set and
    measures on the other half; here, bench the fitted strategy on other problems.
    """
    built = build_strategy(strategy)
    if not isinstance(built, ComputeOptimal):
        raise ThinktankError(f"fit_compute_optimal fits compute-optimal, not {built.name}")
    if not choices or any(c not in CHOICES for c in choices):
        raise ThinktankError(f"choices must be taken from {', '.join(CHOICES)}, got {choices}")
    suite = suite if isinstance(suite, Suite) else load_suite(suite)
    if levels < 1 or len(suite.tasks) < levels:
        raise ThinktankError(
            f"suite {suite.spec} has {len(suite.tasks)} problem(s): {levels} levels need"
            " at least as many (and at least one level)"
        )
    ledger = ledger if ledger is not None else Ledger()
    probe = built.probe_strategy()
    forced = {choice: replace(built, edges="", choices=choice) for choice in choices}
    plan = plan_bench(suite, [probe, *forced.values()], [model], seed=seed, ledger=ledger)
    rows = {(r.strategy, r.problem_id): r
            for r in run_bench(plan, ledger=ledger, concurrency=concurrency,
                               samples=SampleStore())}  # fmt: skip
    ids = [task.problem.id for task in suite.tasks]
    difficulties = [estimated_difficulty(_verifier_scores(rows[(probe.spec, pid)])) for pid in ids]
    solved = {choice: [float(rows[(s.spec, pid)].score >= 1) for pid in ids]
              for choice, s in forced.items()}  # fmt: skip
    # Rounded first, so that the spec string bins the problems exactly as fitted here.
    edges = [round(e, 6) for e in quantile_edges(difficulties, levels)]
    picked = best_choices(difficulties, solved, edges)
    fitted = replace(built, edges=LIST_SEPARATOR.join(map(repr, edges)),
                     choices=LIST_SEPARATOR.join(picked))  # fmt: skip
    of_level = [difficulty_level(d, edges) for d in difficulties]
    report = []
    for level, choice in enumerate(picked):
        members = [i for i, lv in enumerate(of_level) if lv == level]
        accuracy = {c: sum(solved[c][i] for i in members) / len(members) if members else None
                    for c in choices}  # fmt: skip
        report.append({"level": level + 1, "problems": len(members), "choice": choice,
                       "accuracy": accuracy})  # fmt: skip
    return ComputeOptimalFit(fitted, plan.run_id, report)


def _verifier_scores(row: ResultRow) -> list[float | None]:
    """Each sample's verifier score (the ledger keeps none when no sample had an answer)."""
    return row.sample_verifier_scores or [None] * len(row.sample_keys)


def _write(outcome: TuneOutcome, out_dir: Path) -> None:
    from thinktank.bench.report import plot_pareto  # matplotlib loads only when needed

    out_dir.mkdir(parents=True, exist_ok=True)
    outcome.plot = plot_pareto(
        [(e.configuration.label, e.summary) for e in outcome.evaluated],
        out_dir / "pareto.png",
        title="Tuning: all problems (stars: Pareto front), the recommendation held out",
        recommended=outcome.recommended.summary if outcome.recommended else None,
        held_out=outcome.held_out.summary if outcome.held_out else None,
    )
    (out_dir / "tune.json").write_text(json.dumps(outcome.to_dict(), indent=2))


def _tune_id(outcome: TuneOutcome) -> str:
    return "tune-" + hashlib.sha256("\n".join(outcome.run_ids).encode()).hexdigest()[:12]


def _scored(scored: Sequence[Scored], configuration: Configuration) -> Scored:
    return next(s for s in scored if s.configuration == configuration)


def _output_price(model: str) -> float:
    return load_model(model).price.output_per_mtok


def _models_of(strategy: Strategy, model: str) -> list[str]:
    """The models a configuration samples from, each ``n`` times at most."""
    return strategy.own_models() or [model]


def _relative_cost(configuration: Configuration) -> float:
    strategy = build_strategy(configuration.strategy)
    prices = map(_output_price, _models_of(strategy, configuration.model))
    return strategy.samples_per_problem() * sum(prices)


def _spent(evaluated: Sequence[Evaluated]) -> dict[str, float]:
    return {
        "tokens": sum(e.summary.total_tokens for e in evaluated),
        "cost_usd": sum(e.summary.cost_usd for e in evaluated),
        "seconds": sum(e.summary.model_seconds for e in evaluated),
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
            and not build_strategy(e.configuration.strategy).own_models()
            and e.summary.samples
        ]
        if not measured:
            return None
        for key, total in (("tokens", "total_tokens"), ("cost_usd", "cost_usd"),
                           ("seconds", "model_seconds")):  # fmt: skip
            per_sample = max(getattr(s, total) / (s.n_problems * s.samples) for s in measured)
            estimate[key] += per_sample * strategy.samples_per_problem() * problems
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
