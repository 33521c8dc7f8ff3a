"""The ledger's schema, and bringing a ledger written by an older thinktank up to it.

Usage lives in ``runs``, ``calls``, ``bench_runs``, ``results`` and
``bench_attempts``; what the models wrote in ``texts`` (each body once, compressed),
``completions`` (a call's outputs) and ``transcripts`` (a result's question,
reference and solution), see ``ledger_texts``.

The tables are created as written here and columns added later are added to an
older file in place (`connect`), so every thinktank reads every ledger.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    command TEXT NOT NULL,
    strategy TEXT,
    model TEXT,
    question TEXT,
    answer TEXT,
    budget_exhausted INTEGER,
    client TEXT
);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    problem_id TEXT,
    strategy TEXT,
    model TEXT NOT NULL,
    n INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL,
    cost_usd REAL NOT NULL,
    created_at REAL NOT NULL,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    thinking_tokens INTEGER NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT 'sample',
    prompt_id INTEGER
);
CREATE INDEX IF NOT EXISTS calls_by_run ON calls(run_id);
CREATE TABLE IF NOT EXISTS texts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    digest BLOB NOT NULL UNIQUE,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS completions (
    call_id INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    text_id INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    completion_tokens INTEGER NOT NULL,
    worker TEXT,
    PRIMARY KEY (call_id, idx)
);
CREATE TABLE IF NOT EXISTS transcripts (
    run_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    model TEXT NOT NULL,
    problem_id TEXT NOT NULL,
    question_id INTEGER NOT NULL,
    reference TEXT,
    solution_id INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, strategy, model, problem_id)
);
CREATE TABLE IF NOT EXISTS bench_runs (
    run_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    model TEXT NOT NULL,
    problem_id TEXT NOT NULL,
    answer TEXT,
    score REAL NOT NULL,
    sample_keys TEXT NOT NULL,
    sample_scores TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    seconds REAL NOT NULL,
    budget_exhausted INTEGER NOT NULL,
    created_at REAL NOT NULL,
    sample_verifier_scores TEXT,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    sample_workers TEXT,
    answer_scores TEXT,
    PRIMARY KEY (run_id, strategy, model, problem_id)
);
CREATE TABLE IF NOT EXISTS bench_attempts (
    run_id TEXT NOT NULL,
    started_at REAL NOT NULL,
    wall_seconds REAL NOT NULL,
    concurrency INTEGER NOT NULL,
    PRIMARY KEY (run_id, started_at)
);
"""

#: Columns added since the tables were first written, by table: added to an older ledger.
_ADDED_COLUMNS: dict[str, dict[str, str]] = {
    "results": {
        "sample_verifier_scores": "TEXT",
        "cached_tokens": "INTEGER NOT NULL DEFAULT 0",
        "sample_workers": "TEXT",
        "answer_scores": "TEXT",
    },
    "calls": {
        "cached_tokens": "INTEGER NOT NULL DEFAULT 0",
        "thinking_tokens": "INTEGER NOT NULL DEFAULT 0",
        "stage": "TEXT NOT NULL DEFAULT 'sample'",
        "prompt_id": "INTEGER",
    },
    "runs": {"client": "TEXT"},
}


def connect(path: Path) -> sqlite3.Connection:
    """The ledger at ``path`` (made if missing), in autocommit and WAL mode, with the
    current schema."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    _add_missing_columns(db)
    return db


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a ledger written by an older thinktank up to the current schema."""
    for table, columns in _ADDED_COLUMNS.items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column, declaration in columns.items():
            if column not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
