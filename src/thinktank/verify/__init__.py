"""Answer extraction and equivalence: decides whether two samples agree."""

from thinktank.verify.extract import (
    answer_key,
    answered_in_words,
    declared_answer,
    equivalent,
    extract_answer,
)

__all__ = ["answer_key", "answered_in_words", "declared_answer", "equivalent", "extract_answer"]
