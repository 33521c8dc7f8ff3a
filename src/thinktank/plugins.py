"""Plugins: installed packages that add strategies, model backends, verifiers, process
rewards or suites by declaring entry points (as ``llm`` plugins do).

Each kind is an entry-point group (`GROUPS`); an entry point's name is the name a spec
uses (a strategy's name, a model or suite spec's prefix before ``:``) and its object is
what the registry of that kind holds. Names are read from the installed metadata; an
object is imported only when its name is looked up or its kind is listed, once per
process. A plugin that fails to import, or that takes a built-in's name, is a
`PluginError` naming it and its package, never a traceback.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from importlib.metadata import EntryPoint, entry_points
from typing import Literal

from thinktank.errors import ThinktankError

Kind = Literal["strategy", "model", "verifier", "process-reward", "suite"]

#: The entry-point group of each kind of plugin.
GROUPS: dict[Kind, str] = {
    "strategy": "thinktank.strategies",
    "model": "thinktank.models",
    "verifier": "thinktank.verifiers",
    "process-reward": "thinktank.process_rewards",
    "suite": "thinktank.suites",
}


class PluginError(ThinktankError):
    """An installed plugin could not be used: it failed to import, or clashes."""


_loaded: dict[tuple[Kind, str], object] = {}
_loading = threading.Lock()


def plugin_names(kind: Kind) -> list[str]:
    """The names plugins declare for ``kind``, read from the installed metadata (nothing
    is imported)."""
    return list(dict.fromkeys(point.name for point in _entry_points(kind)))


def plugin(kind: Kind, name: str, builtins: Collection[str] = ()) -> object | None:
    """The object the plugin named ``name`` declares for ``kind``, imported on first use
    (None: no plugin has that name). ``builtins``: names it may not take."""
    points = [point for point in _entry_points(kind) if point.name == name]
    if not points:
        return None
    if name in builtins:
        raise PluginError(
            f"{_describe(kind, points[0])} takes the name of a built-in {kind}: the package"
            " must rename it (or uninstall it)"
        )
    if len(points) > 1:
        packages = ", ".join(_package(point) for point in points)
        raise PluginError(f"plugins from {packages} all declare the {kind} {name!r}")
    with _loading:
        if (kind, name) not in _loaded:
            try:
                _loaded[kind, name] = points[0].load()
            except Exception as exc:  # whatever a plugin's import raises: name the plugin
                raise PluginError(
                    f"{_describe(kind, points[0])} failed to load: {type(exc).__name__}: {exc}"
                ) from None
        return _loaded[kind, name]


def plugins(kind: Kind, builtins: Collection[str] = ()) -> dict[str, object]:
    """Every plugin of ``kind`` by name, imported (for listings)."""
    found = {name: plugin(kind, name, builtins) for name in plugin_names(kind)}
    return {name: value for name, value in found.items() if value is not None}


def refuse(kind: Kind, name: str, problem: str) -> PluginError:
    """The error for a plugin whose object is not what ``kind`` needs (``problem``)."""
    point = next(point for point in _entry_points(kind) if point.name == name)
    return PluginError(f"{_describe(kind, point)} is unusable: {problem}")


def _entry_points(kind: Kind) -> tuple[EntryPoint, ...]:
    return tuple(entry_points(group=GROUPS[kind]))


def _package(point: EntryPoint) -> str:
    return point.dist.name if point.dist is not None else "an unknown package"


def _describe(kind: Kind, point: EntryPoint) -> str:
    return f"plugin {kind} {point.name!r} ({point.value}, from package {_package(point)})"
