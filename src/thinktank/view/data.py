"""What the view's pages show, read from the ledger: one object per page, which the
HTML pages draw (`thinktank.view.pages`) and the ``/api`` routes return as JSON
(their ``to_dict``), so a page and its JSON twin never disagree."""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from thinktank.bench.summary import ConfigSummary, summarize
from thinktank.errors import SpecError
from thinktank.ledger import Ledger, ResultRow
from thinktank.ledger_runs import RunSummary
from thinktank.ledger_texts import LoggedCall, StoredTranscript

#: Rows per page of the runs list and of the calls list.
PAGE_SIZE = 50
#: The most calls a problem's or a run's page lists (newest first).
CALLS_SHOWN = 100
#: The latest results the live page lists.
LATEST_SHOWN = 10


class NotFound(LookupError):
    """What a page asks for is not in the ledger (a 404); the message says what is."""


def result_dict(row: ResultRow) -> dict[str, Any]:
    """A result row as JSON (its transcript is never read back into a row)."""
    return {k: v for k, v in dataclasses.asdict(row).items() if k != "transcript"}


def config_label(strategy: str, model: str) -> str:
    """A configuration's name, as the bench report writes it."""
    return f"{strategy} @ {model}"


def config_labels(config: dict[str, Any]) -> list[str]:
    """A bench run's configurations in the report's order (models, then strategies)."""
    return [config_label(s, m) for m in config["models"] for s in config["strategies"]]


def is_right(row: ResultRow) -> bool:
    """Solved: only full credit counts, as in the bench summaries."""
    return row.score >= 1


def find_run(ledger: Ledger, run_id: str) -> RunSummary:
    """The run ``run_id`` names (its id, a unique prefix, ``last``: `Ledger.find_run`),
    or `NotFound` saying what was found instead."""
    try:
        return ledger.recent_runs(1, run_id=ledger.find_run(run_id))[0]
    except SpecError as exc:
        raise NotFound(str(exc)) from None


@dataclass(frozen=True)
class RunFilters:
    """The runs list's query: what to keep, and which page (from 1)."""

    command: str | None = None
    strategy: str | None = None
    model: str | None = None
    client: str | None = None
    since: datetime.date | None = None
    until: datetime.date | None = None
    page: int = 1

    def query(self, **changes: Any) -> dict[str, str]:
        """These filters (with ``changes``) as query parameters, the unset ones left out."""
        values = {**dataclasses.asdict(self), **changes}
        return {name: str(value) for name, value in values.items() if value not in (None, "")}


@dataclass(frozen=True)
class RunsPage:
    filters: RunFilters
    runs: list[RunSummary]
    has_next: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [dataclasses.asdict(run) for run in self.runs],
            "page": self.filters.page,
            "next_page": self.filters.page + 1 if self.has_next else None,
        }


def _day_start(day: datetime.date) -> float:
    """The Unix time a local calendar day starts (the times the pages show are local)."""
    return time.mktime(day.timetuple())


def runs_page(ledger: Ledger, filters: RunFilters) -> RunsPage:
    """One page of runs, newest first."""
    until = None
    if filters.until is not None:  # inclusive: up to the end of that day
        until = _day_start(filters.until + datetime.timedelta(days=1)) - 1e-6
    runs = ledger.recent_runs(
        PAGE_SIZE + 1,  # one more, to know whether there is a next page
        offset=(filters.page - 1) * PAGE_SIZE,
        command=filters.command or None,
        strategy=filters.strategy or None,
        model=filters.model or None,
        client=filters.client or None,
        since=None if filters.since is None else _day_start(filters.since),
        until=until,
    )
    return RunsPage(filters, runs[:PAGE_SIZE], len(runs) > PAGE_SIZE)


@dataclass(frozen=True)
class BenchRun:
    """A bench run as its report shows it: the configurations' summaries and every result."""

    run: RunSummary
    config: dict[str, Any]
    results: list[ResultRow]
    summaries: list[ConfigSummary]

    @property
    def labels(self) -> list[str]:
        """Its configurations (``strategy @ model``), in the report's order."""
        return config_labels(self.config)

    @property
    def problem_ids(self) -> list[str]:
        """Every problem with a result, in the order they were first solved."""
        return list(dict.fromkeys(row.problem_id for row in self.results))

    def by_label(self) -> dict[str, dict[str, ResultRow]]:
        """Each configuration's results by problem id."""
        table: dict[str, dict[str, ResultRow]] = {name: {} for name in self.labels}
        for row in self.results:
            table.setdefault(config_label(row.strategy, row.model), {})[row.problem_id] = row
        return table

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": dataclasses.asdict(self.run),
            "config": self.config,
            "summaries": [s.to_dict() for s in self.summaries],
            "results": [result_dict(row) for row in self.results],
        }


def bench_run(ledger: Ledger, run: RunSummary) -> BenchRun | None:
    """``run`` as a bench run; None when it is not one."""
    config = ledger.bench_config(run.run_id)
    if config is None:
        return None
    results = ledger.results(run.run_id)
    return BenchRun(run, config, results, summarize(results, config))


@dataclass(frozen=True)
class PlainRun:
    """A solve's or a server request's run: its transcripts and its calls."""

    run: RunSummary
    transcripts: list[StoredTranscript]
    calls: list[LoggedCall]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": dataclasses.asdict(self.run),
            "transcripts": [dataclasses.asdict(t) for t in self.transcripts],
            "calls": [call.to_dict() for call in self.calls],
        }


def plain_run(ledger: Ledger, run: RunSummary) -> PlainRun:
    return PlainRun(
        run,
        ledger.transcripts(run.run_id),
        ledger.logged_calls(CALLS_SHOWN, run_id=run.run_id),
    )


@dataclass(frozen=True)
class ConfigView:
    """One configuration's work on one problem: its scored result (a bench run's) and
    its solution's texts (when the ledger kept them)."""

    label: str
    result: ResultRow | None
    #: The stored `Solution.to_dict()` (less its usage); None: texts not kept.
    solution: dict[str, Any] | None

    @property
    def candidates(self) -> list[dict[str, Any]]:
        """The solution's candidates, each with the grader's score of its sample
        (``grader_score``, None when unknown)."""
        candidates = (self.solution or {}).get("candidates", [])
        scores = self.result.sample_scores if self.result is not None else []
        if len(scores) != len(candidates):  # the grader scored other samples: unknown
            scores = [None] * len(candidates)
        return [{**c, "grader_score": s} for c, s in zip(candidates, scores, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "result": None if self.result is None else result_dict(self.result),
            "solution": None
            if self.solution is None
            else {**self.solution, "candidates": self.candidates},
        }


@dataclass(frozen=True)
class ProblemView:
    """One problem of a run: the question, the evaluator's reference apart, each
    configuration's work, and the calls made for it."""

    run: RunSummary
    problem_id: str
    is_bench: bool
    #: None: the texts were not kept.
    question: str | None
    reference: str | None
    configs: list[ConfigView]
    calls: list[LoggedCall] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "problem_id": self.problem_id,
            "question": self.question,
            "reference": self.reference,
            "configs": [c.to_dict() for c in self.configs],
            "calls": [call.to_dict() for call in self.calls],
        }


def problem_view(ledger: Ledger, run: RunSummary, problem_id: str) -> ProblemView:
    """The problem ``problem_id`` of ``run``, or `NotFound`."""
    config = ledger.bench_config(run.run_id)
    results = [r for r in ledger.results(run.run_id) if r.problem_id == problem_id]
    transcripts = ledger.transcripts(run.run_id, problem_id)
    calls = ledger.logged_calls(CALLS_SHOWN, run_id=run.run_id, problem_id=problem_id)
    if not (results or transcripts or calls):
        raise NotFound(f"run {run.run_id!r} has no problem {problem_id!r}")
    texts = {(t.strategy, t.model): t.solution for t in transcripts}
    configs = [
        ConfigView(config_label(r.strategy, r.model), r, texts.pop((r.strategy, r.model), None))
        for r in results
    ]
    configs += [ConfigView(config_label(*key), None, solution) for key, solution in texts.items()]
    if config is not None:  # in the report's order
        order = {name: index for index, name in enumerate(config_labels(config))}
        configs.sort(key=lambda c: order.get(c.label, len(order)))
    question = transcripts[0].question if transcripts else None
    if question is None and config is None:
        question = run.question  # a solve's run row keeps its question
    reference = transcripts[0].reference if transcripts else None
    return ProblemView(run, problem_id, config is not None, question, reference, configs, calls)


@dataclass(frozen=True)
class Comparison:
    """Two configurations of a bench run on the problems both solved."""

    run: RunSummary
    a: str
    b: str
    both_right: int
    only_a: int
    only_b: int
    neither: int
    #: The problems where one is right and the other wrong: (problem id, A's, B's result).
    differs: list[tuple[str, ResultRow, ResultRow]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "a": self.a,
            "b": self.b,
            "counts": {
                "both_right": self.both_right,
                "only_a": self.only_a,
                "only_b": self.only_b,
                "neither": self.neither,
            },
            "differs": [
                {"problem_id": pid, "a": result_dict(ra), "b": result_dict(rb)}
                for pid, ra, rb in self.differs
            ],
        }


def compare(bench: BenchRun, a: str, b: str) -> Comparison:
    """``a`` against ``b`` (``strategy @ model`` labels); `NotFound` names the run's
    configurations when either is not one of them."""
    table = bench.by_label()
    for name in (a, b):
        if name not in table:
            raise NotFound(
                f"run {bench.run.run_id!r} has no configuration {name!r}; its "
                f"configurations: {', '.join(bench.labels) or 'none yet'}"
            )
    shared = [pid for pid in bench.problem_ids if pid in table[a] and pid in table[b]]
    pairs = [(pid, table[a][pid], table[b][pid]) for pid in shared]
    outcomes = [(is_right(ra), is_right(rb)) for _, ra, rb in pairs]
    return Comparison(
        bench.run,
        a,
        b,
        both_right=outcomes.count((True, True)),
        only_a=outcomes.count((True, False)),
        only_b=outcomes.count((False, True)),
        neither=outcomes.count((False, False)),
        differs=[pair for pair, (ok_a, ok_b) in zip(pairs, outcomes, strict=True) if ok_a != ok_b],
    )


@dataclass(frozen=True)
class Progress:
    """A bench run as far as it has come."""

    run: RunSummary
    done: int
    #: Results the run will have (problems x strategies x models); None: unknown.
    total: int | None
    latest: list[ResultRow]

    @property
    def finished(self) -> bool:
        """Its row says finished, and (a resumed run's row stays finished) every result is in."""
        return self.run.finished and (self.total is None or self.done >= self.total)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run.run_id,
            "done": self.done,
            "total": self.total,
            "finished": self.finished,
            "latest": [result_dict(row) for row in self.latest],
        }


def progress(ledger: Ledger, run: RunSummary, suite_size: Callable[[str], int | None]) -> Progress:
    """How far the bench run ``run`` has come (`NotFound` if it is not a bench run);
    ``suite_size`` tells how many problems a suite spec holds, if it can."""
    config = ledger.bench_config(run.run_id)
    if config is None:
        raise NotFound(f"run {run.run_id!r} is not a bench run: nothing to follow live")
    results = ledger.results(run.run_id)
    problems = suite_size(config["suite"])
    configs = len(config["strategies"]) * len(config["models"])
    total = None if problems is None else problems * configs
    return Progress(run, len(results), total, results[-LATEST_SHOWN:][::-1])


@dataclass(frozen=True)
class CallsPage:
    calls: list[LoggedCall]
    #: The ``before`` of the next (older) page; None: no older calls.
    next_before: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"calls": [call.to_dict() for call in self.calls], "next_before": self.next_before}


def calls_page(ledger: Ledger, before: int | None) -> CallsPage:
    """The latest calls below id ``before``, newest first."""
    calls = ledger.logged_calls(PAGE_SIZE + 1, before=before)
    shown = calls[:PAGE_SIZE]
    return CallsPage(shown, shown[-1].id if len(calls) > PAGE_SIZE else None)
