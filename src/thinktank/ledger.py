"""The SQLite ledger: one row per model call, one row per run (its schema: ``ledger_schema``),
and what the models wrote (``ledger_texts``): each call's prompt and completions, each
result's question, reference and solution.

Rows are committed as each call returns, so an interrupted run loses nothing it
already paid for. Default file: ``$THINKTANK_HOME/ledger.db``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from thinktank.config import home
from thinktank.config import log_texts as log_texts_default
from thinktank.ledger_runs import RunQueries
from thinktank.ledger_schema import connect
from thinktank.ledger_texts import TextQueries, TextStore, Transcript, WrittenText


@dataclass(frozen=True)
class CallRow:
    run_id: str
    problem_id: str
    strategy: str
    model: str
    n: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cost_usd: float
    cached_tokens: int = 0  # the part of prompt_tokens a prefix cache served
    thinking_tokens: int = 0  # the part of completion_tokens that was hidden reasoning
    #: What the call was for (`thinktank.meter.STAGES`); rows from before stages: sample.
    stage: str = "sample"
    #: The prompt as JSON (a string or chat messages) and what the call wrote: kept
    #: when the ledger logs texts. None: not given (an interrupted call keeps its prompt).
    prompt: str | None = field(default=None, compare=False)
    outputs: tuple[WrittenText, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ResultRow:
    """One problem solved by one strategy on one model, scored by the evaluator."""

    run_id: str
    strategy: str
    model: str
    problem_id: str
    #: The strategy's committed answer (its first, for a pass@k output) and its score.
    answer: str | None
    score: float
    #: Each sample's canonical answer (None: no answer) and score: pass@k and
    #: majority@k curves are computed from these without sampling again.
    sample_keys: list[str | None]
    sample_scores: list[float]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    seconds: float
    budget_exhausted: bool
    #: Each sample's verifier score, for strategies that used a verifier.
    sample_verifier_scores: list[float | None] = field(default_factory=list)
    cached_tokens: int = 0  # the part of prompt_tokens a prefix cache served
    #: Who drew each sample, for strategies that pool several samplers.
    sample_workers: list[str | None] = field(default_factory=list)
    #: For a pass@k output (several answers): each answer's score, the committed one
    #: first; empty for one answer. Never part of ``score``.
    answer_scores: list[float] = field(default_factory=list)
    #: The problem's and the solution's texts, stored beside the result (never read
    #: back into a row: see `Ledger.transcripts`).
    transcript: Transcript | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class BenchAttempt:
    """One invocation of a bench run (the first or a resume): the wall time it spent
    solving problems, and at what concurrency."""

    started_at: float
    wall_seconds: float
    concurrency: int


class CallRecorder:
    """Write-only: where a `Meter` records its calls. It appends call rows and offers
    nothing else, so a strategy that reaches its context's meter reaches no ledger:
    not the results (the grader's scores), not other runs, not even its own calls.
    Made from anything with ``record_call`` (a `Ledger`, a `CallLog`)."""

    __slots__ = ("_write",)

    def __init__(self, write: Callable[[CallRow], None]) -> None:
        self._write = write

    def record_call(self, row: CallRow) -> None:
        self._write(row)


class CallLog:
    """Call rows kept in memory instead of written: what a remote worker hands back to
    the driver, the only writer of the ledger (`Ledger.record_outcome`)."""

    def __init__(self) -> None:
        self.rows: list[CallRow] = []
        self._lock = threading.Lock()

    def record_call(self, row: CallRow) -> None:
        with self._lock:
            self.rows.append(row)


class Ledger(RunQueries, TextQueries):
    """A thread-safe handle on the ledger database; finding runs (`RunQueries`) and
    reading texts (`TextQueries`) are parts of it, in modules of their own.

    ``log_texts`` (default: `thinktank.config.log_texts`, yes unless
    ``$THINKTANK_LOG_TEXTS=0``) keeps what the models wrote beside the usage.
    """

    def __init__(self, path: str | Path | None = None, *, log_texts: bool | None = None) -> None:
        self.path = Path(path) if path is not None else home() / "ledger.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.log_texts = log_texts_default() if log_texts is None else log_texts
        self._lock = threading.Lock()
        self._db = connect(self.path)
        self._texts = TextStore(self._db)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction (the lock held): all of it is stored, or none."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def start_run(
        self,
        run_id: str,
        command: str,
        *,
        strategy: str | None = None,
        model: str | None = None,
        question: str | None = None,
        client: str | None = None,
    ) -> None:
        with self._lock:
            # OR IGNORE: a resumed bench run keeps its original row.
            self._db.execute(
                "INSERT OR IGNORE INTO runs"
                " (run_id, started_at, command, strategy, model, question, client)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, time.time(), command, strategy, model, question, client),
            )

    def finish_run(self, run_id: str, *, answer: str | None, budget_exhausted: bool) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE runs SET finished_at = ?, answer = ?, budget_exhausted = ?"
                " WHERE run_id = ?",
                (time.time(), answer, int(budget_exhausted), run_id),
            )

    def record_call(self, row: CallRow) -> None:
        with self._lock, self._transaction():
            self._insert_call(row)

    def _insert_call(self, row: CallRow) -> None:
        keep = self.log_texts and row.prompt is not None
        cursor = self._db.execute(
            "INSERT INTO calls (run_id, problem_id, strategy, model, n, prompt_tokens,"
            " completion_tokens, seconds, cost_usd, created_at, cached_tokens,"
            " thinking_tokens, stage, prompt_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.run_id,
                row.problem_id,
                row.strategy,
                row.model,
                row.n,
                row.prompt_tokens,
                row.completion_tokens,
                row.seconds,
                row.cost_usd,
                time.time(),
                row.cached_tokens,
                row.thinking_tokens,
                row.stage,
                self._texts.put(row.prompt) if keep else None,
            ),
        )
        if keep:
            self._texts.write_completions(cursor.lastrowid, row.outputs)

    def calls(self, run_id: str) -> list[CallRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, problem_id, strategy, model, n, prompt_tokens, completion_tokens,"
                " seconds, cost_usd, cached_tokens, thinking_tokens, stage FROM calls"
                " WHERE run_id = ? ORDER BY id",
                (run_id,),
            ).fetchall()
        return [CallRow(*row) for row in rows]

    def start_bench(self, run_id: str, config: dict) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO bench_runs (run_id, created_at, config) VALUES (?, ?, ?)",
                (run_id, time.time(), json.dumps(config)),
            )

    def bench_config(self, run_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT config FROM bench_runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def record_result(self, row: ResultRow) -> bool:
        """Store a result; False if this run already has one for the problem (kept as is)."""
        with self._lock, self._transaction():
            return self._insert_result(row)

    def record_outcome(self, result: ResultRow, calls: list[CallRow]) -> bool:
        """Store a result and the calls that paid for it in one transaction, the calls
        only if the result is new: a problem solved twice (a retried remote worker,
        say) is never counted twice."""
        with self._lock, self._transaction():
            stored = self._insert_result(result)
            if stored:
                for call in calls:
                    self._insert_call(call)
        return stored

    def _insert_result(self, row: ResultRow) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO results (run_id, strategy, model, problem_id, answer,"
            " score, sample_keys, sample_scores, prompt_tokens, completion_tokens,"
            " cost_usd, seconds, budget_exhausted, created_at, sample_verifier_scores,"
            " cached_tokens, sample_workers, answer_scores)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.run_id,
                row.strategy,
                row.model,
                row.problem_id,
                row.answer,
                row.score,
                json.dumps(row.sample_keys),
                json.dumps(row.sample_scores),
                row.prompt_tokens,
                row.completion_tokens,
                row.cost_usd,
                row.seconds,
                int(row.budget_exhausted),
                time.time(),
                json.dumps(row.sample_verifier_scores),
                row.cached_tokens,
                json.dumps(row.sample_workers),
                json.dumps(row.answer_scores),
            ),
        )
        stored = cursor.rowcount == 1
        if stored and self.log_texts and row.transcript is not None:
            self._texts.write_transcript(row.run_id, row.strategy, row.model, row.problem_id,
                                         row.transcript, time.time())  # fmt: skip
        return stored

    def revise_result(
        self, run_id: str, strategy: str, model: str, problem_id: str, answer: str | None,
        score: float,
    ) -> None:  # fmt: skip
        """Replace a result's answer and score (a strategy that re-answers a whole batch)."""
        with self._lock:
            self._db.execute(
                "UPDATE results SET answer = ?, score = ?"
                " WHERE run_id = ? AND strategy = ? AND model = ? AND problem_id = ?",
                (answer, score, run_id, strategy, model, problem_id),
            )

    def results(self, run_id: str) -> list[ResultRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, strategy, model, problem_id, answer, score, sample_keys,"
                " sample_scores, prompt_tokens, completion_tokens, cost_usd, seconds,"
                " budget_exhausted, sample_verifier_scores, cached_tokens, sample_workers,"
                " answer_scores FROM results"
                " WHERE run_id = ?"
                " ORDER BY created_at",
                (run_id,),
            ).fetchall()
        return [
            ResultRow(
                *row[:6],
                json.loads(row[6]),
                json.loads(row[7]),
                *row[8:12],
                bool(row[12]),
                json.loads(row[13] or "[]"),
                row[14],
                json.loads(row[15] or "[]"),
                json.loads(row[16] or "[]"),
            )
            for row in rows
        ]

    def record_bench_attempt(self, run_id: str, attempt: BenchAttempt) -> None:
        """Store (or bring up to date) one attempt's wall time: updated as results come,
        so a killed attempt keeps the time up to its last stored result."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO bench_attempts"
                " (run_id, started_at, wall_seconds, concurrency) VALUES (?, ?, ?, ?)",
                (run_id, attempt.started_at, attempt.wall_seconds, attempt.concurrency),
            )

    def bench_attempts(self, run_id: str) -> list[BenchAttempt]:
        with self._lock:
            rows = self._db.execute(
                "SELECT started_at, wall_seconds, concurrency FROM bench_attempts"
                " WHERE run_id = ? ORDER BY started_at",
                (run_id,),
            ).fetchall()
        return [BenchAttempt(*row) for row in rows]
