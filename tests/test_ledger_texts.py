"""What the models wrote, kept in the ledger: prompts stored once, every completion,
each result's transcript; usage alone when asked; older ledgers upgraded in place."""

from __future__ import annotations

import json
import sqlite3

import pytest

import thinktank
from thinktank.ledger import CallRow, Ledger, ResultRow
from thinktank.ledger_texts import Transcript, WrittenText
from thinktank.meter import Budget, Meter
from thinktank.models.base import Sampling

#: The schema of a ledger written before texts were kept (and before stages and the
#: columns added with them): what `Ledger` must still open and bring up to date.
OLD_SCHEMA = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, started_at REAL NOT NULL, finished_at REAL,
    command TEXT NOT NULL, strategy TEXT, model TEXT, question TEXT, answer TEXT,
    budget_exhausted INTEGER);
CREATE TABLE calls (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
    problem_id TEXT, strategy TEXT, model TEXT NOT NULL, n INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, seconds REAL NOT NULL,
    cost_usd REAL NOT NULL, created_at REAL NOT NULL);
INSERT INTO runs VALUES ('old-run', 1.0, 2.0, 'solve', 'self-consistency:n=2', 'smollm2',
    'What is 1 + 1?', '2', 0);
INSERT INTO calls (run_id, problem_id, strategy, model, n, prompt_tokens, completion_tokens,
    seconds, cost_usd, created_at) VALUES ('old-run', 'q0', 'self-consistency:n=2', 'smollm2',
    2, 30, 12, 0.5, 0.0, 1.5);
"""


def table_rows(path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_a_solve_keeps_its_prompt_once_every_completion_and_its_transcript(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    solution = thinktank.solve(
        "What is 3 + 4?", strategy="self-consistency:n=3,max_tokens=16", model=smollm2,
        ledger=ledger, seed=1,
    )  # fmt: skip
    calls = ledger.logged_calls(run_id=solution.run_id)
    assert len(calls) == 1  # n=3 is one batched call
    call = calls[0]
    assert "What is 3 + 4?" in str(call.prompt)
    assert [c.text for c in call.completions] == [c.text for c in solution.candidates]
    assert sum(c.completion_tokens for c in call.completions) == call.completion_tokens
    # The prompt is one row however many samples share it, and candidates' texts are
    # the completions' rows again, not copies.
    with sqlite3.connect(ledger.path) as db:
        bodies = db.execute("SELECT COUNT(*) FROM texts").fetchone()[0]
    distinct = {c.text for c in solution.candidates}
    assert bodies == 1 + len(distinct) + 2  # prompt, completions, question, solution
    (transcript,) = ledger.transcripts(solution.run_id)
    assert transcript.question == "What is 3 + 4?"
    assert transcript.reference is None  # asked directly: no evaluator
    assert transcript.solution["answer"] == solution.answer
    assert [c["text"] for c in transcript.solution["candidates"]] == [
        c.text for c in solution.candidates
    ]
    assert "usage" not in transcript.solution


def test_a_bench_result_keeps_the_reference_apart_from_the_solution(smollm2, tmp_path):
    path = tmp_path / "suite.jsonl"
    path.write_text('{"id": "p1", "question": "What is 2 + 2?", "answer": "4"}\n')
    ledger = Ledger(tmp_path / "ledger.db")
    report = thinktank.benchmark(
        f"jsonl:{path}", ["self-consistency:n=2,max_tokens=12"], models=[smollm2], ledger=ledger
    )
    (transcript,) = ledger.transcripts(report.run_id)
    assert (transcript.problem_id, transcript.question, transcript.reference) == (
        "p1", "What is 2 + 2?", "4",
    )  # fmt: skip
    assert len(transcript.solution["candidates"]) == 2
    calls = ledger.logged_calls(run_id=report.run_id, problem_id="p1")
    assert calls and all(call.completions for call in calls)


def test_usage_only_keeps_no_text_at_all(smollm2, tmp_path, monkeypatch):
    monkeypatch.setenv("THINKTANK_LOG_TEXTS", "0")
    ledger = Ledger(tmp_path / "ledger.db")
    assert not ledger.log_texts
    solution = thinktank.solve(
        "What is 3 + 4?", strategy="self-consistency:n=2,max_tokens=8", model=smollm2,
        ledger=ledger, seed=1,
    )  # fmt: skip
    (call,) = ledger.logged_calls(run_id=solution.run_id)
    assert call.completion_tokens > 0 and call.prompt is None and call.completions == []
    assert ledger.transcripts(solution.run_id) == []
    for table in ("texts", "completions", "transcripts"):
        assert table_rows(ledger.path, table) == 0


def test_an_older_ledger_is_upgraded_in_place_and_keeps_its_rows(smollm2, tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    ledger = Ledger(path)
    (old,) = ledger.logged_calls(run_id="old-run")
    assert (old.prompt, old.completions, old.stage) == (None, [], "sample")
    assert old.completion_tokens == 12
    assert [run.run_id for run in ledger.recent_runs()] == ["old-run"]
    solution = thinktank.solve(
        "What is 3 + 4?", strategy="self-consistency:n=2,max_tokens=8", model=smollm2,
        ledger=ledger, seed=1,
    )  # fmt: skip
    (new,) = ledger.logged_calls(run_id=solution.run_id)
    assert len(new.completions) == 2
    assert {run.run_id for run in Ledger(path).recent_runs()} == {"old-run", solution.run_id}


def test_an_interrupted_call_keeps_its_prompt(smollm2, tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    meter = Meter(Budget(), ledger=ledger, run_id="cut", strategy="s", problem_id="p")

    def interrupt(tokens: int) -> None:
        if tokens >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        meter.generate(smollm2, "Count to ten:", 1, Sampling(max_tokens=16, seed=0),
                       progress=interrupt)  # fmt: skip
    (call,) = ledger.logged_calls(run_id="cut")
    assert call.prompt == "Count to ten:" and call.completions == []
    assert call.completion_tokens >= 2


def test_a_remote_workers_calls_and_transcript_land_together(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    outputs = (WrittenText("one", "stop", 3), WrittenText("two", "length", 3))
    call = CallRow("r", "p", "s", "m", 2, 10, 6, 0.1, 0.0, prompt=json.dumps("shared prompt"),
                   outputs=outputs)  # fmt: skip
    candidates = [{"text": "one", "answer": "1"}, {"text": "two", "answer": "2"}]
    transcript = Transcript("q?", "1", {"answer": "1", "candidates": candidates})
    result = ResultRow("r", "s", "m", "p", "1", 1.0, ["1", "2"], [1.0, 0.0], 10, 6, 0.0, 0.1,
                       False, transcript=transcript)  # fmt: skip
    assert ledger.record_outcome(result, [call, call])
    assert not ledger.record_outcome(result, [call])  # a retried worker counts once
    calls = ledger.logged_calls(run_id="r")
    assert len(calls) == 2 and all(c.prompt == "shared prompt" for c in calls)
    assert [c.text for c in calls[0].completions] == ["one", "two"]
    # Each body once: the prompt, the two completions (also the candidates'), the
    # question and the solution.
    assert table_rows(ledger.path, "texts") == 5
    (transcript,) = ledger.transcripts("r", "p")
    assert [c["text"] for c in transcript.solution["candidates"]] == ["one", "two"]
