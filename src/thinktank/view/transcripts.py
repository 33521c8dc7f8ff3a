"""Hogwild! and debate transcripts as interleaved columns, one per worker or agent.

A transcript is a grid: a column per worker or agent, a row per debate round (so a
round's answers line up) or per Hogwild! step in the order the steps were written
(so reading down shows who wrote what while the others wrote). Inline styles lay it
out (no stylesheet needed); each column is a ``<div class="column">`` whose turns
are ``<div class="turn">`` blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any


@dataclass(frozen=True)
class Turn:
    """One block of the grid: who wrote it, on which row, what it says about itself."""

    who: str
    row: int
    meta: str
    text: str


def render_transcript(solution: dict[str, Any]) -> str | None:
    """HTML ``<div class="transcript">`` with one ``<div class="column">`` per worker or
    agent, their turns interleaved in the order they were written; None when the
    solution (a stored `Solution.to_dict()`) is not a collaboration."""
    trace = [e for e in solution.get("trace") or [] if isinstance(e, dict)]
    candidates = [c for c in solution.get("candidates") or [] if isinstance(c, dict)]
    rounds = [e for e in trace if "round" in e and isinstance(e.get("answers"), list)]
    if rounds:
        return _grid(*debate_turns(rounds, candidates))
    session = next((e for e in trace if "layout" in e and "declared" in e), None)
    if session is not None:
        return _grid(*hogwild_turns(session, candidates))
    return None


def debate_turns(
    rounds: list[dict[str, Any]], candidates: list[dict[str, Any]]
) -> tuple[list[str], list[Turn], list[Turn]]:
    """The agents, and each one's answer in every round (one row a round): a debate's
    candidates are every round's answers in turn, the round's trace entry lists them."""
    turns: list[Turn] = []
    said: dict[str, str] = {}
    start = 0
    for row, entry in enumerate(rounds):
        answers = entry["answers"]
        these = candidates[start : start + len(answers)]
        start += len(answers)
        agents = entry.get("agents") or [c.get("worker") for c in these]
        confidences = entry.get("confidences") or [None] * len(these)
        for i, candidate in enumerate(these):
            who = str(agents[i] if i < len(agents) and agents[i] else f"agent-{i + 1}")
            text = str(candidate.get("text") or "")
            meta = [f"round {entry.get('round', row + 1)}", _answer(candidate)]
            if i < len(confidences) and isinstance(confidences[i], int | float):
                meta.append(f"confidence {confidences[i]:.2f}")
            if said.get(who) == text:
                meta.append("unchanged")  # the budget stopped it: it kept its answer
            said[who] = text
            turns.append(Turn(who, row, " · ".join(meta), text))
    return _columns(turns), turns, []


def hogwild_turns(
    session: dict[str, Any], candidates: list[dict[str, Any]]
) -> tuple[list[str], list[Turn], list[Turn]]:
    """The workers, and their steps in the order they were written (the trace's
    ``steps``, one row each); without them each worker's whole text on one row. The
    final-answer step, when there was one, comes after them, across the columns."""
    declared = session.get("declared") or {}
    tokens = session.get("tokens") or {}
    workers = [c for c in candidates if c.get("worker") in tokens] or [
        c for c in candidates if c.get("worker") != "final"
    ]
    steps = [s for s in session.get("steps") or [] if isinstance(s, dict)]
    if steps:
        counts: dict[str, int] = {}
        turns = []
        for row, step in enumerate(steps):
            who = str(step.get("worker"))
            counts[who] = counts.get(who, 0) + 1
            turns.append(Turn(who, row, f"step {counts[who]}", str(step.get("text") or "")))
    else:
        turns = [
            Turn(str(c.get("worker")), 0, f"{c.get('completion_tokens', 0)} tokens",
                 str(c.get("text") or ""))
            for c in workers
        ]  # fmt: skip
    for who, answer in declared.items():
        last = max((i for i, t in enumerate(turns) if t.who == who), default=None)
        if last is not None:
            turn = turns[last]
            turns[last] = Turn(who, turn.row, f"{turn.meta} · declared {answer}", turn.text)
    after = len({t.row for t in turns})
    final = [
        Turn("final", after, f"final answer step · {_answer(c)}", str(c.get("text") or ""))
        for c in candidates
        if c.get("worker") == "final"
    ]
    columns = [str(c.get("worker")) for c in workers]
    return columns + [w for w in _columns(turns) if w not in columns], turns, final


def _answer(candidate: dict[str, Any]) -> str:
    answer = candidate.get("answer")
    return "no answer" if answer is None else f"answer {answer}"


def _columns(turns: list[Turn]) -> list[str]:
    """Who wrote the turns, in the order they first wrote."""
    return list(dict.fromkeys(t.who for t in turns))


def _grid(columns: list[str], turns: list[Turn], spanning: list[Turn]) -> str:
    """The grid: row 1 names the columns; a turn's row is its ``row`` + 2; the
    ``spanning`` turns go across every column."""
    if not columns:
        return '<div class="transcript"><p class="empty">no turns were written</p></div>'
    parts = [
        '<div class="transcript" style="display:grid;'
        f'grid-template-columns:repeat({len(columns)},minmax(0,1fr));gap:6px 12px">'
    ]
    for number, who in enumerate(columns, start=1):
        parts.append(f'<div class="column" data-who="{escape(who)}" style="display:contents">')
        parts.append(
            f'<div class="who" style="grid-column:{number};grid-row:1;font-weight:bold">'
            f"{escape(who)}</div>"
        )
        parts += [_turn(t, f"{number}") for t in turns if t.who == who]
        parts.append("</div>")
    parts += [_turn(t, "1 / -1") for t in spanning]
    parts.append("</div>")
    return "".join(parts)


def _turn(turn: Turn, column: str) -> str:
    return (
        f'<div class="turn" style="grid-column:{column};grid-row:{turn.row + 2};'
        'border:1px solid #ced4da;border-radius:4px;padding:4px 6px">'
        f'<div class="meta" style="color:#6c757d;font-size:smaller">{escape(turn.meta)}</div>'
        f'<div class="text" style="white-space:pre-wrap">{escape(turn.text.rstrip())}</div></div>'
    )
