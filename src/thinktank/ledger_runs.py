"""Finding runs in the ledger: the latest ones, filtered (`RunQueries.recent_runs`),
and the one a user's words name, a whole id, a unique prefix or ``last``
(`RunQueries.find_run`). Part of `thinktank.ledger.Ledger`."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinktank.errors import SpecError

#: What names the latest run wherever a run id is taken (`Ledger.find_run`).
LATEST_RUN = "last"


@dataclass(frozen=True)
class RunSummary:
    """A run's row with its calls summed (`Ledger.recent_runs`)."""

    run_id: str
    started_at: float
    command: str
    strategy: str | None
    model: str | None
    question: str | None
    answer: str | None
    finished: bool
    calls: int
    completions: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cost_usd: float
    #: Who asked, for a server request: the client's ``user`` field or address.
    client: str | None = None


def where_clause(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """``WHERE`` and its parameters for the conditions whose value is not None (``""``
    when none is), each condition a SQL test with one ``?``."""
    kept = [(test, value) for test, value in conditions if value is not None]
    if not kept:
        return "", []
    return "WHERE " + " AND ".join(test for test, _ in kept), [value for _, value in kept]


class RunQueries:
    """The `Ledger`'s queries over its runs (a part of it: it holds the connection)."""

    path: Path
    _db: sqlite3.Connection
    _lock: threading.Lock

    def find_run(self, text: str, *, command: str | None = None) -> str:
        """The full id of the run ``text`` names: the id itself, any prefix of it no
        other run shares, or ``last`` (the latest run), among the runs of ``command``
        (``bench``, ``solve``, ``serve``...) when given. Raises `SpecError` saying
        what it found instead: nothing, or which runs a prefix could mean."""
        text = text.strip()
        which = f"{command} run" if command else "run"
        where, parameters = ("AND command = ?", [command]) if command else ("", [])
        with self._lock:
            if text == LATEST_RUN:
                found = self._db.execute(
                    f"SELECT run_id FROM runs WHERE 1 {where} ORDER BY started_at DESC LIMIT 1",
                    parameters,
                ).fetchall()
                if not found:
                    raise SpecError(f"no {which} in {self.path} yet, so no {LATEST_RUN!r} one")
                return found[0][0]
            matches = self._db.execute(
                "SELECT run_id, started_at FROM runs WHERE substr(run_id, 1, ?) = ?"
                f" {where} ORDER BY run_id = ? DESC, started_at DESC LIMIT 6",
                [len(text), text, *parameters, text],
            ).fetchall()
        if text and matches and (len(matches) == 1 or matches[0][0] == text):
            return matches[0][0]
        if not matches or not text:
            raise SpecError(
                f"no {which} {text!r} in {self.path} (`thinktank ledger` lists the runs;"
                f" a run id, a prefix of one, or {LATEST_RUN!r})"
            )
        shown = ", ".join(
            f"{run_id} ({time.strftime('%Y-%m-%d %H:%M', time.localtime(started))})"
            for run_id, started in matches[:5]
        )
        more = " and more" if len(matches) > 5 else ""
        raise SpecError(
            f"{text!r} could be any of these {which}s: {shown}{more}; give more of the id"
        )

    def recent_runs(
        self,
        limit: int = 20,
        *,
        offset: int = 0,
        command: str | None = None,
        strategy: str | None = None,
        model: str | None = None,
        client: str | None = None,
        since: float | None = None,
        until: float | None = None,
        run_id: str | None = None,
    ) -> list[RunSummary]:
        """The most recent runs, newest first, with their calls summed: those of one
        ``command`` (solve, bench, serve...) and ``client``, whose strategy and model
        contain ``strategy`` and ``model``, started between ``since`` and ``until``
        (Unix times); ``run_id`` picks one run."""
        where, parameters = where_clause(
            ("r.command = ?", command),
            ("r.client = ?", client),
            ("instr(r.strategy, ?) > 0", strategy),
            ("instr(r.model, ?) > 0", model),
            ("r.started_at >= ?", since),
            ("r.started_at <= ?", until),
            ("r.run_id = ?", run_id),
        )
        with self._lock:
            rows = self._db.execute(
                f"""
                SELECT r.run_id, r.started_at, r.command, r.strategy, r.model, r.question,
                       r.answer, r.finished_at IS NOT NULL,
                       COUNT(c.id), COALESCE(SUM(c.n), 0),
                       COALESCE(SUM(c.prompt_tokens), 0), COALESCE(SUM(c.completion_tokens), 0),
                       COALESCE(SUM(c.seconds), 0.0), COALESCE(SUM(c.cost_usd), 0.0), r.client
                FROM runs r LEFT JOIN calls c ON c.run_id = r.run_id {where}
                GROUP BY r.run_id ORDER BY r.started_at DESC LIMIT ? OFFSET ?
                """,
                (*parameters, limit, offset),
            ).fetchall()
        return [RunSummary(*row[:7], bool(row[7]), *row[8:]) for row in rows]
