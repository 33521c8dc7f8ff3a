"""What keeping the models' texts costs on disk: the ledger's size per 1,000 samples.

Runs one bench (self-consistency on chain_sum, the embedded model) twice in this
process, into two fresh ledgers: one keeping texts (the default) and one keeping
usage only (the baseline, ``log_texts=False``). The second run replays the first's
samples from a shared store, so both hold the same calls. Prints each ledger's
bytes per 1,000 samples (after a VACUUM, so free pages do not count), their ratio,
and what the texts would take written out plainly (each sample with its prompt).

    .venv/bin/python benchmarks/ledger_size.py [--samples 1000] [--n 10] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
from pathlib import Path

import thinktank
from thinktank.bench.runner import plan_bench, run_bench
from thinktank.ledger import Ledger
from thinktank.meter import SampleStore

SUITE = "rg:chain_sum?min_terms=2&max_terms=3&min_digits=1&max_digits=2&size={size}&seed=5"


def vacuumed_size(path: Path) -> int:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    return path.stat().st_size


def bench_into(ledger: Ledger, suite: str, strategy: str, samples: SampleStore) -> tuple[int, int]:
    """Run the bench into ``ledger``; the number of samples its calls drew, and the
    UTF-8 bytes of the prompts and completions they hold, uncompressed and repeated."""
    plan = plan_bench(suite, [strategy], ["smollm2"], ledger=ledger)
    run_bench(plan, ledger=ledger, concurrency=4, samples=samples)
    calls = ledger.logged_calls(limit=1_000_000, run_id=plan.run_id)
    written = sum(
        len(json.dumps(call.prompt).encode()) * call.n
        + sum(len(c.text.encode()) for c in call.completions)
        for call in calls
    )
    return sum(call.n for call in calls), written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="samples in all (1000)")
    parser.add_argument("--n", type=int, default=10, help="samples per problem (10)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per sample (64)")
    args = parser.parse_args()
    suite = SUITE.format(size=max(1, args.samples // args.n))
    strategy = f"self-consistency:n={args.n},max_tokens={args.max_tokens}"
    samples = SampleStore()
    sizes = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, keep in (("texts", True), ("usage only", False)):
            ledger = Ledger(Path(folder) / f"{name}.db", log_texts=keep)
            drawn, written = bench_into(ledger, suite, strategy, samples)
            ledger.close()
            sizes[name] = vacuumed_size(ledger.path) * 1000 / drawn
            print(f"{name:>10}: {drawn} samples, {sizes[name] / 1024:.1f} KiB per 1,000 samples")
            if keep:
                plain = written * 1000 / drawn / 1024
                print(f"{'':>10}  (as plain text, a prompt once per sample: {plain:.1f} KiB)")
    print(f"ratio texts / usage only: {sizes['texts'] / sizes['usage only']:.2f}x")
    print(f"thinktank {thinktank.__version__}; {strategy} on {suite}")


if __name__ == "__main__":
    main()
