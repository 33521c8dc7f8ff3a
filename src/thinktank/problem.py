"""What a strategy may see (`Problem`) and what only the evaluator holds (`Task`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["math", "text", "choice", "code"]
KINDS: tuple[Kind, ...] = ("math", "text", "choice", "code")

# Lettered options: "(A) ... (B) ..." anywhere, or "A) ..."/"A. ..."/"A: ..." lines.
_OPTIONS = re.compile(r"\(A\).*?\(B\)|^[ \t]*A[).:][ \t]+\S.*\n[ \t]*B[).:][ \t]+\S", re.S | re.M)
_FUNCTION_STUB = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+\w+[ \t]*\(", re.M)
_YES_NO_QUESTION = re.compile(r"\byes\s+or\s+no\b", re.I)
_NUMERIC = re.compile(
    r"\d|\\frac|\\sqrt|\bhow\s+(?:many|much)\b|\b(?:calculate|compute|evaluate|simplify|solve)\b",
    re.I,
)


def infer_kind(question: str) -> Kind:
    """The kind a question asks for, when nobody said: lettered options -> ``choice``,
    a Python function stub -> ``code``, numbers or arithmetic -> ``math`` (unless it
    asks for yes or no), otherwise ``text``."""
    if _OPTIONS.search(question):
        return "choice"
    if _FUNCTION_STUB.search(question):
        return "code"
    if _NUMERIC.search(question) and not _YES_NO_QUESTION.search(question):
        return "math"
    return "text"


@dataclass(frozen=True)
class Problem:
    """A question as a strategy sees it: no reference answer, ever.

    ``kind`` selects answer extraction and equivalence (see `thinktank.verify`).
    ``public_tests`` are tests a user would really have (e.g. a docstring's examples).
    """

    id: str
    prompt: str
    kind: Kind = "math"
    public_tests: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ValueError("the problem's prompt is empty")
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}; expected one of {KINDS}")


@dataclass(frozen=True)
class Task:
    """A problem plus its ground truth. Only the evaluator holds a Task."""

    problem: Problem
    reference: str
    scorer: Callable[[str | None, str], float] | None = field(default=None, compare=False)

    def score(self, answer: str | None) -> float:
        """1.0 for a correct answer, 0.0 for a wrong one (partial credit if the scorer says so)."""
        if self.scorer is not None:
            return self.scorer(answer, self.reference)
        from thinktank.verify import equivalent

        return float(answer is not None and equivalent(answer, self.reference, self.problem.kind))
