"""Answer extraction and equivalence: decides whether two samples agree."""

from thinktank.verify.extract import answer_key, declared_answer, equivalent, extract_answer

__all__ = ["answer_key", "declared_answer", "equivalent", "extract_answer"]
