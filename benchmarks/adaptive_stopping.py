"""How adaptive-consistency's stopping rule trades tokens for accuracy, on held-out problems.

Draws one stream of 16 samples per problem (self-consistency:n=16), then replays
adaptive-consistency's rule over prefixes of each stream for several batch sizes
and confidence thresholds: the accuracy and completion tokens each setting would
have had, as a ratio to the full vote of 16 (the baseline, from the same samples).
This is how the strategy's defaults were chosen, on problems (seed 2) that the
results table (seed 1) does not use.

    .venv/bin/python benchmarks/adaptive_stopping.py [--suite SPEC ...] [--size 30]
"""

from __future__ import annotations

import argparse
import zlib

from thinktank.aggregate import majority_vote
from thinktank.bench.suites import load_suite
from thinktank.meter import Meter
from thinktank.models import load_model
from thinktank.strategies import Context, SelfConsistency
from thinktank.strategies.sampling import decision_confidence
from thinktank.verify import answer_key

SUITES = (
    "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=2",
    "rg:products?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=2",
)
#: (batch, confidence) settings to replay; (16, 1.0) is the full vote.
RULES = ((4, 0.95), (2, 0.95), (1, 0.95), (4, 0.9), (2, 0.9), (4, 0.8), (2, 0.8), (2, 0.75))
MAX_N = 16

Stream = list[tuple[str | None, int, float]]  # (answer, completion tokens, score) per sample


def replay(stream: Stream, batch: int, confidence: float) -> tuple[float, int]:
    """The score and completion tokens of the rule's answer on one stream."""
    drawn = 0
    while True:
        drawn = min(MAX_N, drawn + batch)
        vote = majority_vote([answer for answer, _, _ in stream[:drawn]], "math")
        if drawn >= MAX_N or decision_confidence(list(vote.counts.values())) >= confidence:
            break
    winner = None if vote.winner is None else answer_key(vote.winner, "math")
    score = next(
        (s for a, _, s in stream[:drawn] if a is not None and answer_key(a, "math") == winner),
        0.0,
    )
    return score, sum(tokens for _, tokens, _ in stream[:drawn])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", action="append", help="suite specs (default: two rg suites)")
    parser.add_argument("--size", type=int, default=30)
    args = parser.parse_args()
    model = load_model("smollm2")
    for spec in args.suite or [s.format(size=args.size) for s in SUITES]:
        streams: list[Stream] = []
        for task in load_suite(spec).tasks:
            ctx = Context(model, Meter(), seed=zlib.crc32(f"7/{task.problem.id}".encode()))
            solution = SelfConsistency(n=MAX_N).solve(task.problem, ctx)
            streams.append(
                [(c.answer, c.completion_tokens, task.score(c.answer)) for c in solution.candidates]
            )
        full = [replay(s, MAX_N, 1.0) for s in streams]
        base_accuracy = sum(score >= 1 for score, _ in full) / len(full)
        base_tokens = sum(tokens for _, tokens in full)
        print(f"\n{spec}: vote of {MAX_N}: accuracy {base_accuracy:.3f}, {base_tokens} tokens")
        print("| batch | confidence | accuracy (delta) | completion tokens (ratio) |")
        print("|---|---|---|---|")
        for batch, confidence in RULES:
            runs = [replay(s, batch, confidence) for s in streams]
            accuracy = sum(score >= 1 for score, _ in runs) / len(runs)
            tokens = sum(t for _, t in runs)
            print(
                f"| {batch} | {confidence} | {accuracy:.3f} ({accuracy - base_accuracy:+.3f}) "
                f"| {tokens} ({tokens / base_tokens:.2f}) |"
            )


if __name__ == "__main__":
    main()
