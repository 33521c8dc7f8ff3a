"""Does the same `thinktank bench` command give the same numbers twice? (issue 17)

Runs one seeded bench workload (self-consistency@8 on easy chain_sum, the
seeds fixed per problem) several times, on the embedded SmolLM2 with a KV
stream per sequence (the default) and with one unified KV cache (the old
layout), interleaved in one process:

- three runs at concurrency 4 (`thinktank bench`'s default): the second and
  third find the first's prompts in the prefix cache and other problems beside
  theirs in the batch;
- one at concurrency 1, one with 16 samples a problem (its first 8 are the
  same seeded samples), and one in a fresh process;
- two fresh processes at concurrency 1, compared with each other.

The others are compared with the first run of their layout, sample by sample,
token by token: how many samples differ, where they first diverge, and how far
the accuracy moves. The concurrency-4 runs also give the layouts' throughput, as a
ratio per pair of runs.

    .venv/bin/python benchmarks/reproducibility.py [--problems 30] [--max-tokens 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from thinktank.bench.runner import plan_bench, run_bench
from thinktank.ledger import Ledger
from thinktank.meter import SampleStore
from thinktank.models import load_model
from thinktank.models.base import Completion, Model, Prompt, Sampling
from thinktank.models.llamacpp import LlamaCppModel

SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed=7"
LAYOUTS = {"streams": True, "unified": False}

#: A sample: (prompt, sampling options and seed, index in the seed's stream).
SampleKey = tuple[str, str, int]


class RecordingStore(SampleStore):
    """Shares samples as the bench does, and keeps every sample's tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[SampleKey, tuple[int, ...]] = {}

    def replay_or_draw(self, model: Model, prompt: Prompt, n: int, sampling: Sampling,
                       draw) -> tuple[list[Completion], float]:  # fmt: skip
        completions, seconds = super().replay_or_draw(model, prompt, n, sampling, draw)
        for index, completion in enumerate(completions, start=sampling.sample_offset):
            options = repr(sampling.with_(sample_offset=0))
            self.tokens[(repr(prompt), options, index)] = completion.token_ids
        return completions, seconds


@dataclass
class Run:
    accuracy: float
    tokens: dict[SampleKey, tuple[int, ...]]
    seconds: float
    sampled: int  # tokens the model sampled

    def to_json(self) -> str:
        samples = [[*key, list(tokens)] for key, tokens in self.tokens.items()]
        return json.dumps({"accuracy": self.accuracy, "samples": samples,
                           "seconds": self.seconds, "sampled": self.sampled})  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Run:
        data = json.loads(text)
        tokens = {(p, options, index): tuple(t) for p, options, index, t in data["samples"]}
        return cls(data["accuracy"], tokens, data["seconds"], data["sampled"])


def embedded(spec: str, kv_streams: bool) -> LlamaCppModel:
    """An embedded model as the registry loads it, on the KV layout given."""
    registry = load_model(spec)
    model = LlamaCppModel(registry.path, name=registry.name,
                          chat=registry.capabilities.chat, kv_streams=kv_streams)  # fmt: skip
    model.price, model.sampling_profile = registry.price, registry.sampling_profile
    return model


def bench(model: LlamaCppModel, suite: str, strategy: str, concurrency: int) -> Run:
    """One fresh bench run (its own in-memory ledger), its samples recorded."""
    ledger, store = Ledger(":memory:"), RecordingStore()
    plan = plan_bench(suite, [strategy], [model], ledger=ledger)
    before, started = model.stats.sampled_tokens, time.perf_counter()
    results = run_bench(plan, ledger=ledger, concurrency=concurrency, samples=store)
    seconds = time.perf_counter() - started
    accuracy = sum(r.score for r in results) / len(results)
    return Run(accuracy, store.tokens, seconds, model.stats.sampled_tokens - before)


def first_difference(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    for position, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return position
    return min(len(a), len(b))


def divergence(reference: Run, other: Run) -> tuple[int, list[int]]:
    """How many samples both runs drew, and where each that differs first does."""
    shared = reference.tokens.keys() & other.tokens.keys()
    positions = [
        first_difference(reference.tokens[key], other.tokens[key])
        for key in shared
        if reference.tokens[key] != other.tokens[key]
    ]
    return len(shared), sorted(positions)


def describe(name: str, reference: Run, other: Run, compare_accuracy: bool = True) -> str:
    shared, positions = divergence(reference, other)
    if not shared:
        return f"  {name:<28} no samples in common (the code or its defaults changed meanwhile?)"
    where = (f"first divergence at token {positions[0]} (median {statistics.median(positions):g})"
             if positions else "identical")  # fmt: skip
    accuracy = (f"accuracy {other.accuracy:.3f} (delta {other.accuracy - reference.accuracy:+.3f})"
                if compare_accuracy else f"(SC@16 accuracy {other.accuracy:.3f})")  # fmt: skip
    return f"  {name:<28} {len(positions):>4}/{shared} samples differ, {where}; {accuracy}"


def child(spec: str, layout: str, suite: str, strategy: str, concurrency: int) -> Run:
    """The first run of ``layout`` again, in a fresh process."""
    command = [sys.executable, __file__, "--child", layout, "--model", spec, "--suite", suite,
               "--strategy", strategy, "--concurrency", str(concurrency)]  # fmt: skip
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return Run.from_json(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2", help="an embedded model")
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="runs at concurrency 4")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--suite", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=LAYOUTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    suite = args.suite or SUITE.format(size=args.problems)
    strategy = args.strategy or f"self-consistency:n=8,max_tokens={args.max_tokens}"
    if args.child:
        model = embedded(args.model, LAYOUTS[args.child])
        print(bench(model, suite, strategy, args.concurrency).to_json())
        return

    models = {layout: embedded(args.model, streams) for layout, streams in LAYOUTS.items()}
    for model in models.values():  # its context allocated before any run is timed
        model.generate("Hello", 1, Sampling(max_tokens=1))
    runs: dict[str, list[Run]] = {layout: [] for layout in LAYOUTS}
    for repeat in range(args.repeats):  # interleaved: the machine's load hits both alike
        for layout, model in models.items():
            runs[layout].append(bench(model, suite, strategy, args.concurrency))
            run = runs[layout][-1]
            print(f"{layout} run {repeat + 1}: accuracy {run.accuracy:.3f}, {run.sampled} tokens"
                  f" in {run.seconds:.1f} s", flush=True)  # fmt: skip
    # (what, the run compared with, the run compared, whether it draws 8 samples)
    comparisons: dict[str, list[tuple[str, Run, Run, bool]]] = {}
    for layout, model in models.items():
        first = runs[layout][0]
        sixteen = strategy.replace("n=8", "n=16")
        comparisons[layout] = [
            (f"run {number}, same process", first, run, True)
            for number, run in enumerate(runs[layout][1:], start=2)
        ] + [
            ("concurrency 1", first, bench(model, suite, strategy, 1), True),
            ("16 samples (first 8)", first, bench(model, suite, sixteen, args.concurrency), False),
            ("a fresh process", first,
             child(args.model, layout, suite, strategy, args.concurrency), True),
            ("2 fresh processes, conc. 1", child(args.model, layout, suite, strategy, 1),
             child(args.model, layout, suite, strategy, 1), True),
        ]  # fmt: skip
        print(f"{layout}: other runs done", flush=True)

    print(f"\n{args.model}, {strategy} on {suite}, concurrency {args.concurrency}")
    for layout in LAYOUTS:
        print(f"{layout}: first run accuracy {runs[layout][0].accuracy:.3f}")
        for name, reference, run, eight in comparisons[layout]:
            print(describe(name, reference, run, compare_accuracy=eight))
        accuracies = {run.accuracy for _, reference, run, eight in comparisons[layout] if eight}
        accuracies |= {reference.accuracy for _, reference, _, _ in comparisons[layout]}
        print(f"  accuracy range over its SC@8 runs: {min(accuracies):.3f}-{max(accuracies):.3f}")
    ratios = [
        (s.sampled / s.seconds) / (u.sampled / u.seconds)
        for s, u in zip(runs["streams"], runs["unified"], strict=True)
    ]
    print("throughput, streams / unified tok/s per pair of runs: "
          + ", ".join(f"{r:.2f}" for r in ratios)
          + f" (mean {statistics.mean(ratios):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
