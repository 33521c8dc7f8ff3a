"""Answer extraction and equivalence: what decides whether votes agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thinktank.aggregate import majority_vote
from thinktank.verify import answer_key, equivalent, extract_answer

REAL_OUTPUTS = Path(__file__).parent / "data" / "smollm2_chain_sum.jsonl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 6.", "6"),
        ("so 7+5 = 12", "12"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("The answer is -3", "-3"),
        ("Result: 3/4", "3/4"),
        ("The final answer is $12$.", "12"),
        ("answer: 0.5", "0.5"),
        ("The answer is 3.5.", "3.5"),
        ("The answer is 1,000.", "1000"),
        ("I think 6 + 3 = 9. So the answer is 9.", "9"),
        # The stated answer wins over arithmetic that follows it.
        ("The answer is 12. Then, 5 + 1 = 6", "12"),
        # In "answer is a = b", the answer is b.
        ("The answer is 6 + 3 = 9.", "9"),
        ("So, the answer to the question is 11.", "11"),
        ("First 2 + 2 = 4, then 4 * 3 = 12.", "12"),
        ("The answer is N", None),
        # Real SmolLM2 outputs: a clause after the answer, and a restated question.
        (
            "Therefore, the final answer is 11, which is the result of the arithmetic"
            " operation of 7 + 5.",
            "11",
        ),
        ("In the given equation 8 + 0 =, the operation is addition with a variable.", None),
        ("7 + 5 = N", None),
        ("I cannot tell.", None),
    ],
)
def test_math_extraction(text, expected):
    assert extract_answer(text, "math") == expected


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("0.5", "1/2", True),
        ("\\frac{1}{2}", "0.5", True),
        ("12", "12.0", True),
        ("-4", "-4", True),
        ("1000", "1,000", True),
        ("4", "3", False),
        ("-4", "4", False),
    ],
)
def test_math_equivalence_and_vote_keys_agree(a, b, same):
    assert equivalent(a, b, "math") is same
    assert (answer_key(a, "math") == answer_key(b, "math")) is same


def test_choice_and_text_extraction():
    assert extract_answer("Apples are fruit. The answer is (B).", "choice") == "B"
    assert extract_answer("I'd go with C", "choice") == "C"
    assert extract_answer("Let me think.\nThe answer is Paris.", "text") == "Paris"
    assert extract_answer("Paris", "text") == "Paris"
    assert equivalent("The Paris", "paris!", "text")
    assert not equivalent("Paris", "London", "text")


def test_majority_vote_groups_equivalent_answers_and_breaks_ties_by_order():
    vote = majority_vote(["0.5", "3", "1/2", None, "3", "\\frac{1}{2}"], "math")
    assert vote.winner == "0.5"
    assert vote.counts == {"0.5": 3, "3": 2}
    tie = majority_vote(["7", "9", "9", "7"], "math")
    assert tie.winner == "7"  # sampled first
    assert majority_vote([None, None], "math").winner is None


def _real_outputs():
    return [json.loads(line) for line in REAL_OUTPUTS.read_text().splitlines() if line]


@pytest.mark.parametrize("record", _real_outputs(), ids=lambda r: r["id"])
def test_extraction_on_real_smollm2_outputs(record):
    """Outputs SmolLM2 really wrote for reasoning-gym chain_sum (seeded, 128 tokens at
    temperature 0.7); ``stated_answer`` is what the text states, read by hand, right or wrong."""
    assert extract_answer(record["text"], "math") == record["stated_answer"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A real SmolLM2 HumanEval answer: code first, then a closing fence and prose.
        (
            "def truncate_number(number: float) -> float:\n    return int(round(number))\n```\n\n"
            "This function uses the `truncate_number` function from the `math` module.",
            "def truncate_number(number: float) -> float:\n    return int(round(number))\n",
        ),
        (
            "Here:\n```python\ndef f(x):\n    return x + 1\n```\nDone.",
            "def f(x):\n    return x + 1\n",
        ),
        ("```python\ndef f(x):\n    return x", "def f(x):\n    return x"),  # cut at max_tokens
        ("    return x + 1\n", "    return x + 1\n"),  # a base model continuing the body
        ("```\n    return x\n```", "    return x\n"),
        ("", None),
    ],
)
def test_code_extraction(text, expected):
    assert extract_answer(text, "code") == expected
