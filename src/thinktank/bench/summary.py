"""Per-configuration summaries of a bench run: accuracy, cost, cost-of-pass, scaling curves.

Accuracy is the share of problems whose committed answer (a pass@k output's first)
earned full credit; a pass@k output's any-of-k figure is reported apart
(``pass_at_k_output``) and feeds nothing else. A configuration that called a model
without a price has an unknown cost (None), never $0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from thinktank.aggregate import dawid_skene
from thinktank.bench.metrics import (
    best_of_k,
    false_positive_rate,
    fit_coverage_power_law,
    majority_at_k,
    pass_at_k,
    wilson_interval,
)
from thinktank.economics import Configuration, cost_of_pass, pareto_front, unpriced_models
from thinktank.ledger import ResultRow


@dataclass
class ConfigSummary:
    """One strategy on one model over the suite."""

    strategy: str
    model: str
    suite: str
    n_problems: int
    #: Share of problems whose committed answer is right (a pass@k output's first).
    accuracy: float
    ci95: tuple[float, float]
    total_tokens: int  # prompt + completion
    #: None when a model it called has no price (``unpriced_models``): unknown.
    cost_usd: float | None
    #: Expected dollars per correct answer; None when nothing was solved or the cost
    #: is unknown.
    cost_of_pass_usd: float | None
    #: Time inside model calls, summed over problems: concurrent problems each count
    #: theirs, so it exceeds the run's wall time (`Ledger.bench_attempts`).
    model_seconds: float
    budget_exhausted: int  # problems on which the budget ran out
    #: Models it called that have no price in the price book.
    unpriced_models: list[str] = field(default_factory=list)
    #: The most answers it gave a problem: above 1 for a pass@k output.
    answers_given: int = 1
    #: For a pass@k output: share of problems where any of its answers is right. The
    #: grader picks among the guesses here, so it is never the accuracy.
    pass_at_k_output: float | None = None
    #: Samples per problem behind the curves (the fewest any problem had).
    samples: int = 0
    #: pass@k for k = 1..samples. It reads the ground truth of every sample: an
    #: upper bound (a perfect selector), never the strategy's accuracy.
    pass_at_k: list[float] = field(default_factory=list)
    #: Expected accuracy of a majority vote over k of the samples, k = 1..samples.
    majority_at_k: list[float] = field(default_factory=list)
    #: (a, b) of coverage(k) = exp(a * k**b), fitted to pass_at_k; None if unfit.
    coverage_power_law: tuple[float, float] | None = None
    #: For strategies that score their samples (a verifier, a confidence):
    #: expected accuracy of the best-scored of k samples, k = 1..samples. An
    #: imperfect verifier shows here as a curve that flattens or bends down.
    best_of_k: list[float] = field(default_factory=list)
    #: Share of wrong samples the verifier accepts (score >= 0.5), measured
    #: against the ground truth on the evaluation side; None without [0, 1] scores.
    verifier_false_positive_rate: float | None = None
    #: For strategies that pool several samplers (workers): each worker's
    #: reliability as Dawid-Skene estimates it from agreement alone, and, from
    #: the ground truth (evaluation side), the share of its samples that were right.
    worker_reliability: dict[str, float] = field(default_factory=dict)
    worker_accuracy: dict[str, float] = field(default_factory=dict)
    #: The totals behind total_tokens; cached_tokens is the part of the prompt
    #: tokens a prefix cache served (cheaper; see `Price`).
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    on_frontier: bool = False  # lowest cost-of-pass of the run
    on_pareto_front: bool = False  # no configuration is both cheaper and more accurate

    @property
    def tokens_per_problem(self) -> float:
        return self.total_tokens / self.n_problems if self.n_problems else 0.0

    @property
    def computed_tokens(self) -> int:
        """Tokens the model computed: completions, and prompts less what a cache served."""
        return self.prompt_tokens - self.cached_tokens + self.completion_tokens

    @property
    def computed_tokens_per_problem(self) -> float:
        return self.computed_tokens / self.n_problems if self.n_problems else 0.0

    @property
    def cost_per_problem(self) -> float | None:
        if self.cost_usd is None:
            return None
        return self.cost_usd / self.n_problems if self.n_problems else 0.0

    @property
    def coverage_upper_bound(self) -> float | None:
        return self.pass_at_k[-1] if self.pass_at_k else None

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ci95": list(self.ci95),
            "tokens_per_problem": self.tokens_per_problem,
            "computed_tokens_per_problem": self.computed_tokens_per_problem,
            "cost_per_problem_usd": self.cost_per_problem,
            "coverage_upper_bound": self.coverage_upper_bound,
        }


def summarize(results: list[ResultRow], config: dict[str, Any]) -> list[ConfigSummary]:
    """Summaries in the run's order (models, then strategies), with frontier flags."""
    summaries = []
    for model in config["models"]:
        for strategy in config["strategies"]:
            rows = [r for r in results if r.strategy == strategy and r.model == model]
            if rows:
                unpriced = unpriced_models(config, Configuration(strategy, model))
                summaries.append(_summarize(rows, strategy, model, config["suite"], unpriced))
    mark_frontiers(summaries)
    return summaries


def mark_frontiers(summaries: list[ConfigSummary]) -> None:
    """Flag the lowest cost-of-pass (``on_frontier``) and the accuracy-cost Pareto front
    among ``summaries``; one of unknown cost is on neither."""
    for s in summaries:
        s.on_frontier = s.on_pareto_front = False
    finite = [s for s in summaries if s.cost_of_pass_usd is not None]
    if finite:
        min(finite, key=lambda s: s.cost_of_pass_usd).on_frontier = True
    priced = [s for s in summaries if s.cost_per_problem is not None]
    for index in pareto_front([(s.cost_per_problem, s.accuracy) for s in priced]):
        priced[index].on_pareto_front = True


def _summarize(
    rows: list[ResultRow], strategy: str, model: str, suite: str, unpriced: list[str]
) -> ConfigSummary:
    n = len(rows)
    solved = sum(r.score >= 1 for r in rows)  # only full credit counts as solved
    accuracy = solved / n
    cost = None if unpriced else sum(r.cost_usd for r in rows)
    summary = ConfigSummary(
        strategy=strategy,
        model=model,
        suite=suite,
        n_problems=n,
        accuracy=accuracy,
        ci95=wilson_interval(solved, n),
        total_tokens=sum(r.prompt_tokens + r.completion_tokens for r in rows),
        cost_usd=cost,
        cost_of_pass_usd=None if cost is None else _finite(cost_of_pass(cost / n, accuracy)),
        model_seconds=sum(r.seconds for r in rows),
        budget_exhausted=sum(r.budget_exhausted for r in rows),
        unpriced_models=unpriced,
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        cached_tokens=sum(r.cached_tokens for r in rows),
        completion_tokens=sum(r.completion_tokens for r in rows),
    )
    if any(r.answer_scores for r in rows):
        summary.answers_given = max(len(r.answer_scores) for r in rows)
        summary.pass_at_k_output = sum(max(r.answer_scores or [r.score]) >= 1 for r in rows) / n
    samples = min(len(r.sample_scores) for r in rows)
    if samples == 0:
        return summary
    summary.samples = samples
    ks = range(1, samples + 1)
    summary.pass_at_k = [
        sum(pass_at_k(len(r.sample_scores), _correct(r), k) for r in rows) / n for k in ks
    ]
    summary.majority_at_k = [
        sum(
            majority_at_k(r.sample_keys, [s >= 1 for s in r.sample_scores], k, seed=i)
            for i, r in enumerate(rows)
        )
        / n
        for k in ks
    ]
    if all(r.sample_verifier_scores for r in rows):
        _verifier_analysis(summary, rows, ks)
    if all(r.sample_workers for r in rows):
        _worker_analysis(summary, rows)
    if samples >= 3:
        try:
            summary.coverage_power_law = fit_coverage_power_law(list(ks), summary.pass_at_k)
        except (ValueError, RuntimeError):  # flat coverage, or the fit did not converge
            summary.coverage_power_law = None
    return summary


def _verifier_analysis(summary: ConfigSummary, rows: list[ResultRow], ks: range) -> None:
    correct = [[s >= 1 for s in r.sample_scores] for r in rows]
    summary.best_of_k = [
        sum(
            best_of_k(r.sample_verifier_scores, ok, k, seed=i)
            for i, (r, ok) in enumerate(zip(rows, correct, strict=True))
        )
        / len(rows)
        for k in ks
    ]
    scores = [s for r in rows for s in r.sample_verifier_scores]
    flags = [ok for per_row in correct for ok in per_row]
    if all(s is None or 0 <= s <= 1 for s in scores):  # a verifier's, not a log-prob confidence
        summary.verifier_false_positive_rate = false_positive_rate(scores, flags)


def _worker_analysis(summary: ConfigSummary, rows: list[ResultRow]) -> None:
    pairs = [list(zip(r.sample_workers, r.sample_keys, strict=True)) for r in rows]
    summary.worker_reliability = dawid_skene(pairs).reliability
    right: dict[str, list[bool]] = {}
    for r in rows:
        for worker, score in zip(r.sample_workers, r.sample_scores, strict=True):
            right.setdefault(worker, []).append(score >= 1)
    summary.worker_accuracy = {w: sum(v) / len(v) for w, v in sorted(right.items())}


def _correct(row: ResultRow) -> int:
    return sum(score >= 1 for score in row.sample_scores)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
