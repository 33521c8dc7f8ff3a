"""Imports run one way (issue 20): core -> models -> meter -> answers -> strategies -> apps.

Every import statement in src/thinktank counts, wherever it is: at the top, inside a
function (a lazy import still runs, and still ties the modules together) and under
``if TYPE_CHECKING:`` (the type still names the module above). Importing a module
also runs its parent packages' ``__init__``; those implicit imports are not counted
(every module would then depend on ``thinktank/__init__.py``, which imports the API).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "thinktank"

#: Lowest first: a module may import its own layer (no cycles) and the layers below.
#: A module's exact name wins over a pattern.
LAYERS: dict[str, tuple[str, ...]] = {
    # Plugins: entry points read from the installed metadata (each kind's registry asks).
    "core": ("thinktank.errors", "thinktank.config", "thinktank.spec", "thinktank.plugins"),
    # The price book (models.prices) prices a model as it loads.
    "models": ("thinktank.models", "thinktank.models.*"),
    # Split by part: meter_budget, meter_usage, meter_replay, meter_progress, ledger_schema.
    "meter": ("thinktank.ledger", "thinktank.ledger_*", "thinktank.meter", "thinktank.meter_*"),
    "answers": (
        "thinktank.problem",
        "thinktank.solution",
        "thinktank.prompts",
        "thinktank.aggregate",
        "thinktank.verify",
        "thinktank.verify.*",
        "thinktank.router",
        "thinktank.resolver",
        "thinktank.economics",  # cost-of-pass; the price book it once held is models.prices
        # Suites are data (Tasks from installed datasets, checked by verify's harness):
        # the route strategy's router reads the problem texts of the runs it learns from.
        "thinktank.bench.suites",
    ),
    "strategies": ("thinktank.strategies", "thinktank.strategies.*"),
    "apps": (
        "thinktank",
        "thinktank.__main__",
        "thinktank.api",
        "thinktank.cli",
        "thinktank.cli.*",
        "thinktank.tune",
        "thinktank.bench",
        "thinktank.bench.*",
        "thinktank.server",
        "thinktank.server.*",
        "thinktank.view",
        "thinktank.view.*",
    ),
}


@dataclass(frozen=True)
class Import:
    """One import of a thinktank module by another, and where it is written."""

    source: str
    target: str
    path: Path
    line: int
    #: "at the top", "inside a function" or "under TYPE_CHECKING".
    where: str

    def __str__(self) -> str:
        return f"{self.source} imports {self.target} ({self.path}:{self.line}, {self.where})"


def module_paths(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, modules: Collection[str]) -> None:
        self.module, self.path, self.modules = module, path, modules
        self.where = "at the top"
        self.found: list[Import] = []

    def _nested(self, nodes: list[ast.stmt], where: str) -> None:
        """Visit ``nodes`` as written ``where`` (inside a function stays so)."""
        outer = self.where
        if outer == "at the top":
            self.where = where
        for node in nodes:
            self.visit(node)
        self.where = outer

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._nested(node.body, "inside a function")

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name != "TYPE_CHECKING":
            self.generic_visit(node)
            return
        self._nested(node.body, "under TYPE_CHECKING")
        for orelse in node.orelse:
            self.visit(orelse)

    def visit_Import(self, node: ast.Import) -> None:
        self._add([alias.name for alias in node.names], node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            package = self.module.split(".")
            if self.path.name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        names = [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
        self._add([name if name in self.modules else base for name in names] or [base], node)

    def _add(self, names: list[str], node: ast.stmt) -> None:
        for name in dict.fromkeys(names):  # from m import a, b: one import of m
            while name and name not in self.modules:  # thinktank.models.base.Model -> its module
                name = name.rpartition(".")[0]
            if name and name != self.module:
                self.found.append(Import(self.module, name, self.path, node.lineno, self.where))


def imports_of(module: str, path: Path, source: str, modules: Collection[str]) -> list[Import]:
    """The imports of modules in ``modules`` that ``source`` (module ``module``, the
    file ``path``) makes, wherever they are written."""
    visitor = _ImportVisitor(module, path, modules)
    visitor.visit(ast.parse(source, str(path)))
    return visitor.found


def package_imports() -> list[Import]:
    modules = module_paths()
    return [
        found
        for module, path in modules.items()
        for found in imports_of(module, path.relative_to(ROOT), path.read_text(), modules)
    ]


def layer_of(module: str) -> int | None:
    """The index in `LAYERS` of the layer ``module`` belongs to (None: in none)."""
    for exact in (True, False):
        for index, patterns in enumerate(LAYERS.values()):
            for pattern in patterns:
                if ("*" not in pattern) == exact and fnmatchcase(module, pattern):
                    return index
    return None


def runs_up(found: Import) -> bool:
    """Whether ``found`` imports a higher layer (a module in no layer is reported by
    `test_every_module_has_a_layer`)."""
    source, target = layer_of(found.source), layer_of(found.target)
    return source is not None and target is not None and source < target


def graph(imports: list[Import]) -> dict[str, dict[str, Import]]:
    edges: dict[str, dict[str, Import]] = {}
    for found in imports:
        edges.setdefault(found.source, {}).setdefault(found.target, found)
    return edges


def path_between(edges: dict[str, dict[str, Import]], start: str, goal: str) -> list[Import]:
    """The shortest chain of imports from ``start`` to ``goal`` (empty: none)."""
    came: dict[str, Import | None] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target, found in sorted(edges.get(module, {}).items()):
                if target == goal:
                    chain = [found]
                    while (step := came[chain[0].source]) is not None:
                        chain.insert(0, step)
                    return chain
                if target not in came:
                    came[target] = found
                    following.append(target)
        frontier = following
    return []


def cycles(imports: list[Import]) -> Iterator[list[Import]]:
    """One shortest cycle through each module on a cycle (a module on a cycle already
    shown is not shown again)."""
    edges, shown = graph(imports), set()
    for module in sorted(edges):
        if module not in shown and (cycle := path_between(edges, module, module)):
            shown.update(found.source for found in cycle)
            yield cycle


def _lines(items: list, indent: str = "  ") -> str:
    return "".join(f"\n{indent}{item}" for item in items)


def test_every_module_has_a_layer():
    if unplaced := [module for module in module_paths() if layer_of(module) is None]:
        pytest.fail(f"add these modules to a layer in LAYERS:{_lines(unplaced)}")


def test_no_module_imports_a_higher_layer():
    names = list(LAYERS)
    upward = [
        f"{found}: {names[layer_of(found.source)]} < {names[layer_of(found.target)]}"
        for found in package_imports()
        if runs_up(found)
    ]
    if upward:
        pytest.fail(f"imports must run down ({' < '.join(names)}):{_lines(upward)}")


def test_no_import_cycles():
    if found := list(cycles(package_imports())):
        pytest.fail("import cycles, each with the imports that make it:" + "".join(
            f"\n  {' -> '.join([cycle[0].source, *(i.target for i in cycle)])}"
            + _lines(cycle, indent="      ")
            for cycle in found
        ))  # fmt: skip


#: What strategies ask ``ctx.resolver`` for instead of importing (issue 20): the model
#: registry and its backends load models, the ledger opens files, and a server's
#: resolver allows only what its operator configured. ``thinktank.models.base`` (the
#: types) and ``thinktank.models.profiles`` (sampling defaults) load nothing.
RESOLVED_ONLY = (
    "thinktank.models",
    "thinktank.models.llamacpp*",
    "thinktank.models.openai*",
    "thinktank.models.torch*",
    "thinktank.ledger",
)


def test_strategies_reach_models_and_ledgers_only_through_the_resolver():
    reached = [
        found
        for found in package_imports()
        if fnmatchcase(found.source, "thinktank.strategies*")
        and any(fnmatchcase(found.target, pattern) for pattern in RESOLVED_ONLY)
    ]
    if reached:
        pytest.fail(f"strategies must ask ctx.resolver for these instead:{_lines(reached)}")


def test_a_strategy_context_is_the_scoring_context_verifiers_take():
    """Verifiers and process rewards take the verify layer's `ScoringContext`, not the
    strategies' `Context`; every strategy hands them a `Context`, so it must have each
    member, and each method must accept the protocol's arguments (more only with defaults)."""
    from thinktank.strategies.base import Context
    from thinktank.verify.verifiers import ScoringContext

    fields = {field.name: field.type for field in dataclasses.fields(Context)}
    for name, annotation in ScoringContext.__annotations__.items():
        assert fields.get(name) == annotation, f"Context.{name} is not a {annotation}"
    methods = [name for name, member in vars(ScoringContext).items()
               if inspect.isfunction(member) and not name.startswith("_")]  # fmt: skip
    assert methods
    for name in methods:
        wanted = inspect.signature(getattr(ScoringContext, name))
        given = inspect.signature(getattr(Context, name))
        for param in wanted.parameters.values():
            assert given.parameters.get(param.name) == param, f"Context.{name}: {param}"
        extra = [p for p in given.parameters.values() if p.name not in wanted.parameters]
        assert all(p.default is not p.empty for p in extra), f"Context.{name}: {extra}"
        returned = wanted.return_annotation.replace(ScoringContext.__name__, Context.__name__)
        assert given.return_annotation == returned, f"Context.{name} returns {returned}"


@pytest.mark.parametrize(
    ("module", "filename", "source", "expected"),
    [
        ("thinktank.a", "a.py", "from thinktank.b import Thing", [("thinktank.b", "at the top")]),
        ("thinktank.a", "a.py", "import thinktank.b.c", [("thinktank.b.c", "at the top")]),
        ("thinktank.b.c", "c.py", "from . import d", [("thinktank.b.d", "at the top")]),
        ("thinktank.b", "__init__.py", "from .c import x", [("thinktank.b.c", "at the top")]),
        ("thinktank.b.c", "c.py", "from .. import a", [("thinktank.a", "at the top")]),
        ("thinktank.a", "a.py", "def f():\n    from thinktank.b import c\n",
         [("thinktank.b.c", "inside a function")]),
        ("thinktank.a", "a.py",
         "if TYPE_CHECKING:\n    from thinktank.b import X\nelse:\n    import thinktank.b.d\n",
         [("thinktank.b", "under TYPE_CHECKING"), ("thinktank.b.d", "at the top")]),
        ("thinktank.a", "a.py", "class A:\n    def f(self):\n        if typing.TYPE_CHECKING:\n"
         "            import thinktank.b\n", [("thinktank.b", "inside a function")]),
        ("thinktank.a", "a.py", "import json\nfrom thinktank.a import y", []),
    ],
)  # fmt: skip
def test_imports_are_found_wherever_they_are_written(module, filename, source, expected):
    modules = ["thinktank", "thinktank.a", "thinktank.b", "thinktank.b.c", "thinktank.b.d"]
    found = imports_of(module, Path(filename), source, modules)
    assert [(i.target, i.where) for i in found] == expected
