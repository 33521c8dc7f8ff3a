"""What a strategy may see (`Problem`) and what only the evaluator holds (`Task`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from thinktank.verify import KINDS, Kind, equivalent

if TYPE_CHECKING:
    from thinktank.models.base import Message

__all__ = ["CONVERSATION_ROLES", "KINDS", "Kind", "Problem", "Task", "infer_kind"]

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


#: The roles a conversation put to a strategy may hold (tool calls are for plain requests).
CONVERSATION_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Problem:
    """A question as a strategy sees it: no reference answer, ever.

    ``prompt`` is the question (a conversation's last user message); ``context`` is
    the conversation before it: the client's system prompt and earlier user and
    assistant turns, in order (`from_messages` splits a conversation so).
    ``kind`` selects answer extraction and equivalence (see `thinktank.verify`).
    ``public_tests`` are tests a user would really have (e.g. a docstring's examples).
    """

    id: str
    prompt: str
    kind: Kind = "math"
    public_tests: tuple[str, ...] = ()
    # Copied into a tuple of {"role", "content"} dicts; left out of the hash (dicts
    # have none), so equal problems still hash equal.
    context: tuple[Message, ...] = field(default=(), hash=False)

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ValueError("the problem's prompt is empty")
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}; expected one of {KINDS}")
        object.__setattr__(self, "context", tuple(_message(m) for m in self.context))

    @classmethod
    def from_messages(
        cls,
        id: str,
        messages: Sequence[Message],
        kind: Kind | None = None,
        public_tests: tuple[str, ...] = (),
    ) -> Problem:
        """The problem a conversation poses: its last message, a user message, is the
        question; the messages before it are the context. ``kind`` defaults to the one
        the question asks for (`infer_kind`). Raises ValueError, saying why, for an
        empty conversation, a role other than system, user or assistant, a message
        that is not ``{"role", "content"}`` text, or a conversation that does not end
        with a non-empty user message (a strategy answers the last user message)."""
        if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
            raise ValueError("a conversation is a list of {role, content} messages")
        if not messages:
            raise ValueError("the conversation has no messages")
        *context, last = (_message(m) for m in messages)
        if last["role"] == "assistant":
            raise ValueError(
                "a strategy answers the last user message; the conversation ends with an "
                "assistant message"
            )
        if last["role"] != "user":
            raise ValueError(
                f"the conversation must end with the user message to answer, not a "
                f"{last['role']} message"
            )
        question = last["content"]
        if not question.strip():
            raise ValueError("the last user message is empty")
        return cls(id, question, kind or infer_kind(question), public_tests, tuple(context))

    def messages(self) -> list[Message]:
        """The whole conversation: the context, then the question as a user message."""
        return [*self.context, {"role": "user", "content": self.prompt}]

    def transcript(self) -> str:
        """The problem as text for a model shown it inside another prompt (a judge, a
        peer): each message of the conversation as "Role: content", the question last;
        the question alone when there is no context."""
        if not self.context:
            return self.prompt
        return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in self.messages())


def _message(message: Mapping[str, object]) -> Message:
    """A copy of one conversation message, checked: {"role", "content"} text, the role
    one of `CONVERSATION_ROLES`."""
    if not isinstance(message, Mapping):
        raise ValueError(f"a message is a {{role, content}} object, not {message!r:.80}")
    if extra := sorted(set(message) - {"role", "content"}):
        raise ValueError(
            f"a strategy's conversation holds only roles and text; a message has "
            f"{', '.join(map(repr, extra))}"
        )
    role, content = message.get("role"), message.get("content")
    if role not in CONVERSATION_ROLES:
        raise ValueError(
            f"a message's role must be one of {', '.join(CONVERSATION_ROLES)}, not {role!r}"
        )
    if not isinstance(content, str):
        raise ValueError(f"a {role} message's content must be text, not {content!r:.80}")
    return {"role": role, "content": content}  # type: ignore[typeddict-item]


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
        return float(answer is not None and equivalent(answer, self.reference, self.problem.kind))
