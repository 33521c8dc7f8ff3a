"""What the models wrote, kept in the ledger: every call's prompt and completions,
and each solution's candidates, votes and trace, with the question and (for a bench
run) the evaluator's reference kept apart.

Texts are stored once each: a table of zlib-compressed bodies keyed by their
SHA-256 (`TextStore`), so a prompt shared by n samples, or by every strategy of a
bench run, is one row. `Ledger` writes these rows in the same transaction as the
call or result they belong to; ``Ledger(log_texts=False)`` (``$THINKTANK_LOG_TEXTS=0``,
``--no-log-texts``) keeps usage only.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from thinktank.ledger_runs import where_clause


@dataclass(frozen=True)
class WrittenText:
    """One completion of a call as the ledger keeps it."""

    text: str
    finish_reason: str
    completion_tokens: int
    #: The worker that wrote it, in a session of workers sharing one cache (Hogwild!).
    worker: str | None = None


@dataclass(frozen=True)
class LoggedCompletion(WrittenText):
    index: int = 0


@dataclass(frozen=True)
class LoggedCall:
    """One model call with its texts (`Ledger.logged_calls`)."""

    id: int
    created_at: float
    run_id: str
    problem_id: str
    strategy: str
    model: str
    stage: str
    n: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cost_usd: float
    #: The prompt as the strategy sent it: a string, or a list of chat messages;
    #: None when texts were not logged.
    prompt: str | list[dict[str, Any]] | None
    completions: list[LoggedCompletion]

    def to_dict(self) -> dict[str, Any]:
        row = dict(self.__dict__)
        row["completions"] = [completion.__dict__ for completion in self.completions]
        return row


@dataclass(frozen=True)
class Transcript:
    """What a result's texts were: the question, the evaluator's reference (a bench
    run's; None for a question asked directly) and the solution's own words."""

    question: str
    reference: str | None
    #: `Solution.to_dict()` less its usage: answer, candidates (texts, answers,
    #: scores, workers), votes, trace, alternatives.
    solution: dict[str, Any]


@dataclass(frozen=True)
class StoredTranscript(Transcript):
    """A `Transcript` read back, with the result it belongs to."""

    run_id: str = ""
    strategy: str = ""
    model: str = ""
    problem_id: str = ""
    created_at: float = 0.0


class TextStore:
    """Bodies of text stored once each, by digest. Its methods run with the ledger's
    lock held (the `Ledger` calls them)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def put(self, text: str) -> int:
        """The id of ``text``'s row, written if it is new."""
        data = text.encode()
        digest = hashlib.sha256(data).digest()
        self._db.execute(
            "INSERT OR IGNORE INTO texts (digest, body) VALUES (?, ?)",
            (digest, zlib.compress(data, 6)),
        )
        return self._db.execute("SELECT id FROM texts WHERE digest = ?", (digest,)).fetchone()[0]

    def get(self, text_id: int | None) -> str | None:
        if text_id is None:
            return None
        row = self._db.execute("SELECT body FROM texts WHERE id = ?", (text_id,)).fetchone()
        return zlib.decompress(row[0]).decode() if row else None

    def write_completions(self, call_id: int, outputs: Sequence[WrittenText]) -> None:
        self._db.executemany(
            "INSERT INTO completions (call_id, idx, text_id, finish_reason,"
            " completion_tokens, worker) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (call_id, i, self.put(o.text), o.finish_reason, o.completion_tokens, o.worker)
                for i, o in enumerate(outputs)
            ],
        )

    def write_transcript(
        self, run_id: str, strategy: str, model: str, problem_id: str, transcript: Transcript,
        created_at: float,
    ) -> None:  # fmt: skip
        """Store a result's transcript; candidates' texts go by reference, so text the
        calls already stored costs nothing more."""
        solution = dict(transcript.solution)
        solution.pop("usage", None)
        solution["candidates"] = [
            {**{k: v for k, v in c.items() if k != "text"}, "text_id": self.put(c.get("text", ""))}
            for c in solution.get("candidates", [])
        ]
        self._db.execute(
            "INSERT OR REPLACE INTO transcripts (run_id, strategy, model, problem_id,"
            " question_id, reference, solution_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id, strategy, model, problem_id, self.put(transcript.question),
                transcript.reference, self.put(json.dumps(solution, default=str)), created_at,
            ),
        )  # fmt: skip

    def read_transcripts(
        self, run_id: str, problem_id: str | None = None
    ) -> list[StoredTranscript]:
        query = (
            "SELECT run_id, strategy, model, problem_id, question_id, reference, solution_id,"
            " created_at FROM transcripts WHERE run_id = ?"
        )
        parameters: list[Any] = [run_id]
        if problem_id is not None:
            query += " AND problem_id = ?"
            parameters.append(problem_id)
        stored = []
        for row in self._db.execute(query + " ORDER BY created_at", parameters).fetchall():
            solution = json.loads(self.get(row[6]) or "{}")
            solution["candidates"] = [
                {**{k: v for k, v in c.items() if k != "text_id"}, "text": self.get(c["text_id"])}
                for c in solution.get("candidates", [])
            ]
            stored.append(StoredTranscript(
                question=self.get(row[4]) or "", reference=row[5], solution=solution,
                run_id=row[0], strategy=row[1], model=row[2], problem_id=row[3],
                created_at=row[7],
            ))  # fmt: skip
        return stored

    def read_calls(self, rows: Sequence[tuple]) -> list[LoggedCall]:
        """`LoggedCall` for each ``calls`` row (id, created_at, run_id, problem_id,
        strategy, model, stage, n, prompt_tokens, completion_tokens, seconds,
        cost_usd, prompt_id), its completions read here."""
        calls = []
        for row in rows:
            prompt = self.get(row[12])
            completions = [
                LoggedCompletion(text=self.get(text_id) or "", finish_reason=reason,
                                 completion_tokens=tokens, worker=worker, index=index)
                for index, text_id, reason, tokens, worker in self._db.execute(
                    "SELECT idx, text_id, finish_reason, completion_tokens, worker"
                    " FROM completions WHERE call_id = ? ORDER BY idx", (row[0],)
                )
            ]  # fmt: skip
            calls.append(LoggedCall(*row[:12], prompt=None if prompt is None
                                    else json.loads(prompt), completions=completions))  # fmt: skip
        return calls


class TextQueries:
    """The `Ledger`'s reading and writing of texts that are not a call's or a result's
    own row (a part of it: it holds the connection and the `TextStore`)."""

    log_texts: bool
    _db: sqlite3.Connection
    _lock: threading.Lock
    _texts: TextStore
    _transaction: Callable[[], AbstractContextManager[None]]

    def record_transcript(
        self, run_id: str, strategy: str, model: str, problem_id: str, transcript: Transcript
    ) -> None:
        """Store the texts of a run that has no result row (a question asked directly,
        a server request): kept only when the ledger logs texts."""
        if self.log_texts:
            with self._lock, self._transaction():
                self._texts.write_transcript(run_id, strategy, model, problem_id, transcript,
                                             time.time())  # fmt: skip

    def transcripts(self, run_id: str, problem_id: str | None = None) -> list[StoredTranscript]:
        """A run's transcripts (each problem's question, reference, solution), oldest
        first; of one problem with ``problem_id``."""
        with self._lock:
            return self._texts.read_transcripts(run_id, problem_id)

    def logged_calls(
        self,
        limit: int = 20,
        *,
        run_id: str | None = None,
        problem_id: str | None = None,
        before: int | None = None,
    ) -> list[LoggedCall]:
        """The latest ``limit`` calls with their texts, newest first: of one run (and
        problem), and with ids below ``before`` (to page back)."""
        where, parameters = where_clause(
            ("run_id = ?", run_id), ("problem_id = ?", problem_id), ("id < ?", before)
        )
        with self._lock:
            rows = self._db.execute(
                "SELECT id, created_at, run_id, problem_id, strategy, model, stage, n,"
                " prompt_tokens, completion_tokens, seconds, cost_usd, prompt_id FROM calls"
                f" {where} ORDER BY id DESC LIMIT ?",
                (*parameters, limit),
            ).fetchall()
            return self._texts.read_calls(rows)
