"""Search with and without KV prefix reuse on the embedded model.

Runs the same searches (same problems, same seeds) on SmolLM2 loaded twice in
one process: once with the prefix cache off (every step prefills its whole
prompt: the problem and every step before it), then with it on (a child's
prompt copies its parent's cached cells and prefills only what is new). Prints
the tokens llama.cpp computed (prefill + sampled), the prompt tokens the ledger
marks as cached, the share of prompt tokens prefilled, and wall time, with
ratios reuse / no reuse.

    .venv/bin/python benchmarks/search_prefix_reuse.py [--problems 8] [--cache 8]
"""

from __future__ import annotations

import argparse
import time

from thinktank.bench.suites import load_suite
from thinktank.meter import Meter
from thinktank.models import MODELS
from thinktank.models.llamacpp import LlamaCppModel
from thinktank.strategies import Context, build_strategy

SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=3"
STRATEGIES = (
    "beam:beams=4,expand=4,max_tokens=128",
    "particle-filter:particles=8,max_tokens=128",
    "tree-search:rollouts=16,max_tokens=128",
)


def run(model: LlamaCppModel, strategy: str, problems: list) -> dict[str, float]:
    """Totals of one strategy over the problems on ``model``."""
    before = (model.stats.prefill_tokens, model.stats.sampled_tokens)
    meter_cached = meter_prompt = 0
    started = time.perf_counter()
    for i, task in enumerate(problems):
        meter = Meter()
        build_strategy(strategy).solve(task.problem, Context(model, meter, seed=i))
        meter_cached += meter.usage.cached_tokens
        meter_prompt += meter.usage.prompt_tokens
    seconds = time.perf_counter() - started
    prefill = model.stats.prefill_tokens - before[0]
    sampled = model.stats.sampled_tokens - before[1]
    return {
        "computed": prefill + sampled,
        "prefill": prefill,
        "sampled": sampled,
        "ledger_prompt": meter_prompt,
        "ledger_cached": meter_cached,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--cache", type=int, default=None, help="prefix cache entries (reuse)")
    parser.add_argument("--strategy", action="append", help="strategy specs (default: three)")
    args = parser.parse_args()
    problems = load_suite(SUITE.format(size=args.problems)).tasks
    path = MODELS["smollm2"].load().path
    results: dict[str, dict[str, dict[str, float]]] = {}
    settings = {"no reuse": 0, "reuse": args.cache}
    for label, cache in settings.items():
        options = {} if cache is None else {"prefix_cache": cache}
        model = LlamaCppModel(path, name="smollm2", chat=True, **options)
        for strategy in args.strategy or STRATEGIES:
            results.setdefault(strategy, {})[label] = run(model, strategy, problems)
        model.close()
    print(f"{len(problems)} chain_sum problems, SmolLM2-135M, seeds 0..{len(problems) - 1}\n")
    header = ("strategy", "setting", "computed", "prefill", "sampled", "ledger cached/prompt",
              "prefilled", "seconds", "ms/token")  # fmt: skip
    print("{:46} {:9} {:>9} {:>8} {:>8} {:>21} {:>9} {:>8} {:>8}".format(*header))
    for strategy, by_setting in results.items():
        for label, r in by_setting.items():
            print(f"{strategy:46} {label:9} {r['computed']:9.0f} {r['prefill']:8.0f} "
                  f"{r['sampled']:8.0f} {r['ledger_cached']:10.0f}/{r['ledger_prompt']:<10.0f} "
                  f"{r['prefill'] / r['ledger_prompt']:9.2f} {r['seconds']:8.1f} "
                  f"{1000 * r['seconds'] / r['computed']:8.2f}")  # fmt: skip
        reuse, none = by_setting["reuse"], by_setting["no reuse"]
        print(f"{'':46} ratio     {reuse['computed'] / none['computed']:9.2f} "
              f"{reuse['prefill'] / none['prefill']:8.2f} {'':8} {'':21} {'':9} "
              f"{reuse['seconds'] / none['seconds']:8.2f}")  # fmt: skip
    print(
        "\nThe runs' samples drift apart (what the batch and the KV cache hold shifts"
        "\nthe logits a little), so they write different amounts; 'prefilled' (share"
        "\nof the prompt tokens prefilled) and ms/token compare them per unit of work."
    )


if __name__ == "__main__":
    main()
