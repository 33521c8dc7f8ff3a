"""``thinktank view`` over a real ledger: a small bench run and a solve on the embedded
model, read through FastAPI's TestClient and through a real uvicorn server."""

from __future__ import annotations

import datetime
import html
import json
import os
import re
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pytest

import thinktank
from thinktank.api import KindWarning
from thinktank.bench.runner import plan_bench
from thinktank.bench.summary import summarize
from thinktank.cli import main
from thinktank.ledger import Ledger
from thinktank.view.app import SESSION_COOKIE, create_view_app
from thinktank.view.pages import NO_TEXTS
from thinktank.view.plots import svg_plots

from .conftest import RunningServer, free_port

SAMPLING = ["self-consistency:n=2,max_tokens=16", "best-of-n:n=2,max_tokens=16"]
#: A question that would run a script if the view did not escape it.
HOSTILE = "What is 2 + 3? <script>alert('x')</script>"
PROBLEMS = [
    {"id": "sums/1", "question": HOSTILE, "answer": "5"},
    {"id": "sums-2", "question": "What is 1 + 1?", "answer": "2"},
    {"id": "sums-3", "question": "What is 4 + 3?", "answer": "7"},
]


@dataclass
class Recorded:
    """The ledger the tests read, and what was written into it."""

    ledger: Ledger
    bench_id: str
    labels: list[str]
    solve_id: str


@pytest.fixture(scope="module")
def recorded(smollm2, tmp_path_factory):
    folder = tmp_path_factory.mktemp("view")
    suite = folder / "sums.jsonl"
    suite.write_text("".join(json.dumps(problem) + "\n" for problem in PROBLEMS))
    ledger = Ledger(folder / "ledger.db")
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        patch.setenv("THINKTANK_HOME", str(folder / "home"))
        warnings.simplefilter("ignore", KindWarning)  # 16 tokens may stop short of a number
        bench = thinktank.benchmark(f"jsonl:{suite}", SAMPLING, [smollm2], ledger=ledger)
        solved = thinktank.solve(HOSTILE, model=smollm2, strategy=SAMPLING[0], seed=0,
                                 ledger=ledger)  # fmt: skip
    labels = [f"{s.strategy} @ {s.model}" for s in bench.summaries]
    return Recorded(ledger, bench.run_id, labels, solved.run_id)


@pytest.fixture(scope="module")
def client(recorded):
    from fastapi.testclient import TestClient

    return TestClient(create_view_app(recorded.ledger), raise_server_exceptions=False)


def problem_path(run_id: str, problem_id: str) -> str:
    return f"/runs/{run_id}/problems/{quote(problem_id, safe='')}"


def elements(page: str, tag: str, cls: str) -> list[str]:
    """The opening tags of ``page``'s ``tag`` elements of class ``cls``."""
    return re.findall(rf'<{tag} class="{cls}[" ]', page)


def test_the_runs_list_shows_each_run_and_filters_them(client, recorded):
    page = client.get("/")
    assert page.status_code == 200
    assert '<table id="runs">' in page.text
    for run_id in (recorded.bench_id, recorded.solve_id):
        assert f'<tr class="run"><td><a href="/runs/{run_id}">{run_id}</a>' in page.text
    solves = client.get("/api/runs", params={"command": "solve"}).json()
    assert [run["run_id"] for run in solves["runs"]] == [recorded.solve_id]
    today = datetime.date.today()
    since_today = client.get("/api/runs", params={"since": today.isoformat()}).json()
    assert {recorded.bench_id, recorded.solve_id} <= {run["run_id"] for run in since_today["runs"]}
    yesterday = (today - datetime.timedelta(days=1)).isoformat()
    assert client.get("/api/runs", params={"until": yesterday}).json()["runs"] == []
    by_strategy = client.get("/api/runs", params={"strategy": "best-of-n", "command": "bench"})
    assert [run["run_id"] for run in by_strategy.json()["runs"]] == [recorded.bench_id]
    assert client.get("/api/runs", params={"page": 2}).json() == {
        "runs": [], "page": 2, "next_page": None
    }  # fmt: skip


def test_a_bench_run_shows_the_reports_numbers_plots_and_every_problem(client, recorded):
    ledger, run_id = recorded.ledger, recorded.bench_id
    summaries = summarize(ledger.results(run_id), ledger.bench_config(run_id))
    assert client.get(f"/api/runs/{run_id}").json()["summaries"] == [
        json.loads(json.dumps(s.to_dict())) for s in summaries
    ]
    page = client.get(f"/runs/{run_id}").text
    figures = re.findall(r'<figure class="plot" id="plot-([a-z_]+)"><svg', page)
    assert {"accuracy_vs_tokens", "pass_and_majority_at_k", "cost_of_pass", "pareto"} <= set(
        figures
    )
    for s in summaries:
        assert f"<td>{html.escape(s.strategy)} @ {s.model}</td><td>3</td>" in page
        assert f"<td>{s.accuracy:.2f}</td>" in page
    for problem in PROBLEMS:  # each links to its page, with each configuration's outcome
        row = re.search(
            rf'<tr class="problem"><td><a href="{re.escape(problem_path(run_id, problem["id"]))}">'
            r"(.*?)</tr>",
            page,
        )
        assert row is not None, problem["id"]
        assert row.group(1).count("<td>") == len(recorded.labels)
        assert "<script>" not in row.group(1)


def test_a_problem_shows_the_question_the_reference_apart_and_every_candidate(client, recorded):
    ledger, run_id = recorded.ledger, recorded.bench_id
    page = client.get(problem_path(run_id, "sums/1")).text
    assert f"<pre>{html.escape(HOSTILE)}</pre>" in page
    reference = re.search(r'<div id="reference">(.*?)</div>', page, re.S)
    assert reference is not None and "evaluator" in reference.group(1)
    assert "<pre>5</pre>" in reference.group(1)
    sections = page.split('<section class="config">')[1:]
    assert [re.search(r"<h2>(.*?)</h2>", s).group(1) for s in sections] == [
        html.escape(name) for name in recorded.labels
    ]
    assert page.index('<div id="reference">') < page.index('<section class="config">')
    calls = ledger.logged_calls(100, run_id=run_id, problem_id="sums/1")
    samples = [c for c in calls if c.stage == "sample"]
    assert samples, "the bench run sampled this problem"
    for call in samples:  # every sample the model wrote is a candidate of its strategy
        section = sections[recorded.labels.index(f"{call.strategy} @ {call.model}")]
        for completion in call.completions:
            assert f"<pre>{html.escape(completion.text)}</pre>" in section
    for section, name in zip(sections, recorded.labels, strict=True):
        assert len(elements(section, "div", "candidate")) == 2, name
    assert len(elements(page, "details", "call")) == len(calls)
    twin = client.get(f"/api{problem_path(run_id, 'sums/1')}").json()
    results = {f"{r.strategy} @ {r.model}": r for r in ledger.results(run_id)
               if r.problem_id == "sums/1"}  # fmt: skip
    assert twin["question"] == HOSTILE and twin["reference"] == "5"
    for config in twin["configs"]:
        grader = [c["grader_score"] for c in config["solution"]["candidates"]]
        assert grader == results[config["label"]].sample_scores
        assert config["result"]["score"] == results[config["label"]].score


def test_every_text_is_escaped(client, recorded):
    pages = [
        client.get("/").text,
        client.get(f"/runs/{recorded.solve_id}").text,
        client.get(problem_path(recorded.bench_id, "sums/1")).text,
        client.get(problem_path(recorded.solve_id, "q0")).text,
        client.get("/calls").text,
    ]
    for page in pages:
        assert "<script>" not in page
        assert "&lt;script&gt;" in page


def test_compare_counts_the_problems_both_solved(client, recorded):
    ledger, run_id = recorded.ledger, recorded.bench_id
    a, b = recorded.labels
    counts = client.get(f"/api/runs/{run_id}/compare", params={"a": a, "b": b}).json()["counts"]
    assert sum(counts.values()) == len(PROBLEMS)
    right = {(f"{r.strategy} @ {r.model}", r.problem_id): r.score >= 1
             for r in ledger.results(run_id)}  # fmt: skip
    differing = [p["id"] for p in PROBLEMS if right[a, p["id"]] != right[b, p["id"]]]
    assert counts["only_a"] + counts["only_b"] == len(differing)
    assert counts["both_right"] == sum(right[a, p["id"]] and right[b, p["id"]] for p in PROBLEMS)
    page = client.get(f"/runs/{run_id}/compare", params={"a": a, "b": b}).text
    assert '<table id="compare">' in page
    links = re.findall(r'<tr class="differs"><td><a href="([^"]+)"', page)
    assert links == [problem_path(run_id, pid) for pid in differing]
    missing = client.get(f"/runs/{run_id}/compare", params={"a": a, "b": "nope @ none"})
    assert missing.status_code == 404
    assert html.escape(a) in missing.text and html.escape(b) in missing.text  # the run's configs
    chooser = client.get(f"/runs/{run_id}/compare")
    assert chooser.status_code == 200 and 'id="compare-form"' in chooser.text
    assert client.get(f"/api/runs/{run_id}/compare").status_code == 400


def test_a_solve_run_shows_its_transcript_and_calls(client, recorded):
    ledger, run_id = recorded.ledger, recorded.solve_id
    page = client.get(f"/runs/{run_id}").text
    [stored] = ledger.transcripts(run_id)
    assert len(elements(page, "section", "config")) == 1
    for candidate in stored.solution["candidates"]:
        assert f"<pre>{html.escape(candidate['text'])}</pre>" in page
    assert len(elements(page, "details", "call")) == len(ledger.calls(run_id))
    assert client.get(f"/api/runs/{run_id}").json()["transcripts"][0]["question"] == HOSTILE


def test_the_live_page_follows_a_run_until_it_is_finished(client, recorded, smollm2):
    finished = client.get(f"/api/runs/{recorded.bench_id}/live").json()
    assert (finished["done"], finished["total"], finished["finished"]) == (6, 6, True)
    page = client.get(f"/runs/{recorded.bench_id}/live").text
    assert '<div id="live"' in page and 'http-equiv="refresh"' not in page
    suite = client.get(f"/api/runs/{recorded.bench_id}").json()["config"]["suite"]
    started = plan_bench(suite, ["single:max_tokens=8"], [smollm2], ledger=recorded.ledger)
    waiting = client.get(f"/runs/{started.run_id}/live").text
    assert '<meta http-equiv="refresh" content="2">' in waiting
    assert "0 of 3 results" in waiting
    not_bench = client.get(f"/runs/{recorded.solve_id}/live")
    assert not_bench.status_code == 404 and "not a bench run" in not_bench.text


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/runs/no-such-run", 404, "no-such-run"),
        ("/runs/no-such-run/live", 404, "no-such-run"),
        ("/?page=abc", 400, "page"),
        ("/?page=-1", 400, "page"),
        ("/?page=99999999999999999999", 400, "page"),
        ("/?since=notadate", 400, "YYYY-MM-DD"),
        ("/?until=2024-13-01", 400, "YYYY-MM-DD"),
        ("/calls?before=x", 400, "before"),
        ("/no/such/page", 404, "Not Found"),
    ],
)
def test_unknown_things_are_404_and_bad_values_400_never_500(client, path, status, says):
    page = client.get(path)
    assert (page.status_code, page.headers["content-type"].split(";")[0]) == (status, "text/html")
    assert says in page.text
    twin = client.get("/api" + (path if path.startswith("/runs") else path.replace("/?", "/runs?")))
    assert twin.status_code == status
    assert says in twin.json()["error"]["message"]


def test_an_unknown_problem_is_a_404(client, recorded):
    assert client.get(problem_path(recorded.bench_id, "no-such-problem")).status_code == 404
    reply = client.get("/api" + problem_path(recorded.bench_id, "no-such-problem"))
    assert reply.status_code == 404 and "no-such-problem" in reply.json()["error"]["message"]


def test_pages_say_so_when_the_texts_were_not_kept(smollm2, tmp_path):
    from fastapi.testclient import TestClient

    suite = tmp_path / "one.jsonl"
    suite.write_text(json.dumps(PROBLEMS[1]) + "\n")
    ledger = Ledger(tmp_path / "usage-only.db", log_texts=False)
    bench = thinktank.benchmark(f"jsonl:{suite}", ["single:max_tokens=8"], [smollm2],
                                ledger=ledger)  # fmt: skip
    solved = thinktank.solve("What is 1 + 1?", model=smollm2, strategy="single:max_tokens=8",
                             ledger=ledger)  # fmt: skip
    client = TestClient(create_view_app(ledger), raise_server_exceptions=False)
    for path in (
        f"/runs/{bench.run_id}",
        problem_path(bench.run_id, "sums-2"),
        f"/runs/{solved.run_id}",
        problem_path(solved.run_id, "q0"),
        "/calls",
    ):
        page = client.get(path)
        assert page.status_code == 200, path
        if path == problem_path(bench.run_id, "sums-2"):  # its configuration says so too
            assert html.escape(NO_TEXTS) in page.text.split('<section class="config">')[1]
        elif path != f"/runs/{bench.run_id}":
            assert html.escape(NO_TEXTS) in page.text, path


def test_a_key_guards_every_route_bearer_or_cookie_through_a_real_server(recorded):
    server = RunningServer(create_view_app(recorded.ledger, api_key="s3cret"))
    try:
        base = f"http://127.0.0.1:{server.port}"
        with httpx.Client(base_url=base) as anonymous:
            page = anonymous.get("/")
            assert page.status_code == 401 and "/login?key=" in page.text
            refused = anonymous.get("/api/runs")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"
            assert anonymous.get(f"/runs/{recorded.bench_id}").status_code == 401
            assert anonymous.get("/login", params={"key": "wrong"}).status_code == 401
            assert anonymous.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with httpx.Client(base_url=base, headers={"Authorization": "Bearer s3cret"}) as bearer:
            runs = bearer.get("/api/runs").json()["runs"]
            assert recorded.bench_id in {run["run_id"] for run in runs}
        with httpx.Client(base_url=base) as browser:
            login = browser.get("/login", params={"key": "s3cret"})
            assert (login.status_code, login.headers["location"]) == (303, "/")
            cookie = login.headers["set-cookie"]
            assert cookie.startswith(f"{SESSION_COOKIE}=") and "s3cret" not in cookie
            assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
            page = browser.get("/", follow_redirects=True)
            assert page.status_code == 200 and recorded.bench_id in page.text
            assert browser.get(problem_path(recorded.bench_id, "sums-2")).status_code == 200
    finally:
        server.close()


def test_plots_are_inline_svg_and_the_report_still_writes_its_files(recorded, tmp_path):
    from thinktank.bench.report import write_report

    ledger, run_id = recorded.ledger, recorded.bench_id
    config = ledger.bench_config(run_id)
    summaries = summarize(ledger.results(run_id), config)
    plots = svg_plots(summaries)
    assert all(svg.startswith("<svg") and svg.rstrip().endswith("</svg>") for _, svg in plots)
    report = write_report(run_id, config, summaries, tmp_path)
    pngs = {path.stem for path in tmp_path.glob("*.png")}
    assert pngs == {name for name, _ in plots}
    assert all(f"({name}.png)" in report.read_text() for name in pngs)


def test_the_command_refuses_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["view", "--port", "70000"])
    assert exited.value.code == 2 and "between 1 and 65535" in capsys.readouterr().err
    assert main(["view", "--ledger", str(tmp_path / "missing.db")]) == 2
    assert "no ledger at" in capsys.readouterr().err
    Ledger(tmp_path / "ledger.db").close()
    assert main(["view", "--ledger", str(tmp_path / "ledger.db"), "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err


def test_the_command_serves_the_ledger(recorded):
    port = free_port()
    env = {**os.environ, "THINKTANK_API_KEY": ""}
    command = [sys.executable, "-m", "thinktank", "view", "--port", str(port), "--ledger",
               str(recorded.ledger.path)]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/api/runs")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the view did not start"
                time.sleep(0.2)
        assert recorded.bench_id in {run["run_id"] for run in page.json()["runs"]}
        rebound = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": "evil.example"})
        assert rebound.status_code == 400  # a rebound domain reads nothing
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in err


def test_a_run_is_reached_by_a_prefix_of_its_id_or_as_last(client, recorded):
    whole = client.get(f"/api/runs/{recorded.bench_id}").json()
    assert client.get(f"/api/runs/{recorded.bench_id[:9]}").json() == whole
    latest = client.get("/api/runs/last").json()
    assert latest["run"]["run_id"] == recorded.ledger.recent_runs(1)[0].run_id
    assert client.get(f"/api/runs/{recorded.solve_id[:6]}").json()["run"]["run_id"] == (
        recorded.solve_id
    )
    refused = client.get("/api/runs/nosuch")
    assert refused.status_code == 404
    assert "`thinktank ledger` lists the runs" in refused.json()["error"]["message"]
