"""How a problem is put to a model: chat messages for instruction-tuned models,
few-shot text for base models (which only continue text)."""

from __future__ import annotations

from collections.abc import Sequence

from thinktank.models.base import Message, Model, Prompt
from thinktank.problem import Kind, Problem

# Measured on reasoning-gym chain_sum with SmolLM2: this wording gave the best
# per-sample accuracy (0.35) and majority-of-8 accuracy (0.50) of four tried.
_INSTRUCTION: dict[Kind, str] = {
    "math": "You are a careful math assistant. "
    "Answer with the final result as 'The answer is ...'.",
    "choice": "You are a careful assistant. "
    "Answer with the letter of one option as 'The answer is X'.",
    "text": "You are a careful assistant. Answer briefly, as 'The answer is ...'.",
    "code": "You are a careful Python programmer. Complete the function. Reply with the"
    " whole function in one ```python code block.",
}

_FEW_SHOT: dict[Kind, tuple[tuple[str, str], ...]] = {
    "math": (
        ("What is 3 + 4?", "3 + 4 = 7. The answer is 7."),
        ("Tom has 5 apples and eats 2. How many are left?", "5 - 2 = 3. The answer is 3."),
    ),
    "choice": (
        (
            "Which is a fruit? (A) carrot (B) apple (C) potato",
            "An apple is a fruit. The answer is B.",
        ),
    ),
    "text": (("What is the capital of France?", "The answer is Paris."),),
}

#: Where a base model's answer ends: it would go on to invent the next question.
BASE_MODEL_STOPS = ("\nQuestion:", "\n\n")
#: Where a base model's function body ends: at the next top-level statement.
BASE_MODEL_CODE_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")


#: Ways of putting the same problem, for strategies that pool several prompts:
#: ``instruct`` is the default; ``step-by-step`` asks for the steps first;
#: ``plain`` is the bare question (no instruction, no examples).
PROMPT_VARIANTS = ("instruct", "step-by-step", "plain")
_STEP_BY_STEP = "Think step by step, then give the answer."


def build_prompt(
    problem: Problem, model: Model, *, variant: str = "instruct", approach: str | None = None
) -> Prompt:
    """The prompt for ``problem`` in the form ``model`` understands.

    The problem's conversation is kept. A chat model gets the client's system
    prompt with thinktank's answer instruction after it (the instruction alone
    without one), the earlier turns in order, then the question. A base model gets
    the conversation as text: the system prompt first, then the few-shot examples,
    the earlier turns as Question:/Answer: pairs, and the question to answer.
    ``variant`` is one of `PROMPT_VARIANTS` (``plain`` adds no instruction nor
    examples); ``approach`` (DIV-SE) tells the model how to go about it.
    """
    if variant not in PROMPT_VARIANTS:
        raise ValueError(f"prompt variant must be one of {', '.join(PROMPT_VARIANTS)}")
    question = problem.prompt
    if approach:
        question += f"\n\nApproach: {approach}"
    if variant == "step-by-step" and problem.kind != "code":
        question += f"\n\n{_STEP_BY_STEP}"
    if model.capabilities.chat:
        messages: list[Message] = [*problem.context, {"role": "user", "content": question}]
        if variant == "plain":
            return messages
        return _instructed(messages, _INSTRUCTION[problem.kind])
    if problem.kind == "code":  # a base model continues the function's body
        return _commented(problem.context) + problem.prompt
    leading = next((i for i, m in enumerate(problem.context) if m["role"] != "system"),
                   len(problem.context))  # fmt: skip
    system = "".join(f"{m['content']}\n\n" for m in problem.context[:leading])
    shots = (
        ""
        if variant == "plain"
        else "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in _FEW_SHOT[problem.kind])
    )
    history = "".join(_as_text(m) for m in problem.context[leading:])
    return f"{system}{shots}{history}Question: {question}\nAnswer:"


def _instructed(messages: list[Message], instruction: str) -> list[Message]:
    """``messages`` with ``instruction`` after the system prompt they start with (as a
    system prompt of its own when they start with none)."""
    if messages[0]["role"] == "system":
        system = f"{messages[0]['content']}\n\n{instruction}".lstrip()
        return [{"role": "system", "content": system}, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _as_text(message: Message) -> str:
    """An earlier turn as a base model reads it: a user turn asks, an assistant turn
    answers, a later system message is plain text."""
    if message["role"] == "user":
        return f"Question: {message['content']}\n"
    if message["role"] == "assistant":
        return f"Answer: {message['content']}\n\n"
    return f"{message['content']}\n\n"


def _commented(context: Sequence[Message]) -> str:
    """The conversation before a code problem as Python comments, so the function stub
    a base model continues stays last (and the text stays Python)."""
    lines = [line for m in context
             for line in f"{m['role'].capitalize()}: {m['content']}".splitlines()]  # fmt: skip
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def stop_strings(problem: Problem, model: Model) -> tuple[str, ...]:
    """Stop strings that go with `build_prompt` for this problem and model."""
    if model.capabilities.chat:
        return ()
    return BASE_MODEL_CODE_STOPS if problem.kind == "code" else BASE_MODEL_STOPS


def continuation_prompt(problem: Problem, model: Model, reply: str) -> Prompt:
    """The problem's prompt with the model's reply begun: the model goes on from ``reply``
    (a chat model through a final assistant message, a base model as plain text)."""
    prompt = build_prompt(problem, model)
    if not reply:
        return prompt
    if isinstance(prompt, str):
        return prompt + reply
    return [*prompt, {"role": "assistant", "content": reply}]
