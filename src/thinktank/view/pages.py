"""The view's HTML: whole pages drawn from `thinktank.view.data`'s objects.

Every text from the ledger goes through `html.escape` (a question may hold
``<script>``); links quote what they carry. Stable ids and classes (``#runs``,
``tr.run``, ``section.config``, ``div.candidate``, ``#reference``, ``#compare``,
``tr.differs``, ``figure.plot``, ``#live``) are what the browser tests look for.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from thinktank.bench.report import cost_of_pass_text, cost_per_problem_text, label
from thinktank.bench.summary import ConfigSummary
from thinktank.ledger import ResultRow
from thinktank.ledger_runs import RunSummary
from thinktank.ledger_texts import LoggedCall
from thinktank.view.data import (
    BenchRun,
    CallsPage,
    Comparison,
    ConfigView,
    PlainRun,
    ProblemView,
    Progress,
    RunsPage,
    config_label,
    is_right,
)
from thinktank.view.transcripts import render_transcript
from thinktank.view.trees import render_tree

#: Seconds between reloads of the live page.
LIVE_REFRESH_SECONDS = 2
#: What a page says where the ledger kept usage only.
NO_TEXTS = (
    "Texts were not kept (a ledger written with --no-log-texts or THINKTANK_LOG_TEXTS=0, "
    "or by an older thinktank): usage only."
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 80em; padding: 0 1em;
       color: #222; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
pre { white-space: pre-wrap; word-break: break-word; background: #f8f8f8; padding: 0.5em;
      margin: 0.3em 0; }
.right { color: #1a7f37; } .wrong { color: #b42318; } .muted { color: #777; }
section.config { border: 1px solid #bbb; border-radius: 6px; padding: 0.5em 1em; margin: 1em 0; }
div.candidate { border-left: 4px solid #8ab; padding-left: 0.7em; margin: 0.7em 0; }
div.candidate.committed { border-left-color: #1a7f37; }
#reference { border: 2px dashed #b58900; background: #fffbea; padding: 0.5em 1em; }
figure.plot { display: inline-block; margin: 0.5em; max-width: 48%; }
figure.plot svg { width: 100%; height: auto; }
details.call { border: 1px solid #ddd; margin: 0.3em 0; padding: 0.2em 0.5em; }
form.filters input { width: 9em; }
div.scroll { overflow-x: auto; }
"""


def e(value: Any) -> str:
    """``value`` as HTML text (None as nothing)."""
    return "" if value is None else html.escape(str(value))


def _link(href: str, text: Any) -> str:
    return f'<a href="{e(href)}">{e(text)}</a>'


def run_url(run_id: str) -> str:
    return f"/runs/{quote(run_id, safe='')}"


def problem_url(run_id: str, problem_id: str) -> str:
    return f"{run_url(run_id)}/problems/{quote(problem_id, safe='')}"


def compare_url(run_id: str, a: str, b: str) -> str:
    return f"{run_url(run_id)}/compare?{urlencode({'a': a, 'b': b})}"


def layout(title: str, body: str, *, refresh_seconds: int | None = None) -> str:
    """A whole page; ``refresh_seconds``: the browser reloads it that often."""
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"{refresh}<title>{e(title)} - thinktank view</title><style>{_STYLE}</style></head>"
        f"<body><nav>{_link('/', 'runs')}{_link('/calls', 'calls')}</nav>"
        f"<h1>{e(title)}</h1>{body}</body></html>"
    )


def _table(
    headers: Sequence[str], rows: Iterable[tuple[str, Sequence[str]]], *, table_id: str = ""
) -> str:
    """A table; each row is its class and its cells, already HTML."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        f'<tr class="{e(cls)}">' + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
        for cls, cells in rows
    )
    ident = f' id="{e(table_id)}"' if table_id else ""
    table = f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'  # a wide table scrolls, not the page


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix))


def _money(usd: float | None) -> str:
    return "unknown" if usd is None else f"{usd:.3g}"


def _score(score: float | None) -> str:
    """A grader's score: right (full credit) or wrong, and the number."""
    if score is None:
        return '<span class="muted">unknown</span>'
    verdict, cls = ("right", "right") if score >= 1 else ("wrong", "wrong")
    return f'<span class="{cls}">{verdict} ({score:g})</span>'


def _facts(pairs: Iterable[tuple[str, Any]]) -> str:
    """``name: value`` pairs on one line, the values escaped."""
    return " · ".join(f"{e(name)}: <b>{e(value)}</b>" for name, value in pairs)


# The runs list.


def runs_page(page: RunsPage) -> str:
    filters = page.filters
    inputs = "".join(
        f'<label>{name} <input name="{name}" type="{kind}" '
        f'value="{e(getattr(filters, name) or "")}"></label> '
        for name, kind in (
            ("command", "text"),
            ("strategy", "text"),
            ("model", "text"),
            ("client", "text"),
            ("since", "date"),
            ("until", "date"),
        )
    )
    form = f'<form class="filters" method="get" action="/">{inputs}<button>filter</button></form>'
    rows = [("run", [_link(run_url(r.run_id), r.run_id), *_run_cells(r)]) for r in page.runs]
    headers = [
        "run",
        "started",
        "command",
        "strategy",
        "model",
        "client",
        "question",
        "answer",
        "calls",
        "tokens",
        "cost $",
        "model-seconds",
    ]
    table = _table(headers, rows, table_id="runs")
    if not page.runs:
        table += "<p>No runs match.</p>"
    pager = []
    if filters.page > 1:
        pager.append(_link("/?" + urlencode(filters.query(page=filters.page - 1)), "newer"))
    if page.has_next:
        pager.append(_link("/?" + urlencode(filters.query(page=filters.page + 1)), "older"))
    return layout("Runs", form + table + f'<p class="pager">{" ".join(pager)}</p>')


def _run_cells(run: RunSummary) -> list[str]:
    question = run.question or ""
    short = question if len(question) <= 80 else question[:79] + "…"
    answer = e(run.answer) if run.finished else '<span class="muted">unfinished</span>'
    return [
        e(_when(run.started_at)),
        e(run.command),
        e(run.strategy),
        e(run.model),
        e(run.client),
        e(short),
        answer,
        e(run.calls),
        e(run.prompt_tokens + run.completion_tokens),
        e(_money(run.cost_usd)),
        e(f"{run.seconds:.1f}"),
    ]


def _run_facts(run: RunSummary) -> str:
    status = "finished" if run.finished else "in progress (or interrupted)"
    return (
        "<p>"
        + _facts(
            [
                ("command", run.command),
                ("started", _when(run.started_at)),
                ("status", status),
                ("calls", run.calls),
                ("tokens", run.prompt_tokens + run.completion_tokens),
                ("cost $", _money(run.cost_usd)),
                ("model-seconds", f"{run.seconds:.1f}"),
                *([("client", run.client)] if run.client else []),
            ]
        )
        + "</p>"
    )


# A bench run's summary.


def bench_run_page(bench: BenchRun, plots: Sequence[tuple[str, str]]) -> str:
    """The report's numbers: configurations, plots, and every problem's outcome.
    ``plots``: (name, inline SVG) pairs."""
    run, config = bench.run, bench.config
    live = "" if run.finished else f" · {_link(run_url(run.run_id) + '/live', 'follow it live')}"
    parts = [
        _run_facts(run),
        "<p>"
        + _facts(
            [
                ("suite", config.get("suite")),
                ("seed", config.get("seed")),
                ("budget per problem", config.get("budget") or "none"),
            ]
        )
        + live
        + "</p>",
        "<h2>Configurations</h2>",
        _configs_table(bench.summaries),
        _unpriced_note(bench.summaries),
        _compare_form(bench),
        "<h2>Plots</h2>",
        "".join(
            f'<figure class="plot" id="plot-{e(name)}">{svg}<figcaption>{e(name)}</figcaption>'
            "</figure>"
            for name, svg in plots
        )
        or "<p>No results yet.</p>",
        "<h2>Problems</h2>",
        _problems_table(bench),
    ]
    return layout(f"bench run {run.run_id}", "".join(parts))


def _configs_table(summaries: Sequence[ConfigSummary]) -> str:
    headers = [
        "strategy @ model",
        "problems",
        "accuracy",
        "95% CI",
        "tokens/problem",
        "$/problem",
        "cost-of-pass $",
        "model-seconds",
        "pass@k (upper bound)",
        "majority@k",
        "pass@k output",
        "front",
    ]
    rows = []
    for s in summaries:
        k = s.samples
        flags = [
            name
            for name, on in (
                ("cost-of-pass frontier", s.on_frontier),
                ("Pareto", s.on_pareto_front),
            )
            if on
        ]
        rows.append(
            (
                "summary",
                [
                    e(label(s)),
                    e(s.n_problems),
                    e(f"{s.accuracy:.2f}"),
                    e(f"{s.ci95[0]:.2f}-{s.ci95[1]:.2f}"),
                    e(f"{s.tokens_per_problem:.0f}"),
                    e(cost_per_problem_text(s)),
                    e(cost_of_pass_text(s, "∞ (nothing solved)")),
                    e(f"{s.model_seconds:.1f}"),
                    e(f"{s.pass_at_k[-1]:.2f} (k={k})" if s.pass_at_k else "-"),
                    e(f"{s.majority_at_k[-1]:.2f} (k={k})" if s.majority_at_k else "-"),
                    e(
                        "-"
                        if s.pass_at_k_output is None
                        else f"{s.pass_at_k_output:.2f} (any of {s.answers_given})"
                    ),
                    e(", ".join(flags)),
                ],
            )
        )
    notes = (
        '<p class="muted">accuracy: share of problems whose committed answer is right. '
        "pass@k and majority@k read the ground truth of every sample: pass@k bounds what a "
        "perfect selector could reach and is not any strategy's accuracy.</p>"
    )
    return _table(headers, rows, table_id="configs") + notes


def _unpriced_note(summaries: Sequence[ConfigSummary]) -> str:
    models = sorted({m for s in summaries for m in s.unpriced_models})
    if not models:
        return ""
    return (
        f"<p><b>unpriced</b>: {e(', '.join(models))} has no price in the price book: "
        "its cost and cost-of-pass are unknown (not $0).</p>"
    )


def _compare_form(bench: BenchRun) -> str:
    labels = bench.labels
    if len(labels) < 2:
        return ""

    def select(name: str, chosen: str) -> str:
        options = "".join(
            f'<option value="{e(x)}"{" selected" if x == chosen else ""}>{e(x)}</option>'
            for x in labels
        )
        return f'<select name="{name}" id="compare-{name}">{options}</select>'

    return (
        f'<h2>Compare two configurations</h2><form id="compare-form" method="get" '
        f'action="{e(run_url(bench.run.run_id))}/compare">{select("a", labels[0])} against '
        f"{select('b', labels[1])} <button>compare</button></form>"
    )


def _problems_table(bench: BenchRun) -> str:
    table = bench.by_label()
    run_id = bench.run.run_id
    rows = []
    for pid in bench.problem_ids:
        cells = [_link(problem_url(run_id, pid), pid)]
        for name in bench.labels:
            row = table[name].get(pid)
            cells.append('<span class="muted">-</span>' if row is None else _outcome(row))
        rows.append(("problem", cells))
    return _table(["problem", *bench.labels], rows, table_id="problems")


def _outcome(row: ResultRow) -> str:
    verdict, cls = ("✓", "right") if is_right(row) else ("✗", "wrong")
    return f'<span class="{cls}">{verdict}</span> {e(row.answer)}'


# A solve's or a server request's run.


def plain_run_page(plain: PlainRun) -> str:
    run = plain.run
    parts = [_run_facts(run)]
    if run.question is not None:
        parts.append(f"<h2>Question</h2><pre>{e(run.question)}</pre>")
    if not plain.transcripts:
        parts.append(f'<p class="no-texts">{e(NO_TEXTS)}</p>')
    for stored in plain.transcripts:
        config = ConfigView(config_label(stored.strategy, stored.model), None, stored.solution)
        problem = _link(problem_url(run.run_id, stored.problem_id), stored.problem_id)
        parts.append(f"<p>problem {problem}</p>{config_section(config)}")
    parts.append(_calls_section(plain.calls, "Calls"))
    return layout(f"{run.command} run {run.run_id}", "".join(parts))


# One problem.


def problem_page(view: ProblemView) -> str:
    run_id = view.run.run_id
    question = NO_TEXTS if view.question is None else view.question
    parts = [
        f"<p>run {_link(run_url(run_id), run_id)}</p>",
        f'<section id="question"><h2>Question</h2><pre>{e(question)}</pre></section>',
    ]
    if view.is_bench:
        reference = NO_TEXTS if view.reference is None else view.reference
        parts.append(
            '<div id="reference"><h2>Reference: the evaluator\'s</h2><p class="muted">The '
            "ground truth the grader scored answers against; no strategy saw it.</p>"
            f"<pre>{e(reference)}</pre></div>"
        )
    parts += [config_section(config) for config in view.configs]
    parts.append(_calls_section(view.calls, "Calls for this problem"))
    return layout(f"problem {view.problem_id}", "".join(parts))


def config_section(config: ConfigView) -> str:
    """One configuration's work on a problem: its result, votes, candidates, and its
    search tree or collaboration transcript where it has one."""
    parts = [f"<h2>{e(config.label)}</h2>"]
    if config.result is not None:
        parts.append(_result_facts(config.result))
    solution = config.solution
    if solution is None:
        parts.append(f'<p class="no-texts">{e(NO_TEXTS)}</p>')
        if config.result is not None:
            parts.append(_samples_table(config.result))
        return f'<section class="config">{"".join(parts)}</section>'
    if config.result is None:
        parts.append(f"<p>{_facts([('answer', solution.get('answer'))])}</p>")
    if votes := solution.get("votes"):
        rows = [("vote", [e(answer), e(f"{count:g}")]) for answer, count in votes.items()]
        parts.append("<h3>Votes</h3>" + _table(["answer", "votes"], rows))
    candidates = config.candidates
    parts.append(f"<h3>Candidates ({len(candidates)})</h3>")
    committed = solution.get("answer")
    parts += [_candidate(i, c, committed) for i, c in enumerate(candidates)]
    parts += [
        _drawing("Search tree", render_tree, solution.get("trace") or []),
        _drawing("Transcript", render_transcript, solution),
    ]
    return f'<section class="config">{"".join(parts)}</section>'


def _result_facts(result: ResultRow) -> str:
    facts = _facts(
        [
            ("committed answer", result.answer),
            (
                "tokens",
                f"{result.prompt_tokens} prompt ({result.cached_tokens} cached) + "
                f"{result.completion_tokens} completion",
            ),
            ("cost $", _money(result.cost_usd)),
            ("model-seconds", f"{result.seconds:.2f}"),
            *([("budget", "exhausted")] if result.budget_exhausted else []),
        ]
    )
    extra = ""
    if result.answer_scores:  # a pass@k output: each guess's score, the committed first
        extra = " · every answer's score: " + ", ".join(_score(s) for s in result.answer_scores)
    return f'<p class="result">score: {_score(result.score)} · {facts}{extra}</p>'


def _samples_table(result: ResultRow) -> str:
    """A result's samples as the row keeps them (answers and scores, no texts)."""
    rows = [
        ("sample", [e(i), e(key), _score(score)])
        for i, (key, score) in enumerate(
            zip(result.sample_keys, result.sample_scores, strict=False)
        )
    ]
    return _table(["sample", "answer", "grader"], rows) if rows else ""


def _candidate(index: int, candidate: dict[str, Any], committed: str | None) -> str:
    facts = _facts(
        [
            ("answer", candidate.get("answer")),
            ("finish", candidate.get("finish_reason")),
            ("tokens", candidate.get("completion_tokens")),
            *([("worker", candidate["worker"])] if candidate.get("worker") else []),
            *(
                [("verifier score", f"{candidate['score']:.3g}")]
                if candidate.get("score") is not None
                else []
            ),
        ]
    )
    text = candidate.get("text")
    body = f"<pre>{e(text)}</pre>" if text is not None else f"<p>{e(NO_TEXTS)}</p>"
    chosen = " committed" if committed is not None and candidate.get("answer") == committed else ""
    return (
        f'<div class="candidate{chosen}"><p>#{index} · {facts} · grader: '
        f"{_score(candidate.get('grader_score'))}</p>{body}</div>"
    )


def _drawing(heading: str, render: Callable[[Any], str | None], source: Any) -> str:
    """What a drawing (a search tree, a transcript in columns) makes of ``source``
    under ``heading``; nothing when it has none to draw."""
    drawn = render(source)
    return f"<h3>{e(heading)}</h3>{drawn}" if drawn else ""


# Calls.


def _calls_section(calls: Sequence[LoggedCall], heading: str) -> str:
    if not calls:
        return f'<section id="calls"><h2>{e(heading)}</h2><p>No calls.</p></section>'
    items = "".join(call_details(call) for call in calls)
    return (
        f'<section id="calls"><h2>{e(heading)}</h2><p class="muted">newest first</p>'
        f"{items}</section>"
    )


def call_details(call: LoggedCall) -> str:
    """One call, collapsed: what it was in the summary, its prompt and completions inside."""
    where = (
        f"{_link(run_url(call.run_id), call.run_id)} / "
        f"{_link(problem_url(call.run_id, call.problem_id), call.problem_id)}"
    )
    summary = (
        f"call {e(call.id)} · {e(_when(call.created_at))} · {where} · "
        f"{e(call.strategy)} @ {e(call.model)} · {e(call.stage)} · n={e(call.n)} · "
        f"{e(call.prompt_tokens)}+{e(call.completion_tokens)} tokens · "
        f"${e(_money(call.cost_usd))} · {e(f'{call.seconds:.2f}')} s"
    )
    if call.prompt is None:
        inside = f'<p class="no-texts">{e(NO_TEXTS)}</p>'
    else:
        completions = "".join(
            f"<h4>completion {c.index} · "
            f"{_facts([('finish', c.finish_reason), ('tokens', c.completion_tokens)])}"
            f"{' · worker ' + e(c.worker) if c.worker else ''}</h4><pre>{e(c.text)}</pre>"
            for c in call.completions
        )
        inside = f"<h4>prompt</h4>{_prompt(call.prompt)}{completions}"
    return f'<details class="call"><summary>{summary}</summary>{inside}</details>'


def _prompt(prompt: str | list[dict[str, Any]]) -> str:
    """A prompt as sent: a text, or chat messages role by role."""
    if isinstance(prompt, str):
        return f"<pre>{e(prompt)}</pre>"
    return "".join(
        f'<div class="message"><b>{e(message.get("role"))}</b><pre>'
        f"{e(_content(message.get('content')))}</pre></div>"
        for message in prompt
    )


def _content(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)


def calls_page(page: CallsPage) -> str:
    older = ""
    if page.next_before is not None:
        older = f'<p class="pager">{_link(f"/calls?before={page.next_before}", "older")}</p>'
    return layout("Latest calls", _calls_section(page.calls, "Calls") + older)


# Compare, live, errors.


def compare_page(comparison: Comparison) -> str:
    c, run_id = comparison, comparison.run.run_id
    counts = _table(
        ["both right", "only A right", "only B right", "neither", "problems both solved"],
        [
            (
                "counts",
                [
                    e(c.both_right),
                    e(c.only_a),
                    e(c.only_b),
                    e(c.neither),
                    e(c.both_right + c.only_a + c.only_b + c.neither),
                ],
            )
        ],
        table_id="counts",
    )
    rows = [
        ("differs", [_link(problem_url(run_id, pid), pid), _outcome(ra), _outcome(rb)])
        for pid, ra, rb in c.differs
    ]
    table = _table(["problem", f"A: {c.a}", f"B: {c.b}"], rows, table_id="compare")
    body = (
        f"<p>run {_link(run_url(run_id), run_id)}</p><p>A: <b>{e(c.a)}</b><br>B: <b>{e(c.b)}</b>"
        f"</p>{counts}<h2>Where they differ ({len(rows)})</h2>{table}"
    )
    return layout("Compare", body)


def compare_chooser(bench: BenchRun) -> str:
    """The compare page asked without both configurations: a form to pick them."""
    form = _compare_form(bench) or "<p>This run has fewer than two configurations.</p>"
    return layout(
        "Compare", f"<p>run {_link(run_url(bench.run.run_id), bench.run.run_id)}</p>{form}"
    )


def live_page(progress: Progress) -> str:
    run_id = progress.run.run_id
    if progress.total is None:
        count = f"{progress.done} results so far (total unknown)"
        bar = ""
    else:
        count = f"{progress.done} of {progress.total} results"
        bar = f'<progress value="{progress.done}" max="{max(progress.total, 1)}"></progress>'
    status = (
        "finished" if progress.finished else f"running: refreshed every {LIVE_REFRESH_SECONDS} s"
    )
    rows = [
        (
            "result",
            [
                e(config_label(r.strategy, r.model)),
                _link(problem_url(run_id, r.problem_id), r.problem_id),
                _outcome(r),
            ],
        )
        for r in progress.latest
    ]
    body = (
        f'<div id="live" data-finished="{str(progress.finished).lower()}">'
        f"<p>run {_link(run_url(run_id), run_id)} · <b>{e(count)}</b> {bar} · {e(status)}</p>"
        f"<h2>Latest results</h2>{_table(['configuration', 'problem', 'outcome'], rows)}</div>"
    )
    refresh = None if progress.finished else LIVE_REFRESH_SECONDS
    return layout(f"live: {run_id}", body, refresh_seconds=refresh)


def error_page(status: int, message: str) -> str:
    hint = ""
    if status == 401:
        hint = "<p>Open <code>/login?key=KEY</code> with the view's API key to sign in.</p>"
    return layout(f"{status}", f'<p class="error">{e(message)}</p>{hint}')
