"""Answer extraction and equivalence: decides whether two samples agree."""

from thinktank.verify.extract import (
    KINDS,
    Kind,
    answer_key,
    answered_in_words,
    declared_answer,
    equivalent,
    extract_answer,
)

__all__ = [
    "KINDS",
    "Kind",
    "answer_key",
    "answered_in_words",
    "declared_answer",
    "equivalent",
    "extract_answer",
]
