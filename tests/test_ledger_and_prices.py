"""The SQLite ledger and the price book."""

from __future__ import annotations

import dataclasses

import pytest

from thinktank.economics import PriceBook, local_price, price_book
from thinktank.errors import ThinktankError
from thinktank.ledger import CallRow, Ledger
from thinktank.models.base import Price


def test_ledger_persists_and_summarizes_runs(tmp_path):
    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    ledger.start_run("run-a", "solve", strategy="single", model="smollm2", question="q?")
    for tokens in (10, 20):
        ledger.record_call(CallRow("run-a", "p1", "single", "smollm2", 2, 5, tokens, 0.5, 1e-6))
    ledger.start_run("run-b", "solve", question="unfinished")
    ledger.finish_run("run-a", answer="12", budget_exhausted=False)
    ledger.close()

    reopened = Ledger(path)  # nothing is lost across processes
    runs = {run.run_id: run for run in reopened.recent_runs()}
    a = runs["run-a"]
    assert (a.calls, a.completions, a.prompt_tokens, a.completion_tokens) == (2, 4, 10, 30)
    assert a.cost_usd == pytest.approx(2e-6)
    assert a.answer == "12" and a.finished
    assert not runs["run-b"].finished and runs["run-b"].calls == 0
    assert [r.completion_tokens for r in reopened.calls("run-a")] == [10, 20]


def test_ledger_defaults_to_thinktank_home(isolated_home):
    assert Ledger().path == isolated_home / "ledger.db"
    assert (isolated_home / "ledger.db").exists()


def test_local_price_follows_the_documented_size_rule(smollm2):
    price = local_price(1_000_000_000)
    assert price.output_per_mtok == pytest.approx(0.20)
    assert price.input_per_mtok == pytest.approx(0.05)
    # The shipped book agrees with the rule for the embedded models.
    assert smollm2.price.output_per_mtok == pytest.approx(
        local_price(smollm2.n_params).output_per_mtok, rel=0.01
    )
    assert price_book().get("gemma3-270m").output_per_mtok > smollm2.price.output_per_mtok


def test_user_price_book_overrides_model_by_model(tmp_path):
    shipped = tmp_path / "shipped.toml"
    shipped.write_text(
        "[models.a]\ninput_per_mtok = 1\noutput_per_mtok = 2\n"
        "[models.b]\ninput_per_mtok = 3\noutput_per_mtok = 4\n"
    )
    user = tmp_path / "user.toml"
    user.write_text("[models.b]\ninput_per_mtok = 30\noutput_per_mtok = 40\n")
    book = PriceBook([shipped, user])
    assert book.get("a").output_per_mtok == 2
    assert book.get("b").output_per_mtok == 40
    assert book.get("b").cost(1_000_000, 1_000_000) == pytest.approx(70)


def test_bad_price_book_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[models.a]\ninput_per_mtok = 1\n")
    with pytest.raises(ThinktankError, match="bad price book"):
        PriceBook([bad])


def test_a_ledger_from_before_the_newer_columns_is_upgraded(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the results and calls tables as first released
        db.execute(
            "CREATE TABLE calls (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,"
            " problem_id TEXT, strategy TEXT, model TEXT NOT NULL, n INTEGER NOT NULL,"
            " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
            " seconds REAL NOT NULL, cost_usd REAL NOT NULL, created_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO calls VALUES (1, 'r', 'p', 's', 'm', 2, 10, 20, 0.5, 0.0, 0.0)")
        db.execute(
            "CREATE TABLE results (run_id TEXT NOT NULL, strategy TEXT NOT NULL, model TEXT NOT"
            " NULL, problem_id TEXT NOT NULL, answer TEXT, score REAL NOT NULL, sample_keys TEXT"
            " NOT NULL, sample_scores TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,"
            " completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, seconds REAL NOT NULL,"
            " budget_exhausted INTEGER NOT NULL, created_at REAL NOT NULL,"
            " PRIMARY KEY (run_id, strategy, model, problem_id))"
        )
        db.execute(
            "INSERT INTO results VALUES ('r', 's', 'm', 'p', '4', 1.0, '[\"4\"]', '[1.0]', 5, 6,"
            " 0.0, 0.1, 0, 0.0)"
        )
    ledger = Ledger(path)
    [old] = ledger.results("r")
    assert old.sample_verifier_scores == [] and old.sample_keys == ["4"]
    assert (old.cached_tokens, old.sample_workers) == (0, [])
    ledger.record_result(
        dataclasses.replace(
            old, problem_id="q", sample_verifier_scores=[0.7], cached_tokens=3,
            sample_workers=["w"],
        )
    )  # fmt: skip
    assert [(r.sample_verifier_scores, r.cached_tokens, r.sample_workers)
            for r in ledger.results("r")] == [([], 0, []), ([0.7], 3, ["w"])]  # fmt: skip
    [old_call] = ledger.calls("r")
    assert old_call.cached_tokens == 0
    ledger.record_call(dataclasses.replace(old_call, cached_tokens=7))
    assert [c.cached_tokens for c in ledger.calls("r")] == [0, 7]


def test_cached_prompt_tokens_cost_a_tenth_unless_priced(tmp_path):
    default = Price(input_per_mtok=10, output_per_mtok=40)
    # 1M prompt tokens of which 0.5M cached: 0.5 x $10 + 0.5 x $1, no completion.
    assert default.cost(1_000_000, 0, cached_tokens=500_000) == pytest.approx(5.5)
    book_path = tmp_path / "prices.toml"
    book_path.write_text(
        "[models.c]\ninput_per_mtok = 10\noutput_per_mtok = 40\ncached_input_per_mtok = 5\n"
    )
    priced = PriceBook([book_path]).get("c")
    assert priced.cost(1_000_000, 0, cached_tokens=1_000_000) == pytest.approx(5)


def test_thinking_tokens_cost_their_own_price_and_the_output_price_by_default(tmp_path):
    book_path = tmp_path / "prices.toml"
    book_path.write_text(
        "[models.r]\ninput_per_mtok = 1\noutput_per_mtok = 4\nthinking_per_mtok = 10\n"
    )
    priced = PriceBook([book_path]).get("r")
    # 1M completion tokens, 0.25M of them thinking: 0.75 x $4 + 0.25 x $10.
    assert priced.cost(0, 1_000_000, thinking_tokens=250_000) == pytest.approx(5.5)
    assert priced.dearest_output_per_mtok == 10
    plain = Price(input_per_mtok=1, output_per_mtok=4)
    assert plain.cost(0, 1_000_000, thinking_tokens=250_000) == plain.cost(0, 1_000_000) == 4


def test_price_reversals_are_cheaper_per_token_but_dearer_per_answer():
    from thinktank.economics import price_reversals

    # (dollars per token, cost-of-pass); None: nothing solved.
    configurations = [(1e-8, 4e-6), (2e-8, 3e-6), (3e-8, 5e-6), (0.5e-8, None)]
    assert sorted(price_reversals(configurations)) == [(0, 1), (3, 0), (3, 1), (3, 2)]
    assert price_reversals([(1e-8, 1e-6), (2e-8, 2e-6)]) == []
