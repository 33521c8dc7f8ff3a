"""Pull the final answer out of a completion and compare answers, per problem kind.

``math`` uses math-verify (boxed, LaTeX, "The answer is 6.", "= 6", fractions,
negatives), falling back to the last number in the text. ``text`` and
``choice`` compare normalized strings. ``code`` extracts a Python code block;
whether code is *correct* is decided by running tests (`thinktank.verify.sandbox`).
"""

from __future__ import annotations

import logging
import re
import string
import threading
from functools import lru_cache

import sympy
from math_verify import parse, verify

from thinktank.problem import Kind

# math-verify's timeouts use SIGALRM, which only works on the main thread: other
# threads (the server's, thread pools) parse without one, so its warning is muted.
logging.getLogger("math_verify").setLevel(logging.ERROR)
_TIMEOUT_SECONDS = 5


def _timeout() -> int | None:
    return _TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


_ANSWER_CUE = re.compile(
    r"\banswer\b(?:\s+to\s+[^.:\n]{0,80}?)?\s*(?:is|was|:|=)\s*:?\s*(?P<rest>[^\n]*)",
    re.IGNORECASE,
)
# The end of the answer's clause: a period not inside a number, ", ", or a line break.
_CLAUSE_END = re.compile(r"\.(?!\d)|,\s|\n")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
_CHOICE = re.compile(r"\(?\b([A-J])\b\)?")
_FENCE_LANGUAGE = re.compile(r"^(?:python3?|py)?[ \t]*\n")
_DEFINITION = re.compile(r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+\w+", re.MULTILINE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def extract_answer(text: str, kind: Kind) -> str | None:
    """The final answer stated in ``text``, or None if it states none."""
    if kind == "math":
        return _extract_math(text)
    if kind == "choice":
        return _extract_choice(text)
    if kind == "code":
        return _extract_code(text)
    return _extract_text(text)


def declared_answer(text: str, kind: Kind) -> str | None:
    """The answer ``text`` declares outright ("The answer is 12." with its clause
    ended), or None: how a reasoner that is still writing says it is done."""
    if kind == "code":
        return None
    for cue in reversed(list(_ANSWER_CUE.finditer(text))):
        rest = text[cue.start("rest") :]
        end = _CLAUSE_END.search(rest)
        if end and rest[: end.start()].strip():
            return extract_answer(text[: cue.start("rest") + end.end()], kind)
    return None


def answer_key(answer: str, kind: Kind) -> str:
    """A canonical form: answers with the same key are counted as the same vote."""
    if kind == "math":
        return _math_key(answer)
    if kind == "code":
        return "\n".join(line.rstrip() for line in answer.splitlines() if line.strip())
    return _normalize_text(answer)


def equivalent(answer: str, reference: str, kind: Kind) -> bool:
    """Whether ``answer`` means the same as ``reference``."""
    if kind == "math":
        gold, target = _parse_math(reference), _parse_math(answer)
        if gold and target:
            return bool(
                verify(list(gold), list(target), timeout_seconds=_timeout(), raise_on_error=False)
            )
        return _math_key(answer) == _math_key(reference)
    return answer_key(answer, kind) == answer_key(reference, kind)


@lru_cache(maxsize=4096)
def _parse_math(text: str) -> tuple:
    return tuple(parse(text, parsing_timeout=_timeout(), raise_on_error=False))


def _extract_math(text: str) -> str | None:
    # The last explicit "the answer is ..." wins over numbers elsewhere in the text;
    # in "the answer is 6 + 3 = 9" the answer is what follows the last "=".
    cues = list(_ANSWER_CUE.finditer(text))
    if cues and "\\boxed" not in text:
        stated = _CLAUSE_END.split(cues[-1].group("rest"))[0].rsplit("=", 1)[-1]
        answer = _math_answer(_parse_math(stated))
        if answer is not None:
            return answer
    parsed = _parse_math(text)
    if parsed:
        return _math_answer(parsed)
    # math-verify found nothing at all: the last number is the best remaining guess.
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def _math_answer(parsed: tuple) -> str | None:
    if len(parsed) < 2 or not isinstance(parsed[1], str) or not parsed[1].strip():
        return None
    if _is_unevaluated_arithmetic(parsed[0]):
        return None  # "8 + 0" restates the question; it answers nothing
    return parsed[1].strip()


def _is_unevaluated_arithmetic(expr: object) -> bool:
    """``7 + 5`` left as a sum of plain numbers (``\\sqrt{2}`` or ``2\\pi`` are answers)."""
    return isinstance(expr, sympy.Add | sympy.Mul) and all(
        isinstance(arg, sympy.Number) for arg in expr.args
    )


@lru_cache(maxsize=4096)
def _math_key(answer: str) -> str:
    parsed = _parse_math(answer)
    if not parsed:
        return _normalize_text(answer)
    expr = parsed[0]
    if isinstance(expr, sympy.Number):
        # 0.5, 1/2 and 2/4 are one vote; floats are rounded like math-verify does.
        return str(sympy.nsimplify(round(float(expr), 6), rational=True))
    return str(expr)


def _extract_choice(text: str) -> str | None:
    cues = list(_ANSWER_CUE.finditer(text))
    if cues:
        letters = _CHOICE.findall(cues[-1].group("rest"))
        if letters:
            return letters[0]
    letters = _CHOICE.findall(text)
    return letters[-1] if letters else None


def _extract_text(text: str) -> str | None:
    cues = list(_ANSWER_CUE.finditer(text))
    if cues:
        answer = _CLAUSE_END.split(cues[-1].group("rest"))[0]
    else:
        lines = [line for line in text.strip().splitlines() if line.strip()]
        answer = lines[-1] if lines else ""
    answer = answer.strip().strip(string.punctuation + " ")
    return answer or None


def _extract_code(text: str) -> str | None:
    """The last piece of the text that defines a function or class.

    Pieces are what the code fences separate, so an unterminated block (the
    sample hit max_tokens) and a block that only has its closing fence still
    yield their code. With no definition anywhere (a base model continuing a
    function's body) the first fenced block, else the whole text, is the code.
    """
    pieces = [_FENCE_LANGUAGE.sub("", piece, count=1) for piece in text.split("```")]
    defining = [piece for piece in pieces if _DEFINITION.search(piece)]
    if defining:
        return defining[-1]
    code = pieces[1] if len(pieces) > 1 else text
    return code if code.strip() else None


def _normalize_text(answer: str) -> str:
    lowered = answer.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", lowered).split())
