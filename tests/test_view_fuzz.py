"""Every GET route of `thinktank view`, fuzzed: path parameters from the ledger's real
ids and from junk (unicode, very long strings, ``..``, ``%00``), query parameters
with random names and values. No request ever gets a 5xx, and every ``/api``
answer, errors too, is JSON."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import thinktank
from thinktank.ledger import Ledger
from thinktank.view.app import create_view_app

SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size=2&seed=1"
STRATEGIES = ["single:max_tokens=8", "self-consistency:n=2,max_tokens=8"]
API_KEY = "view-fuzz-key"
# Seeded by the profile tests/conftest.py loads (HYPOTHESIS_PROFILE=explore: fresh draws).
FUZZED = settings(
    max_examples=300,
    deadline=None,
    # The module's ledger is shared on purpose; the autouse home fixture is not used.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


class Route(NamedTuple):
    """A GET route: its path template, its path parameters and its query parameters."""

    path: str
    path_params: tuple[str, ...]
    query_params: tuple[str, ...]


def get_routes(app: FastAPI) -> list[Route]:
    """The app's GET routes, read from ``app.routes`` (an included router's too)."""

    def walk(routes: list[Any], prefix: str) -> Iterator[Route]:
        for route in routes:
            included = getattr(route, "original_router", None)
            if included is not None:  # FastAPI keeps an included router whole
                yield from walk(included.routes, prefix + route.include_context.prefix)
            elif "GET" in (getattr(route, "methods", None) or ()):
                names = tuple(re.findall(r"{(\w+)(?::\w+)?}", route.path))
                queries = tuple(p.alias for p in route.dependant.query_params)
                yield Route(prefix + route.path, names, queries)

    return list(walk(app.routes, ""))


class Site(NamedTuple):
    """The ledger's real ids, and the view over it (open, and asking for a key)."""

    ids: list[str]
    #: The bench run's id.
    run_id: str
    open: TestClient
    locked: TestClient
    routes: list[Route]


@pytest.fixture(scope="module")
def site(smollm2, tmp_path_factory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("view-fuzz")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("THINKTANK_HOME", str(home))
        ledger = Ledger(home / "ledger.db")
        bench = thinktank.benchmark(SUITE, STRATEGIES, [smollm2], ledger=ledger)
        solved = thinktank.solve(
            "What is 2 + 3?", model=smollm2, strategy=STRATEGIES[0], ledger=ledger
        )
    config = ledger.bench_config(bench.run_id)
    labels = [f"{s} @ smollm2" for s in config["strategies"]]
    problems = [row.problem_id for row in ledger.results(bench.run_id)]
    calls = [str(call.id) for call in ledger.logged_calls(5)]
    ids = [bench.run_id, solved.run_id, *labels, *problems, *calls]
    app = create_view_app(ledger)
    locked = create_view_app(ledger, api_key=API_KEY)
    with (
        TestClient(app, raise_server_exceptions=False) as open_client,
        TestClient(locked, raise_server_exceptions=False) as locked_client,
    ):
        yield Site(ids, bench.run_id, open_client, locked_client, get_routes(app))


JUNK = [
    "..",
    "../..",
    "%00",
    "%2e%2e",
    "%2F",
    "%ff",
    "-1",
    "0",
    "abc",
    "garbage",
    "1e999",
    "99999999999999999999",
    "2026-13-45",
    "0001-01-01",
    "9999-12-31",
    "",
    " ",
    "null",
    "true",
    "[]",
    "{}",
    "'; DROP TABLE runs; --",
    "<script>alert(1)</script>",
    "😀" * 50,
    "x" * 10_000,
]


def values(ids: list[str]) -> st.SearchStrategy[str]:
    """Values a parameter may take: a real id, junk, or any text."""
    return st.one_of(
        st.sampled_from(ids),
        st.sampled_from(JUNK),
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=3000),
    )


@st.composite
def requests(draw: st.DrawFn, site: Site, *, junk_paths: bool = True) -> str:
    """A GET request's URL on one of the routes; its path parameters are real ids
    unless ``junk_paths``."""
    route = draw(st.sampled_from(site.routes))
    path = route.path
    for name in route.path_params:
        value = draw(values(site.ids) if junk_paths else st.sampled_from(site.ids))
        # Mostly escaped (a value as a link would send it); sometimes raw, so that
        # `..`, `%00` and slashes reach the router as they are.
        raw = draw(st.booleans()) and re.fullmatch(r"[\w.%/-]*", value)
        sent = value if raw else quote(value, safe="")
        placeholder = re.search(rf"{{{name}(:\w+)?}}", path)
        assert placeholder is not None, path
        path = path.replace(placeholder.group(0), sent)
    names = st.one_of(st.sampled_from(route.query_params or ("page",)), st.text(max_size=12))
    query = draw(st.lists(st.tuples(names, values(site.ids)), max_size=4))
    if not query:
        return path
    return path + "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)


@pytest.mark.parametrize(
    ("url", "status", "says"),
    [
        ("/api/runs?page=-1", 400, "page"),
        ("/api/runs?page=abc", 400, "page"),
        ("/api/runs?page=99999999999999999999", 400, "page"),
        ("/api/runs?since=garbage", 400, "since: expected a date as YYYY-MM-DD"),
        ("/api/runs?until=2026-02-30", 400, "until"),
        ("/api/calls?before=abc", 400, "before"),
        ("/api/runs/{run}/compare?a=missing&b=missing", 404, "its configurations: single"),
        ("/api/runs/{run}/compare?a=missing", 400, "name the two configurations"),
        ("/api/runs/%00", 404, "no run"),
        ("/api/runs/{run}/problems/%00", 404, "has no problem"),
        ("/api/runs/{run}/problems/..%2F..%2Fcalls", 404, "has no problem"),
        ("/api/runs/" + "x" * 10_000, 404, "no run"),
        ("/api/runs/%F0%9F%98%80/live", 404, "no run '\U0001f600'"),
    ],
)
def test_the_bad_inputs_the_issue_names_get_a_clear_4xx(site, url, status, says):
    response = site.open.get(url.format(run=site.run_id))
    assert response.status_code == status, response.text[:300]
    assert says in response.json()["error"]["message"]


def test_every_get_route_is_fuzzed(site):
    paths = {route.path for route in site.routes}
    # The pages and their JSON twins: a route added to the app is fuzzed too.
    assert {"/", "/api/runs", "/runs/{run_id}", "/calls", "/login"} <= paths
    assert any("problems" in path for path in paths)
    assert {"/runs/{run_id}/compare", "/api/runs/{run_id}/compare"} <= paths


@FUZZED
@given(data=st.data())
def test_no_request_gets_a_server_error(site, data):
    url = data.draw(requests(site), label="url")
    response = site.open.get(url, follow_redirects=True)
    event(f"status {response.status_code}")  # --hypothesis-show-statistics: what was reached
    assert response.status_code < 500, (url, response.text[:500])
    # The path answered: the client drops `..` segments, as a browser does, and follows
    # redirects (`/api/runs/` to `/api/runs`).
    if response.request.url.path.startswith("/api/"):
        assert response.headers["content-type"].startswith("application/json"), url
        body = response.json()
        if response.status_code >= 400:
            assert body["error"]["message"], url


@settings(FUZZED, max_examples=100)
@given(data=st.data())
def test_without_the_key_every_route_but_login_is_refused(site, data):
    url = data.draw(requests(site, junk_paths=False), label="url")
    response = site.locked.get(url, follow_redirects=False)
    assert response.status_code < 500, (url, response.text[:500])
    if not url.startswith("/login"):
        assert response.status_code == 401, url
    if response.request.url.path.startswith("/api/"):
        assert response.json()["error"]["message"], url
