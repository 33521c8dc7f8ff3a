"""Answer extraction against hand-labelled real model outputs: precision and recall per kind.

Each file in tests/data/ holds outputs the embedded models really wrote, one JSON object
a line: the question, the model's ``text``, and ``stated_answer``, the answer the text
states as final, read by hand (null when it states none; for code, the function the
model wrote). ``split`` says whether the extractor was tuned on it (``dev``) or not
(``held-out``). For every file, per kind and per split this prints:

- precision: of the answers extracted, the share equal to the label;
- recall: of the outputs that state an answer, the share extracted correctly;
- missed: of the outputs that state an answer, the share where no answer came back;
- invented: of the outputs that state none, the share where an answer came back.

"Equal" is `thinktank.verify.equivalent` for math, text and choice (what a vote or a grader
uses) and the same code, line for line, for code.

    .venv/bin/python benchmarks/extraction.py            # the tables (no model runs)
    .venv/bin/python benchmarks/extraction.py generate   # draw new unlabelled outputs

``generate`` writes ``/tmp/extraction/*.jsonl`` with ``stated_answer`` missing: read every
text and write its label by hand before moving a file into tests/data/.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from thinktank import load_model
from thinktank.bench.suites import load_suite
from thinktank.models.base import Sampling
from thinktank.problem import KINDS, Kind, Problem, Task
from thinktank.prompts import PROMPT_VARIANTS, build_prompt, stop_strings
from thinktank.verify import answer_key, equivalent, extract_answer

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SPLITS = ("dev", "held-out")


@dataclass(frozen=True)
class Labelled:
    """One labelled output."""

    file: str
    kind: Kind
    split: str
    text: str
    stated_answer: str | None


def load_labelled(folder: Path = DATA) -> list[Labelled]:
    """Every labelled output under ``folder`` (files without a split are dev: the
    extractor was tuned on them)."""
    records = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                kind, split = row.get("kind", "math"), row.get("split", "dev")
                records.append(Labelled(path.stem, kind, split, row["text"], row["stated_answer"]))
    return records


def same_answer(extracted: str, label: str, kind: Kind) -> bool:
    """Whether an extracted answer is the labelled one."""
    if kind == "code":
        return answer_key(extracted, kind) == answer_key(label, kind)
    return equivalent(extracted, label, kind)


@dataclass(frozen=True)
class Scores:
    outputs: int
    stated: int
    extracted: int
    right: int
    missed: int
    invented: int

    @property
    def precision(self) -> float:
        return self.right / self.extracted if self.extracted else float("nan")

    @property
    def recall(self) -> float:
        return self.right / self.stated if self.stated else float("nan")


def score(records: Iterable[Labelled]) -> Scores:
    """Precision, recall, misses and inventions of the extractor over ``records``."""
    outputs = stated = extracted = right = missed = invented = 0
    for record in records:
        answer = extract_answer(record.text, record.kind)
        outputs += 1
        stated += record.stated_answer is not None
        extracted += answer is not None
        if record.stated_answer is None:
            invented += answer is not None
        elif answer is None:
            missed += 1
        else:
            right += same_answer(answer, record.stated_answer, record.kind)
    return Scores(outputs, stated, extracted, right, missed, invented)


def _row(name: str, scores: Scores) -> str:
    missed = scores.missed / scores.stated if scores.stated else float("nan")
    empty = scores.outputs - scores.stated
    invented = scores.invented / empty if empty else float("nan")
    return (
        f"| {name} | {scores.outputs} | {scores.stated} | {scores.precision:.2f} "
        f"| {scores.recall:.2f} | {missed:.2f} | {invented:.2f} |"
    )


def report(records: Sequence[Labelled]) -> str:
    """The Markdown tables: per file, then per kind and split."""
    header = (
        "| {} | outputs | stating an answer | precision | recall | missed | invented |\n"
        "|---|---|---|---|---|---|---|"
    )
    lines = [header.format("file (split)")]
    for file in sorted({r.file for r in records}):
        for split in SPLITS:
            chosen = [r for r in records if r.file == file and r.split == split]
            if chosen:
                lines.append(_row(f"{file} ({split})", score(chosen)))
    lines += ["", header.format("kind (split)")]
    for kind in KINDS:
        of_kind = [r for r in records if r.kind == kind]
        for split in (*SPLITS, "all"):
            chosen = [r for r in of_kind if split in ("all", r.split)]
            if chosen:
                lines.append(_row(f"{kind} ({split})", score(chosen)))
    return "\n".join(lines)


# What `generate` drew: (file, model, suite, max_tokens). Seeds and sizes are
# in the specs; `choice:` turns a suite into four-option multiple choice (`as_choice`).
GENERATED: tuple[tuple[str, str, str, int], ...] = (
    ("smollm2_basic_arithmetic", "smollm2",
     "rg:basic_arithmetic?min_terms=2&max_terms=3&min_digits=1&max_digits=2&size=6&seed=11", 100),
    ("smollm2_leg_counting", "smollm2",
     "rg:leg_counting?min_animals=1&max_animals=2&size=5&seed=12", 100),
    ("gemma3_chain_sum", "gemma3-270m",
     "rg:chain_sum?min_terms=2&max_terms=3&min_digits=1&max_digits=2&size=8&seed=13", 100),
    ("gemma3_products", "gemma3-270m",
     "rg:products?min_terms=2&max_terms=2&min_digits=1&max_digits=2&size=6&seed=14", 100),
    ("smollm2_family_relationships", "smollm2", "rg:family_relationships?size=6&seed=15", 100),
    ("gemma3_family_relationships", "gemma3-270m", "rg:family_relationships?size=6&seed=16", 100),
    ("smollm2_syllogism", "smollm2", "rg:syllogism?size=4&seed=17", 100),
    ("smollm2_choice", "smollm2",
     "choice:rg:family_relationships?size=4&seed=18 + rg:chain_sum?min_terms=2&max_terms=2"
     "&min_digits=1&max_digits=1&size=4&seed=18", 100),
    ("gemma3_choice", "gemma3-270m",
     "choice:rg:family_relationships?size=4&seed=19 + rg:chain_sum?min_terms=2&max_terms=2"
     "&min_digits=1&max_digits=1&size=4&seed=19", 100),
    ("smollm2_humaneval", "smollm2", "humaneval?size=5", 160),
    ("gemma3_humaneval", "gemma3-270m", "humaneval?size=6", 120),
    ("smollm2_general_qa", "smollm2", "qa", 60),
    ("gemma3_general_qa", "gemma3-270m", "qa", 60),
)  # fmt: skip
#: The ``qa`` suite: questions answered in a word or two, which reasoning-gym lacks.
GENERAL_QUESTIONS = (
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the largest planet in the solar system?", "Jupiter"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("What colour is the sky on a clear day?", "blue"),
    ("What is frozen water called?", "ice"),
    ("Which animal says moo?", "cow"),
    ("What is the opposite of hot?", "cold"),
    ("What gas do plants take in from the air?", "carbon dioxide"),
    ("On which continent is Egypt?", "Africa"),
)
SAMPLES_PER_QUESTION = 4
TEMPERATURE = 0.8


def as_choice(tasks: Sequence[Task], seed: int) -> list[Task]:
    """Each task as a four-option question: its answer and three other answers of the
    suite (numbers: nearby numbers), shuffled and lettered (A)-(D)."""
    rng = random.Random(seed)
    answers = sorted({t.reference for t in tasks})
    choices = []
    for task in tasks:
        if re.fullmatch(r"-?\d+", task.reference):
            gold = int(task.reference)
            pool = [str(gold + d) for d in (-3, -2, -1, 1, 2, 3)]
        else:
            pool = [a for a in answers if a != task.reference] + ["uncle", "niece", "cousin"]
        options = [task.reference, *rng.sample(sorted(set(pool) - {task.reference}), 3)]
        rng.shuffle(options)
        question = task.problem.prompt.replace(" Answer with a single word.", "").rstrip()
        lettered = " ".join(f"({'ABCD'[i]}) {option}" for i, option in enumerate(options))
        problem = replace(task.problem, prompt=f"{question}\n{lettered}", kind="choice")
        choices.append(Task(problem, "ABCD"[options.index(task.reference)]))
    return choices


def generate(out: Path, only: Sequence[str] = ()) -> None:
    """Draw `SAMPLES_PER_QUESTION` outputs per question for every set of `GENERATED` (or
    the ones ``only`` names), each question under the next prompt variant in turn; write
    them unlabelled."""
    out.mkdir(parents=True, exist_ok=True)
    for number, (file, model_name, spec, max_tokens) in enumerate(GENERATED):
        model = load_model(model_name)
        if only and file not in only:
            continue
        if spec == "qa":
            tasks = [
                Task(Problem(f"qa-{i}", question, "text"), answer)
                for i, (question, answer) in enumerate(GENERAL_QUESTIONS)
            ]
        elif spec.startswith("choice:"):
            tasks = as_choice(load_suite(spec.removeprefix("choice:")).tasks, seed=number)
        else:
            tasks = load_suite(spec).tasks
        rows = []
        for index, task in enumerate(tasks):
            variant = PROMPT_VARIANTS[index % len(PROMPT_VARIANTS)]
            problem = task.problem
            sampling = Sampling(
                temperature=TEMPERATURE,
                top_p=0.95,
                max_tokens=max_tokens,
                seed=1000 * number + index,
                stop=stop_strings(problem, model),
            )
            completions = model.generate(
                build_prompt(problem, model, variant=variant), SAMPLES_PER_QUESTION, sampling
            )
            for sample, completion in enumerate(completions):
                rows.append(
                    {
                        "id": f"{index}-{sample}",
                        "model": model_name,
                        "suite": spec,
                        "kind": problem.kind,
                        "variant": variant,
                        "split": SPLITS[index % 2],
                        "question": problem.prompt,
                        "reference": task.reference,
                        "text": completion.text,
                    }
                )
        (out / f"{file}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{file}: {len(rows)} outputs", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=("report", "generate"), default="report")
    parser.add_argument("--out", type=Path, default=Path("/tmp/extraction"))
    parser.add_argument("--only", action="append", default=[], help="generate this set only")
    args = parser.parse_args()
    if args.command == "generate":
        generate(args.out, args.only)
    else:
        print(report(load_labelled()))


if __name__ == "__main__":
    main()
