"""The view's ASGI app: each page as HTML and, under ``/api``, as JSON; the auth of
``thinktank serve`` (a bearer key), plus a cookie a browser gets from ``/login``.

Errors are a page for a page and an OpenAI-style ``{"error": {...}}`` body for
``/api``: 404 for what the ledger does not hold, 400 for a bad query value,
never a traceback.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from thinktank.bench.suites import load_suite
from thinktank.ledger import Ledger
from thinktank.view import data, pages
from thinktank.view.plots import svg_plots

#: The cookie `/login` sets for a browser, in place of the bearer header.
SESSION_COOKIE = "thinktank_view"
#: Bounds on paging values: past them SQLite's integers overflow.
MAX_PAGE = 1_000_000
MAX_CALL_ID = 2**62
#: Runs whose plots are kept rendered.
_PLOTS_KEPT = 16

Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="page number, from 1")]
Before = Annotated[int | None, Query(ge=1, le=MAX_CALL_ID, description="calls below this id")]


class ViewError(Exception):
    """A request the view refuses, with its HTTP status."""

    def __init__(self, status: int, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def create_view_app(ledger: Ledger, *, api_key: str | None = None) -> FastAPI:
    """The view over ``ledger``. ``api_key``: every route asks for ``Authorization:
    Bearer KEY`` or the cookie ``GET /login?key=KEY`` sets (else 401)."""
    app = FastAPI(title="thinktank view", docs_url=None, redoc_url=None, openapi_url=None)
    _handle_errors(app)
    site = Site(ledger)
    router = APIRouter(dependencies=[Depends(_authenticator(api_key))])
    for path, load, draw in (
        ("/", site.runs, pages.runs_page),
        ("/runs/{run_id}", site.run, site.draw_run),
        ("/runs/{run_id}/problems/{problem_id:path}", site.problem, pages.problem_page),
        ("/runs/{run_id}/live", site.live, pages.live_page),
        ("/calls", site.calls, pages.calls_page),
    ):
        router.get(path, response_class=HTMLResponse, response_model=None)(_as_html(load, draw))
        api = "/api/runs" if path == "/" else f"/api{path}"
        router.get(api, response_model=None)(_as_json(load))
    router.get("/runs/{run_id}/compare", response_class=HTMLResponse)(site.compare_html)
    router.get("/api/runs/{run_id}/compare", response_model=None)(_as_json(site.compare))
    app.include_router(router)
    app.get("/login", response_class=HTMLResponse)(_login(api_key))
    return app


def _as_html(load: Callable[..., Any], draw: Callable[[Any], str]) -> Callable[..., HTMLResponse]:
    """A route drawing what ``load`` returns; its parameters are ``load``'s."""

    @functools.wraps(load)
    def route(**parameters: Any) -> HTMLResponse:
        return HTMLResponse(draw(load(**parameters)))

    return route


def _as_json(load: Callable[..., Any]) -> Callable[..., JSONResponse]:
    """A route answering with ``load``'s object as JSON."""

    @functools.wraps(load)
    def route(**parameters: Any) -> JSONResponse:
        return JSONResponse(load(**parameters).to_dict())

    return route


class Site:
    """What each page shows, loaded from the ledger (see `thinktank.view.data`), with
    the bench plots and suite sizes kept once computed."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._lock = threading.Lock()
        self._plots: dict[tuple, list[tuple[str, str]]] = {}
        self._suite_sizes: dict[str, int | None] = {}

    def runs(
        self,
        command: str | None = None,
        strategy: str | None = None,
        model: str | None = None,
        client: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page: Page = 1,
    ) -> data.RunsPage:
        filters = data.RunFilters(
            command, strategy, model, client, _date("since", since), _date("until", until), page
        )
        return data.runs_page(self.ledger, filters)

    def run(self, run_id: str) -> data.BenchRun | data.PlainRun:
        found = data.find_run(self.ledger, run_id)
        return data.bench_run(self.ledger, found) or data.plain_run(self.ledger, found)

    def draw_run(self, run: data.BenchRun | data.PlainRun) -> str:
        if isinstance(run, data.PlainRun):
            return pages.plain_run_page(run)
        return pages.bench_run_page(run, self.plots(run))

    def plots(self, bench: data.BenchRun) -> list[tuple[str, str]]:
        """The run's plots as SVG, drawn again only when its results changed."""
        key = (bench.run.run_id, len(bench.results), sum(r.score for r in bench.results))
        with self._lock:
            if key in self._plots:
                return self._plots[key]
        drawn = svg_plots(bench.summaries)
        with self._lock:
            self._plots[key] = drawn
            while len(self._plots) > _PLOTS_KEPT:
                self._plots.pop(next(iter(self._plots)))
        return drawn

    def problem(self, run_id: str, problem_id: str) -> data.ProblemView:
        return data.problem_view(self.ledger, data.find_run(self.ledger, run_id), problem_id)

    def compare(self, run_id: str, a: str | None = None, b: str | None = None) -> data.Comparison:
        bench = self._bench(run_id)
        if a is None or b is None:
            raise ViewError(
                400,
                "name the two configurations to compare as ?a=...&b=...; "
                f"this run's: {', '.join(bench.labels)}",
            )
        return data.compare(bench, a, b)

    def compare_html(self, run_id: str, a: str | None = None, b: str | None = None) -> HTMLResponse:
        """The comparison; without both configurations, a form to choose them."""
        if a is None or b is None:
            return HTMLResponse(pages.compare_chooser(self._bench(run_id)))
        return HTMLResponse(pages.compare_page(self.compare(run_id, a, b)))

    def _bench(self, run_id: str) -> data.BenchRun:
        bench = data.bench_run(self.ledger, data.find_run(self.ledger, run_id))
        if bench is None:
            raise data.NotFound(f"run {run_id!r} is not a bench run: it has nothing to compare")
        return bench

    def live(self, run_id: str) -> data.Progress:
        return data.progress(self.ledger, data.find_run(self.ledger, run_id), self.suite_size)

    def suite_size(self, spec: str) -> int | None:
        """How many problems the suite ``spec`` holds; None when it cannot be loaded here
        (a file gone, a plugin not installed)."""
        if spec not in self._suite_sizes:
            try:
                self._suite_sizes[spec] = len(load_suite(spec).tasks)
            except Exception:  # whatever stops it loading, the page shows no total
                self._suite_sizes[spec] = None
        return self._suite_sizes[spec]

    def calls(self, before: Before = None) -> data.CallsPage:
        return data.calls_page(self.ledger, before)


def _date(name: str, text: str | None) -> datetime.date | None:
    """A ``YYYY-MM-DD`` query value (empty: not given), or a 400 naming ``name``."""
    if not text:
        return None
    try:
        day = datetime.datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise ViewError(400, f"{name}: expected a date as YYYY-MM-DD, got {text!r}") from None
    if not datetime.date(1970, 1, 2) <= day <= datetime.date(9999, 12, 30):
        raise ViewError(400, f"{name}: {text} is out of range")
    return day


def _session_token(api_key: str) -> str:
    """The cookie's value: derived from the key, so the key itself is never stored."""
    return hmac.new(api_key.encode(), b"thinktank view session", hashlib.sha256).hexdigest()


def _authenticator(api_key: str | None) -> Callable[[Request], None]:
    """With ``api_key``, a 401 unless the request sends ``Authorization: Bearer KEY``
    or the session cookie."""

    def authenticate(request: Request) -> None:
        if api_key is None:
            return
        sent = request.headers.get("authorization", "")
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if not (
            secrets.compare_digest(sent.encode(), f"Bearer {api_key}".encode())
            or secrets.compare_digest(cookie.encode(), _session_token(api_key).encode())
        ):
            raise ViewError(401, "missing or wrong API key", code="invalid_api_key")

    return authenticate


def _login(api_key: str | None) -> Callable[..., Response]:
    def login(key: str | None = None) -> Response:
        """Sign a browser in: ``?key=KEY`` sets the session cookie and goes to the runs."""
        if api_key is not None and not secrets.compare_digest(
            (key or "").encode(), api_key.encode()
        ):
            raise ViewError(401, "wrong API key", code="invalid_api_key")
        response = RedirectResponse("/", status_code=303)
        if api_key is not None:
            response.set_cookie(
                SESSION_COOKIE, _session_token(api_key), httponly=True, samesite="strict"
            )
        return response

    return login


def _error(request: Request, status: int, message: str, code: str | None = None) -> Response:
    """An error as a page, or for ``/api`` as an OpenAI-style body."""
    if request.url.path == "/api" or request.url.path.startswith("/api/"):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=status)
    return HTMLResponse(pages.error_page(status, message), status_code=status)


def _handle_errors(app: FastAPI) -> None:
    @app.exception_handler(ViewError)
    async def refused(request: Request, exc: ViewError) -> Response:
        return _error(request, exc.status, str(exc), exc.code)

    @app.exception_handler(data.NotFound)
    async def not_found(request: Request, exc: data.NotFound) -> Response:
        return _error(request, 404, str(exc), "not_found")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "query")
        return _error(request, 400, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        return _error(request, 500, f"internal error: {type(exc).__name__}")
