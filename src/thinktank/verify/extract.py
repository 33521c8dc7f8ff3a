"""Pull the final answer out of a completion and compare answers, per problem kind.

An answer is what a text *states as final*, or None when it states none: a fragment of
a restated question ("13 + 29"), alternatives ("41 or 42"), a list of many numbers or
of every option is no answer, so it can neither split a vote nor fool a grader.

- ``math``: the last ``\\boxed{}``; else the last "the answer is X" (in "the answer
  is 6 + 3 = 9", the 9); else the last value the text equates something to ("= 42",
  "which equals 42", "is 42", "we get 42") or a line that is only a value. Values
  compare as numbers (LaTeX through math-verify); a list or unevaluated arithmetic
  equals no single number.
- ``text``: "the answer is X", else the last line; a copular sentence ("The capital
  of France is Paris") is reduced to its complement. A negated or hedged answer
  ("not Paris", "Paris or Lyon") keeps its words, so it never equals "Paris".
- ``choice``: one option letter: "(B)", "B)", "option B", "the answer is B", a line
  that is a letter; never the article in "A carrot is..." or the pronoun "I". A
  statement naming several letters names none.
- ``code``: the last Python code that defines a function; whether it is *correct* is
  decided by running tests (`thinktank.verify.sandbox`).
"""

from __future__ import annotations

import logging
import re
import string
import threading
from collections.abc import Iterable
from functools import lru_cache
from typing import Literal

import sympy
from math_verify import parse, verify

#: What a problem asks for, which decides how its answer is extracted and compared
#: (above); `thinktank.problem.Problem` holds one.
Kind = Literal["math", "text", "choice", "code"]
KINDS: tuple[Kind, ...] = ("math", "text", "choice", "code")

# math-verify's timeouts use SIGALRM, which only works on the main thread: other
# threads (the server's, thread pools) parse without one, so its warning is muted.
logging.getLogger("math_verify").setLevel(logging.ERROR)
_TIMEOUT_SECONDS = 5


def _timeout() -> int | None:
    return _TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


# The end of the answer's clause: a period not inside a number, ", ", or a line break.
_CLAUSE_END = re.compile(r"\.(?!\d)|,\s|\n")
_FENCE_LANGUAGE = re.compile(r"^(?:python3?|py)?[ \t]*\n")
_DEFINITION = re.compile(r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+\w+", re.MULTILINE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

# Emphasis, code ticks and math delimiters: "**42**", "`42`", "$42$", "\(42\)" are 42.
_MARKUP = re.compile(r"\*\*|__|`|\$|\\[()\[\]]")
_SYMBOLS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u00d7": "*", "\u00f7": "/"})
_NUMBER = r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?"
_LATEX_VALUE = r"-?\d*\\(?:d?frac\{[^{}]*\}\{[^{}]*\}|sqrt\{[^{}]*\})"
# A value ends where a word would go on ("3rd", "2x" are no values).
_VALUE = re.compile(rf"(?:{_LATEX_VALUE}|{_NUMBER})(?![\w\\]|[.,]\d)")
# What shows a value is no result: arithmetic going on ("42 + 29", "42 +" where the
# text ends), a question ("is 42?") or alternatives ("41 or 42", "1, 2, 3").
_CONTINUED = re.compile(r"\s*(?:[-+*/^]\s*(?:[\d(.\\]|$)|\?)")
_ALTERNATIVES = re.compile(rf"\s*(?:,|\bor\b|\band\b)\s*(?P<other>{_NUMBER})(?!\s*[-+*/^=\d])")
# "is simply 3", "is actually 4".
_ADVERB = r"(?:(?:simply|actually|indeed|just|exactly|clearly|now|then)\s+)?"
# "The (final) answer (to the problem) is/was/would be/=/:", "the answer of 2": what
# follows states the answer.
_FINAL_CUE = re.compile(
    r"\b(?:final\s+)?answer\b(?:(?:\s+(?:to|of|for)\b[^.:\n]{0,80}?)?\s*"
    r"(?:is|was|(?:would|will|should)\s+be|=|:)(?:[ \t]*:)?|\s+of(?=\s+-?\d))"
    rf"[ \t]*{_ADVERB}",
    re.IGNORECASE,
)
# "0 is (indeed) the final answer".
_VALUE_IS_THE_ANSWER = re.compile(
    rf"(?P<value>{_NUMBER})\s+(?:is|was)\s+(?:\w+\s+)?(?:the|our|my)\s+"
    r"(?:final\s+|correct\s+)?answer\b",
    re.IGNORECASE,
)
# Words that equate something to the value after them: "= 42", "equals 42", "is 42",
# "gives us 42", "we get 42", "Result: 42".
_COPULA = re.compile(
    r"(?:=|\bequals?\b|\bequal\s+to\b|\bis\b|\bwas\b|\bgives?(?:\s+(?:us|you|me))?\b|"
    r"\b(?:get|got)\b|\bresults?\s+in\b|\bmakes\b|\byields\b|\bbecomes\b|"
    rf"\bleaves(?:\s+us)?(?:\s+with)?\b|:(?=\s))[ \t]*{_ADVERB}",
    re.IGNORECASE,
)
_LONE_VALUE_LINE = re.compile(rf"^[ \t]*(?=(?:{_LATEX_VALUE}|{_NUMBER})[ \t.]*$)", re.MULTILINE)
_VARIABLE_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*")
_SPACES = re.compile(r"[ \t]*")
_WHITESPACE = re.compile(r"\s*")

_YES_NO = re.compile(r"^\W*(yes|no)\b(?=\s*(?:[.,!;:]|$))", re.IGNORECASE | re.MULTILINE)
# Where a text answer's sentence ends; "No because ..." answers "No".
_SENTENCE_END = re.compile(r"\.(?!\d)|[;!?]|\n|\s+(?:because|since|which)\b")
_SENTENCE_BREAK = re.compile(r"\.(?!\d)\s|[;!?]")
_LIST_MARKER = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+")
# What a comma may introduce after the answer without making it a list.
_APPOSITION = re.compile(
    r"(?:a|an|the|which|who|that|it|this|as|also|because|since|so|its|their|his|her)\b"
    r"|but\b(?!\s+also)",
    re.IGNORECASE,
)
_HEDGED = re.compile(
    r"\b(?:not|no|never|neither|nor|or|either|maybe|perhaps|probably|possibly|unless)\b|n't\b",
    re.IGNORECASE,
)
# "<subject> is <complement>", the subject a short noun phrase (not a clause of its own).
_COPULAR = re.compile(
    r"^(?P<subject>(?:\S+\s+){0,7}?\S+)\s+(?:is|are|was|were)\s+(?P<complement>.+)$"
)
_POSSESSOR = re.compile(r"^(?:[A-Z]\w*['\u2019]s|(?:his|her|their))\s+")
# "the father of Logan": the relation the question asks for.
_KINSHIP_OF = re.compile(
    r"^(?:the|a|an)\s+(?P<relation>(?:(?:grand|great-grand|step)?(?:father|mother|son|daughter"
    r"|parent|child)|brother|sister|sibling|husband|wife|spouse|uncle|aunt|nephew|niece|cousin)"
    r"(?:-in-law)?)\s+of\s+\w+$"
)
# "... is the colour of the sky": a description, so the (short) subject is the answer.
_DESCRIBED = re.compile(r"^the\s+\S+(?:\s+\S+){2,}$")
_NAMED_SUBJECT = re.compile(
    r"(?!(?:it|this|that|he|she|they|there)\b)\S+(?:\s+\S+)?", re.IGNORECASE
)
_NAMING = re.compile(r"^(?:called|known\s+as|named)\s+")
# "X is related to Y": a relation asserted, none named.
_RELATES = re.compile(
    r"^(?:\S+\s+){0,7}?\S+\s+(?:is|are|was|were)\s+(?:related|married|similar|close|connected)\b"
)
_MAX_TEXT_ANSWER_WORDS = 5
_TOP_LEVEL = re.compile(
    r"(?:async[ \t]+)?def[ \t]|class[ \t]|@|import[ \t]|from[ \t]+\S+[ \t]+import[ \t]"
)
_TOP_LEVEL_DEFINITION = re.compile(r"(?:async[ \t]+)?def[ \t]|class[ \t]")

# A line that lists an option: "C: potato", "(C) potato", "C) potato".
_LISTED_OPTION = re.compile(r"^\W*\(?([A-J])[).:]")
_MORE_LETTERS = re.compile(r"\s*(?:,|/|\bor\b|\band\b)\s*\(?[A-J]\b(?![\w'\u2019])")
_REJECTED = re.compile(r"\b(?:not|incorrect|wrong|false)\b|n't\b", re.IGNORECASE)
# Option letters: "(B)", "B)", "option B", a letter alone; "A" and "I" only where they
# cannot be the article or the pronoun.
_OPTION = re.compile(
    r"\(([A-J])\)|\b([A-J])\)|\b(?i:option|choice|letter)\s+\(?([A-J])\b"
    r"|\b([B-HJ])\b(?!['\u2019]\w)|\b(A)(?=[ \t]*(?:[.:,;!]|$))",
    re.MULTILINE,
)


def extract_answer(text: str, kind: Kind) -> str | None:
    """The final answer stated in ``text``, or None if it states none."""
    if kind == "math":
        return _extract_math(text)
    if kind == "choice":
        return _extract_choice(text)
    if kind == "code":
        return _extract_code(text)
    return _extract_text(text)


def answered_in_words(texts: Iterable[str]) -> bool:
    """Whether ``texts`` state no numeric answer but do state answers in words: a
    question asked as ``math`` that wanted ``text``."""
    texts = list(texts)
    return all(_extract_math(t) is None for t in texts) and any(
        _extract_text(t) is not None for t in texts
    )


def declared_answer(text: str, kind: Kind) -> str | None:
    """The answer ``text`` declares outright ("The answer is 12." with its clause
    ended), or None: how a reasoner that is still writing says it is done."""
    if kind == "code":
        return None
    for cue in reversed(list(_FINAL_CUE.finditer(text))):
        start = _answer_start(text, cue.end())
        end = None if start is None else _CLAUSE_END.search(text, start)
        if end and text[start : end.start()].strip():
            return extract_answer(text[: end.end()], kind)
    return None


def answer_key(answer: str, kind: Kind) -> str:
    """A canonical form: answers with the same key are counted as the same vote."""
    if kind == "math":
        return _math_key(answer)
    if kind == "code":
        return "\n".join(line.rstrip() for line in answer.splitlines() if line.strip())
    if kind == "text":
        # "The capital of France is Paris" and "Paris" are one vote.
        return _normalize_text(_text_answer(answer) or answer)
    return _normalize_text(answer)


def equivalent(answer: str, reference: str, kind: Kind) -> bool:
    """Whether ``answer`` means the same as ``reference``."""
    if kind == "math":
        return _math_equivalent(answer, reference)
    if kind == "text":
        return _text_equivalent(answer, reference)
    return answer_key(answer, kind) == answer_key(reference, kind)


@lru_cache(maxsize=4096)
def _parse_math(text: str) -> tuple:
    return tuple(parse(text, parsing_timeout=_timeout(), raise_on_error=False))


def _extract_math(text: str) -> str | None:
    boxes = _boxed(text)
    if boxes:
        return _math_answer(boxes[-1])
    text = _MARKUP.sub("", text.translate(_SYMBOLS))
    # A stated answer wins over arithmetic elsewhere ("The answer is 12. Then 5 + 1 = 6").
    for statements in (_final_statements(text), _equations(text)):
        if statements:
            return max(statements, key=lambda statement: statement[0])[1]
    return None


def _boxed(text: str) -> list[str]:
    """The contents of each ``\\boxed{...}``, braces matched."""
    contents = []
    for box in re.finditer(r"\\boxed\s*\{", text):
        depth, start = 1, box.end()
        for index in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            if depth == 0:
                contents.append(text[start:index])
                break
    return contents


def _math_answer(stated: str) -> str | None:
    """``stated`` as an answer if it is one value (not a list, not unevaluated arithmetic)."""
    stated = _MARKUP.sub("", stated.translate(_SYMBOLS)).strip().rstrip(".").strip()
    value = _VALUE.fullmatch(stated)
    if value:
        return _plain(value.group())
    if "\\" in stated and _single_value(stated) is not None:
        return stated
    return None


def _plain(value: str) -> str:
    return value.replace(",", "") if "\\" not in value else value


def _value_at(text: str, position: int) -> tuple[int, str | None] | None:
    """The value stated at ``position``: (where, the value or None if the text gives
    alternatives), or None if no single result stands there."""
    value = _VALUE.match(text, position)
    if value is None or _CONTINUED.match(text, value.end()):
        return None
    stated = _plain(value.group())
    other = _ALTERNATIVES.match(text, value.end())
    if other and _plain(other.group("other")) != stated:  # "5, 5." repeats one answer
        return position, None
    return position, stated


def _final_statements(text: str) -> list[tuple[int, str | None]]:
    """Where the text says what its answer is: "the answer is X" (the last value the
    clause equates something to, so "the answer is 6 + 3 = 9" states 9) and "X is
    the final answer"."""
    statements = []
    for cue in _FINAL_CUE.finditer(text):
        start = _answer_start(text, cue.end())
        if start is None:
            continue
        clause_end = _CLAUSE_END.search(text, start)
        copulas = _COPULA.finditer(text, start, clause_end.start() if clause_end else len(text))
        inner = [_value_at(text, copula.end()) for copula in copulas]
        stated = [s for s in inner if s is not None] or [_value_at(text, start)]
        if stated[-1] is not None:
            statements.append((cue.start(), stated[-1][1]))
    for declared in _VALUE_IS_THE_ANSWER.finditer(text):
        statements.append((declared.start(), _plain(declared.group("value"))))
    return statements


def _answer_start(text: str, position: int) -> int | None:
    """Where the answer a cue announces starts: here, or on the next line that is not
    empty ("The answer is:\\n\\n42"); None if that line is another cue
    ("Answer:\\nAnswer: 3")."""
    here = _SPACES.match(text, position).end()
    if not text.startswith("\n", here):
        return here
    start = _WHITESPACE.match(text, here).end()
    return None if _FINAL_CUE.match(text, start) else start


def _equations(text: str) -> list[tuple[int, str | None]]:
    """Values the text equates something to ("= 42", "which equals 42", "is 42"), and
    lines that are only a value: one such line, for lines of different values are a
    list ("1\\n2\\n3\\n42"), no answer."""
    equated = [_value_at(text, c.end()) for c in _COPULA.finditer(text)]
    lines = [_value_at(text, line.end()) for line in _LONE_VALUE_LINE.finditer(text)]
    lines = [line for line in lines if line is not None]
    if len({value for _, value in lines}) > 1:
        lines = [(position, None) for position, _ in lines]
    return [s for s in equated if s is not None] + lines


def _single_value(answer: str) -> sympy.Basic | None:
    """The one value ``answer`` is, or None: text, a list, a set, unevaluated arithmetic."""
    answer = _MARKUP.sub("", answer.translate(_SYMBOLS)).strip().rstrip(".").strip()
    answer = _VARIABLE_ASSIGNMENT.sub("", answer)  # "x = 42" is 42
    if re.fullmatch(_NUMBER, answer):
        return sympy.Rational(answer.replace(",", ""))
    if "\\" not in answer:
        return None
    parsed = _parse_math(f"${answer}$")
    if not parsed or not isinstance(parsed[0], sympy.Expr):
        return None  # sets, intervals, relations
    return None if _is_unevaluated_arithmetic(parsed[0]) else parsed[0]


def _math_equivalent(answer: str, reference: str) -> bool:
    gold, target = _single_value(reference), _single_value(answer)
    if gold is not None:
        # Only one value can equal one value: not "41, 42", not "13 + 29".
        return target is not None and bool(
            verify([gold], [target], timeout_seconds=_timeout(), raise_on_error=False)
        )
    return _math_key(answer) == _math_key(reference)


def _is_unevaluated_arithmetic(expr: object) -> bool:
    """``7 + 5`` left as a sum of plain numbers (``\\sqrt{2}`` or ``2\\pi`` are answers)."""
    return isinstance(expr, sympy.Add | sympy.Mul) and all(
        isinstance(arg, sympy.Number) for arg in expr.args
    )


@lru_cache(maxsize=4096)
def _math_key(answer: str) -> str:
    value = _single_value(answer)
    if value is None:
        return _normalize_text(answer)
    if isinstance(value, sympy.Number):
        # 0.5, 1/2 and 2/4 are one vote; floats are rounded like math-verify does.
        return str(sympy.nsimplify(round(float(value), 6), rational=True))
    return str(value)


def _extract_choice(text: str) -> str | None:
    """The one option letter the final statement names: the last "the answer is ..."
    clause, else the last line that names an option. A statement naming several
    letters, or rejecting one ("(C) is incorrect"), or a line of a relisted set of
    options ("C: ...", then "D: ...") names none."""
    text = _MARKUP.sub("", text)
    cues = list(_FINAL_CUE.finditer(text))
    if cues:
        clause_end = _CLAUSE_END.search(text, cues[-1].end())
        end = clause_end.start() if clause_end else len(text)
        if _MORE_LETTERS.match(text, end):
            return None  # "The answer is A, B, C or D"
        clause = text[cues[-1].end() : end]
        # "The answer is A carrot..." is the article, not option A.
        leading = re.match(r"\(?([A-J])\)?(?![\w'\u2019])(?!\s+[a-z])", clause)
        letters = {leading.group(1)} if leading else set()
        letters |= _option_letters(clause)
        if letters:
            return _one_letter(letters, clause)
    lines = [line for line in text.splitlines() if _option_letters(line)]
    if not lines:
        return None
    listed = [_LISTED_OPTION.match(line) for line in lines[-2:]]
    if len(lines) > 1 and all(listed) and listed[0].group(1) != listed[1].group(1):
        return None  # the options, written out again
    return _one_letter(_option_letters(lines[-1]), lines[-1])


def _one_letter(letters: set[str], statement: str) -> str | None:
    if len(letters) != 1 or _REJECTED.search(statement):
        return None
    return letters.pop()


def _option_letters(text: str) -> set[str]:
    return {next(group for group in m.groups() if group) for m in _OPTION.finditer(text)}


def _extract_text(text: str) -> str | None:
    """The last "the answer is ..." clause, else a leading "Yes"/"No", else the first
    line if it is short, else the first of its sentences that says what something is
    ("The capital of France is Paris, ..."): small models answer first, then ramble
    until they are cut off. Reduced to the answer stated (`_text_answer`)."""
    text = _MARKUP.sub("", text)
    starts = [_answer_start(text, cue.end()) for cue in _FINAL_CUE.finditer(text)]
    clauses = [
        clause for clause in (_text_clause(text, s) for s in starts if s is not None) if clause
    ]
    if clauses:
        return _text_answer(clauses[-1])
    yes_no = _YES_NO.match(text)
    if yes_no:
        return yes_no.group(1).capitalize()
    first = _LIST_MARKER.sub("", next((line for line in text.splitlines() if line.strip()), ""))
    if len(first.split()) <= _MAX_TEXT_ANSWER_WORDS:
        return _text_answer(_text_clause(first, 0))
    for sentence in _SENTENCE_BREAK.split(first):
        answer = _copular_answer(_text_clause(sentence, 0))
        if answer:
            return answer
    return None


def _text_clause(text: str, start: int) -> str:
    """The sentence from ``start``: "Paris, the capital of France" is Paris, but
    "Paris, Lyon" stays a list."""
    sentence = _SENTENCE_END.split(text[start:], maxsplit=1)[0].strip()
    head, comma, tail = sentence.partition(", ")
    return head if comma and _APPOSITION.match(tail) else sentence


def _text_answer(clause: str) -> str | None:
    """The answer a clause states: itself, or what a copular clause says something
    is (`_copular_answer`); a negated or hedged clause is kept whole, so it never
    equals the bare answer, and a long one states no short answer."""
    if _RELATES.match(_strip_quotes(clause)):
        return None  # "Sebastian is related to Henry" names no relation
    answer = _copular_answer(clause) or _strip_quotes(clause)
    return answer if answer and len(answer.split()) <= _MAX_TEXT_ANSWER_WORDS else None


def _copular_answer(clause: str) -> str | None:
    """The answer a copular clause names: "The capital of France is Paris" -> "Paris",
    "Paris is the capital of France" and "Blue is the colour of the sky" -> their
    subject, "Liam is Jennifer's son" and "Sebastian is the father of Logan" -> the
    relation, "It is called ice" -> "ice". None for a clause that is not copular, is
    hedged ("is not Paris", "is Paris or Lyon"), relates ("is related to Henry") or is
    long."""
    clause = _strip_quotes(clause)
    copular = None if _HEDGED.search(clause) else _COPULAR.match(clause)
    if copular is None or _RELATES.match(clause):
        return None
    subject = copular.group("subject")
    complement = _NAMING.sub("", re.sub(rf"^{_ADVERB}", "", copular.group("complement")))
    complement = _POSSESSOR.sub("", _strip_quotes(complement))
    kinship = _KINSHIP_OF.match(complement)
    if kinship:
        answer = kinship.group("relation")
    elif _DESCRIBED.match(complement) and _NAMED_SUBJECT.fullmatch(subject):
        answer = subject  # the complement describes what the subject names
    else:
        answer = complement
    return answer if answer and len(answer.split()) <= _MAX_TEXT_ANSWER_WORDS else None


def _strip_quotes(text: str) -> str:
    return text.strip().strip(string.punctuation + " \"'\u201c\u201d")


def _text_equivalent(answer: str, reference: str) -> bool:
    return answer_key(answer, "text") == answer_key(reference, "text")


def _extract_code(text: str) -> str | None:
    """The function (or class) the text defines, from the last piece that defines one.

    Pieces are what the code fences separate, so an unterminated block (the
    sample hit max_tokens) and a block that only has its closing fence still
    yield their code. Of that piece the code runs from its first top-level import
    or definition to the end of its last top-level definition: the example calls
    and tests a model writes after it (often cut off mid-line) are left out. With no
    definition anywhere (a base model continuing a function's body) the first
    fenced block, else the whole text, is the code if it is indented like a body.
    """
    pieces = [_FENCE_LANGUAGE.sub("", piece, count=1) for piece in text.split("```")]
    defining = [piece for piece in pieces if _DEFINITION.search(piece)]
    if defining:
        return _definitions(defining[-1])
    code = pieces[1] if len(pieces) > 1 else text
    first = next((line for line in code.splitlines() if line.strip()), "")
    return code if first[:1] in (" ", "\t") else None


def _definitions(code: str) -> str:
    lines = code.splitlines(keepends=True)
    tops = [i for i, line in enumerate(lines) if _TOP_LEVEL.match(line)]
    definitions = [i for i in tops if _TOP_LEVEL_DEFINITION.match(lines[i])]
    if not definitions:
        return code  # only nested definitions: a body
    end = definitions[-1] + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t)]}"):
        end += 1
    while not lines[end - 1].strip():
        end -= 1
    return "".join(lines[tops[0] : end])


def _normalize_text(answer: str) -> str:
    lowered = answer.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", lowered).split())
