"""How a problem is put to a model: chat messages for instruction-tuned models,
few-shot text for base models (which only continue text)."""

from __future__ import annotations

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


def build_prompt(problem: Problem, model: Model) -> Prompt:
    """The prompt for ``problem`` in the form ``model`` understands."""
    if model.capabilities.chat:
        messages: list[Message] = [
            {"role": "system", "content": _INSTRUCTION[problem.kind]},
            {"role": "user", "content": problem.prompt},
        ]
        return messages
    if problem.kind == "code":
        return problem.prompt  # a base model continues the function's body
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in _FEW_SHOT[problem.kind])
    return f"{shots}Question: {problem.prompt}\nAnswer:"


def stop_strings(problem: Problem, model: Model) -> tuple[str, ...]:
    """Stop strings that go with `build_prompt` for this problem and model."""
    if model.capabilities.chat:
        return ()
    return BASE_MODEL_CODE_STOPS if problem.kind == "code" else BASE_MODEL_STOPS
