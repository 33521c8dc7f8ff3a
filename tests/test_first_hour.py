"""A new user's first hour: every mistake gets a message that names what is wrong and
what to do, before anything is spent; each message is checked here, through the CLI."""

from __future__ import annotations

import json
import sys

import pytest

from thinktank.cli import main
from thinktank.ledger import Ledger


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and stderr of ``thinktank ARGV``, without whitespace: the console
    folds long lines, even inside a path."""
    code = main(list(argv))
    return code, squeezed(capsys.readouterr().err)


def squeezed(text: str) -> str:
    return "".join(text.split())


def suite_file(tmp_path, *lines: str) -> str:
    path = tmp_path / "suite.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return f"jsonl:{path}"


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ('{"question": "1 + 1?"}', 'suite.jsonl:2: no "answer" field'),
        ("{'question': '1 + 1?', 'answer': 2}", "suite.jsonl:2: not JSON (Expecting property name"),
        ('["1 + 1?", "2"]', "suite.jsonl:2: expected a JSON object, found list"),
        ('{"question": "1 + 1?", "answer": "2", "kind": "maths"}', '"kind" must be one of'),
        ('{"question": {"text": "1 + 1?"}, "answer": "2"}', '"question" must be a string'),
        ('{"question": "  ", "answer": "2"}', 'suite.jsonl:2: "question" is empty'),
    ],
)
def test_a_bad_jsonl_line_is_named_with_what_lines_must_hold(capsys, tmp_path, line, said):
    suite = suite_file(tmp_path, '{"question": "2 + 2?", "answer": "4"}', line)
    code, err = run_cli(capsys, "bench", "--suite", suite, "--strategy", "single")
    assert code == 2
    assert squeezed(said) in err
    assert squeezed('each line is one JSON object: {"question": "...", "answer": "..."}') in err
    assert squeezed('"kind" (math, text, choice, code; default math)') in err


@pytest.mark.parametrize(
    ("suite", "said"),
    [
        ("rg:chain_sum?size=abc", "suite rg:chain_sum: size must be an integer, not 'abc'"),
        ("rg:chain_sum?size=0", "size must be at least 1, not 0"),
        ("rg:chain_sum?terms=3", "chain_sum has no parameter 'terms'; its parameters: min_terms,"),
        ("rg:chain_sums", "no dataset 'chain_sums'; did you mean chain_sum"),
        ("rg:chain_sum?allow_negation=3", "allow_negation must be true or false, not 3"),
        ("humaneval?size=0", "size must be a whole number from 1 to 164"),
        ("humaneval?limit=3", "the only parameter is size"),
    ],
)
def test_suite_parameters_are_checked_by_name(capsys, suite, said):
    code, err = run_cli(capsys, "bench", "--suite", suite, "--strategy", "single")
    assert code == 2 and squeezed(said) in err
    assert "Traceback" not in err and "notsupportedbetween" not in err


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("best-of-majority:n=4,k=5", "k=5 answers cannot come from n=4 samples"),
        ("best-of-majority:n=16,min_share=0.25,k=5", "at most 4 answers can each hold"),
    ],
)
def test_impossible_strategy_options_are_refused(capsys, spec, said):
    code, err = run_cli(capsys, "solve", "What is 2 + 2?", "--strategy", spec)
    assert code == 2 and squeezed(said) in err


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ("gguf:/no/such.gguf", "model spec 'gguf:/no/such.gguf': no such file /no/such.gguf"),
        ("openai:m@localhost:8000", "expected openai:MODEL@http(s)://HOST[:PORT]/v1"),
        ("torch:smollm2?weights=int3", "options are chat=1 and weights="),
        ("nosuch", "unknown model 'nosuch' (available: smollm2"),
    ],
)
def test_a_cascade_pools_models_are_checked_before_anything_is_spent(capsys, model, said):
    # threshold=0: the cascade never escalates, so a model checked only when it is
    # needed would never be checked, and a bench would fail on the first problem
    # that does escalate, after spending.
    spec = f"cascade:models=smollm2+{model},threshold=0,n=2,max_tokens=8"
    code, err = run_cli(capsys, "solve", "What is 2 + 2?", "--strategy", spec)
    assert code == 2 and squeezed(said) in err
    assert Ledger().recent_runs() == []  # refused before the run was even registered
    code, err = run_cli(capsys, "bench", "--suite", "rg:chain_sum?size=2", "--strategy", spec)
    assert code == 2 and squeezed(said) in err
    assert Ledger().recent_runs() == []


def test_a_good_jsonl_suite_still_runs(capsys, tmp_path):
    suite = suite_file(
        tmp_path,
        '{"question": "2 + 2?", "answer": 4, "id": "four"}',
        "",
        '{"question": "Name a colour.", "answer": "red", "kind": "text"}',
    )
    code = main(["bench", "--suite", suite, "--strategy", "single:max_tokens=8", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runs"][0]["n_problems"] == 2


def test_a_py_verifier_is_found_in_the_current_directory_and_its_failure_located(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    (tmp_path / "first_hour_scores.py").write_text(
        "def length(problem, candidate):\n"
        "    return len(candidate.text)\n"
        "def broken(problem, candidate):\n"
        "    return {}['missing']\n"
    )
    strategy = "best-of-n:n=3,max_tokens=24,verifier=py:first_hour_scores:{}"
    question = "State the final answer: 6 + 3 ="
    code = main(["solve", question, "--seed", "0", "--strategy", strategy.format("length"),
                 "--json"])  # fmt: skip
    candidates = json.loads(capsys.readouterr().out)["candidates"]
    scored = [c for c in candidates if c["score"] is not None]  # those with an answer
    assert code == 0 and scored
    assert all(c["score"] == len(c["text"]) for c in scored)
    code, err = run_cli(capsys, "solve", question, "--seed", "0", "--strategy",
                        strategy.format("broken"))  # fmt: skip
    assert code == 2
    failed = "verifier py:first_hour_scores:broken failed on problem q0: KeyError: 'missing'"
    assert squeezed(failed) in err
    assert squeezed(f"(at {tmp_path / 'first_hour_scores.py'}:4)") in err
    assert "Traceback" not in err
    code, err = run_cli(capsys, "solve", "2 + 2?", "--strategy", "best-of-n:verifier=py:nowhere:f")
    assert code == 2
    nowhere = f"No module named 'nowhere' on PYTHONPATH or in the current directory ({tmp_path})"
    assert squeezed(nowhere) in err


@pytest.mark.parametrize("target", ["2", "0", "-0.5", "80"])
def test_tune_refuses_an_accuracy_no_configuration_can_reach_before_running(capsys, target):
    code, err = run_cli(capsys, "tune", "--suite", "rg:chain_sum?size=4", "--target-accuracy",
                        target)  # fmt: skip
    assert code == 2
    assert squeezed("a target accuracy is a share of problems solved, above 0 and at most 1") in err
    assert Ledger().recent_runs() == []  # nothing ran


def test_every_thinktank_home_shares_one_copy_of_the_gemma_file(monkeypatch, tmp_path):
    from thinktank.models import _gemma3_path

    monkeypatch.setenv("THINKTANK_CACHE", str(tmp_path / "cache"))
    paths = []
    for home in ("first", "second"):
        monkeypatch.setenv("THINKTANK_HOME", str(tmp_path / home))
        paths.append(_gemma3_path())
    assert paths[0] == paths[1] == tmp_path / "cache" / "models" / paths[0].name
    assert not (tmp_path / "first" / "models").exists()  # no copy under either home
    assert not (tmp_path / "second" / "models").exists()
    assert not list(paths[0].parent.glob("*.part"))  # nothing half-joined left behind


def test_a_run_is_found_by_its_id_a_unique_prefix_or_last(tmp_path):
    from thinktank.errors import SpecError

    ledger = Ledger(tmp_path / "ledger.db")
    for run_id, command in (("bench-aa11", "bench"), ("bench-ab22", "bench"), ("ab", "solve")):
        ledger.start_run(run_id, command)
    assert ledger.find_run("bench-aa11") == "bench-aa11"
    assert ledger.find_run("bench-aa") == "bench-aa11"
    assert ledger.find_run("ab") == "ab"  # an id that is also a prefix of another
    assert ledger.find_run("last") == "ab"
    assert ledger.find_run("last", command="bench") == "bench-ab22"
    with pytest.raises(SpecError) as ambiguous:
        ledger.find_run("bench-a")
    assert "'bench-a' could be any of these runs: bench-a" in str(ambiguous.value)
    assert "bench-aa11" in str(ambiguous.value) and "bench-ab22" in str(ambiguous.value)
    assert "give more of the id" in str(ambiguous.value)
    with pytest.raises(SpecError, match=r"no bench run 'ab' in .*`thinktank ledger` lists"):
        ledger.find_run("ab", command="bench")
    with pytest.raises(SpecError, match="no run ''"):
        ledger.find_run("")
    with pytest.raises(SpecError, match=r"no serve run in .* yet, so no 'last' one"):
        ledger.find_run("last", command="serve")


def test_report_takes_a_prefix_or_last(capsys, tmp_path):
    suite = suite_file(tmp_path, '{"question": "2 + 2?", "answer": "4"}')
    assert main(["bench", "--suite", suite, "--strategy", "single:max_tokens=8", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    for name in (run_id[:9], "last"):
        code = main(["report", name, "--out", str(tmp_path / name)])
        assert code == 0
        written = capsys.readouterr().out.strip()
        assert written == str(tmp_path / name / "report.md")
        assert run_id in (tmp_path / name / "report.md").read_text()
    code, err = run_cli(capsys, "report", "nosuch")
    assert code == 2 and squeezed("no bench run 'nosuch'") in err


def test_a_strategy_that_needs_a_shared_cache_gets_the_model_that_has_one(capsys):
    from thinktank.models import DEFAULT_MODEL, default_model_for

    assert default_model_for() == DEFAULT_MODEL
    assert default_model_for({"shared_cache"}) == "torch:smollm2"
    question = "What is 2 + 2?"
    assert main(["solve", question, "--strategy", "hogwild:workers=2,max_tokens=8", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["model"] == "torch:smollm2"
    said = squeezed(captured.err)
    assert squeezed("model torch:smollm2 (hogwild needs workers that share one KV cache,") in said
    assert squeezed("--model to choose)") in said


def test_a_piped_bench_reports_progress_resumes_and_where_its_report_is(capsys, tmp_path):
    suite = suite_file(tmp_path, *(
        json.dumps({"question": f"What is {n} + 1?", "answer": str(n + 1)}) for n in range(4)
    ))  # fmt: skip
    strategies = ["--strategy", "single:max_tokens=8", "--strategy", "self-consistency:n=2,"
                  "max_tokens=8"]  # fmt: skip
    assert main(["bench", "--suite", suite, *strategies]) == 0
    first = capsys.readouterr()
    run_id = Ledger().find_run("last", command="bench")
    progress = [line for line in first.err.splitlines() if line.startswith(f"{run_id}: ")]
    assert progress[-1].startswith(f"{run_id}: 8/8 accuracy so far")  # stderr is no terminal
    assert len(progress) >= 4
    # The table is numbered; each configuration's whole spec is below it, to paste.
    assert " 1  single:max_tokens=8 on smollm2" in first.out
    assert " 2  self-consistency:max_tokens=8,n=2 on smollm2" in first.out
    assert squeezed(f"thinktank report {run_id} (or bench --out DIR)") in squeezed(first.err)
    assert squeezed(f"The run is in {Ledger().path};") in squeezed(first.err)
    assert squeezed("model seconds: time in model calls") in squeezed(first.err)
    assert main(["bench", "--suite", suite, *strategies]) == 0
    again = squeezed(capsys.readouterr().err)
    assert squeezed(f"resuming run {run_id}: 8 of 8 results are in the ledger already") in again


def test_the_ledger_shows_whole_ids_in_a_table_and_in_80_columns(capsys, tmp_path):
    import io

    from rich.console import Console

    from thinktank.cli.ledger import _run_list

    ledger = Ledger()
    question = "What is the sum of " + "1 + " * 40 + "1?"
    ledger.start_run("bench-0123456789ab", "bench", strategy="self-consistency:n=8" * 4,
                     model="smollm2", question=question)  # fmt: skip
    ledger.finish_run("bench-0123456789ab", answer="41", budget_exhausted=False)
    assert main(["ledger"]) == 0
    captured = capsys.readouterr()
    assert "bench-0123456789ab" in captured.out  # whole, never cut to 8 characters
    assert "works wherever a run is named" in captured.err
    narrow = Console(file=io.StringIO(), width=80)
    _run_list(narrow, ledger.recent_runs())
    lines = narrow.file.getvalue().splitlines()
    assert lines[0].startswith("bench-0123456789ab  ") and lines[0].endswith(" s")
    assert all(len(line) <= 80 for line in lines[1:])
    assert lines[2].endswith("… → 41")  # the question gives way, not the answer
    assert main(["ledger", "--command", "solve"]) == 0
    assert "no runs match" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "view"])
def test_a_server_on_a_port_in_use_says_so_before_it_says_it_serves(capsys, command):
    import socket

    Ledger().close()  # the view needs a ledger to show
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        code, err = run_cli(capsys, command, "--port", str(taken))
    assert code == 2
    assert squeezed(f"port {taken} on 127.0.0.1 is in use (another server?)") in err
    assert "serving" not in err and "thinktankviewof" not in err
    code, err = run_cli(capsys, command, "--host", "no-such-host.invalid", "--port", "8999",
                        *(["--api-key", "k"] if command == "view" else []))  # fmt: skip
    assert code == 2 and squeezed("--host no-such-host.invalid: not an address") in err
