"""Plugins by entry point: a real plugin package (a module and its ``*.dist-info``
with ``entry_points.txt``, as pip installs one) on ``sys.path``, used by name from
Python, the real CLI, a real server (only when its operator allows it) and Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import thinktank
from thinktank.bench.suites import load_suite
from thinktank.errors import SpecError
from thinktank.ledger import Ledger
from thinktank.models import listings
from thinktank.plugins import PluginError
from thinktank.resolver import Resolver, ServedResolver
from thinktank.server import create_app
from thinktank.strategies import STRATEGIES, strategy_class

from .conftest import RunningServer

PLUGIN_SOURCE = '''
from dataclasses import dataclass
from typing import ClassVar

from thinktank.models import load_model
from thinktank.problem import Problem, Task
from thinktank.solution import Solution
from thinktank.strategies import Context, Strategy
from thinktank.strategies.sampling import SamplingOptions, sample_candidates


@dataclass
class FirstSample(SamplingOptions, Strategy):
    """Answers with its one sample."""

    name: ClassVar[str] = "first-sample"
    summary: ClassVar[str] = "one sample, its answer, from a plugin"
    example: ClassVar[str] = "first-sample:max_tokens=64"

    def solve(self, problem: Problem, ctx: Context) -> Solution:
        candidates = sample_candidates(problem, ctx, 1, self.sampling(ctx.model, problem.kind))
        return Solution(answer=candidates[0].answer, candidates=candidates)


def sums(rest: str) -> list[Task]:
    """``sums:N``: N additions of small numbers."""
    return [Task(Problem(f"sum-{i}", f"What is {i} + 1?"), str(i + 1)) for i in range(int(rest))]


def alias(spec: str):
    """Another name for a model: alias:SPEC loads SPEC."""
    return load_model(spec.partition(":")[2])


class Lengthy:
    """Scores longer candidates higher."""

    name: ClassVar[str] = "lengthy"

    def score(self, problem, candidates, ctx):
        return [min(1.0, len(c.text) / 100) for c in candidates]


class HalfReward:
    name: ClassVar[str] = "half"

    def values(self, problem, partials, ctx):
        return [0.5] * len(partials)
'''

ENTRY_POINTS = {
    "thinktank.strategies": {"first-sample": "tt_first:FirstSample"},
    "thinktank.suites": {"sums": "tt_first:sums"},
    "thinktank.models": {"alias": "tt_first:alias"},
    "thinktank.verifiers": {"lengthy": "tt_first:Lengthy"},
    "thinktank.process_rewards": {"half": "tt_first:HalfReward"},
}


def make_plugin(root: Path, package: str, module: str, source: str, groups: dict) -> Path:
    """A plugin package as installed: ``module.py`` and its ``PACKAGE-0.1.dist-info``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(source)
    info = root / f"{package.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items()) + "\n"
        for group, points in groups.items()
    ))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    return make_plugin(tmp_path_factory.mktemp("site"), "tt-first", "tt_first",
                       PLUGIN_SOURCE, ENTRY_POINTS)  # fmt: skip


@pytest.fixture
def installed(plugin_path, monkeypatch) -> Path:
    """The plugin importable here and in the processes these tests start."""
    monkeypatch.syspath_prepend(str(plugin_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(plugin_path),
                       os.environ.get("PYTHONPATH")])))  # fmt: skip
    return plugin_path


def thinktank_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thinktank", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_a_plugin_strategy_solves_from_python(installed, smollm2):
    assert "first-sample" in STRATEGIES and "first-sample" in list(STRATEGIES)
    solution = thinktank.solve("What is 2 + 3?", strategy="first-sample:max_tokens=8", seed=1)
    assert solution.strategy == "first-sample:max_tokens=8"
    assert len(solution.candidates) == 1 and solution.usage.completions == 1


def test_plugins_of_every_kind_are_found_by_name(installed, smollm2):
    assert "alias:SPEC" in [row.spec for row in listings()]
    solution = thinktank.solve("2 + 3?", model="alias:smollm2", strategy="single:max_tokens=4")
    assert solution.model == "smollm2" and solution.usage.completions == 1
    resolver = Resolver()
    assert type(resolver.verifier("lengthy")).__name__ == "Lengthy"
    assert type(resolver.process_reward("half", None)).__name__ == "HalfReward"
    suite = load_suite("sums:3")
    assert [task.reference for task in suite.tasks] == ["1", "2", "3"]
    # A server's requests name no plugin verifier or process reward.
    served = ServedResolver({"smollm2": smollm2})
    for reference in [("verifier", "lengthy"), ("process-reward", "half")]:
        with pytest.raises(SpecError, match="plugin"):
            served.check([reference])


def test_the_cli_lists_and_runs_a_plugin_strategy(installed, isolated_home):
    listed = thinktank_cli("strategies", "--json")
    assert listed.returncode == 0, listed.stderr
    names = {s["name"]: s["plugin"] for s in json.loads(listed.stdout)["strategies"]}
    assert names["first-sample"] is True and names["single"] is False
    models = thinktank_cli("models", "--json")
    assert "alias:SPEC" in [m["name"] for m in json.loads(models.stdout)["models"]]
    done = thinktank_cli("solve", "What is 2 + 3?", "--strategy", "first-sample:max_tokens=8",
                         "--seed", "1", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["strategy"] == "first-sample:max_tokens=8"
    assert len(payload["candidates"]) == 1


def _ask(running: RunningServer, strategy: str) -> httpx.Response:
    body = {"model": f"{strategy}/smollm2", "messages": [{"role": "user", "content": "2+3?"}]}
    return httpx.post(f"{running.url}/chat/completions", json=body, timeout=120)


def test_a_server_serves_a_plugin_strategy_only_when_its_operator_allows_it(installed, smollm2):
    running = RunningServer(create_app([smollm2]))
    try:
        refused = _ask(running, "first-sample:max_tokens=4")
        assert refused.status_code == 400, refused.text
        assert "not served here" in refused.json()["error"]["message"]
        models = httpx.get(f"{running.url}/models", timeout=30).json()
        assert not any(m["id"].startswith("first-sample") for m in models["data"])
    finally:
        running.close()
    running = RunningServer(create_app([smollm2], strategies=["single", "first-sample"]))
    try:
        served = _ask(running, "first-sample:max_tokens=4")
        assert served.status_code == 200, served.text
        assert served.json()["thinktank"]["strategy"] == "first-sample:max_tokens=4"
    finally:
        running.close()


def test_ray_workers_find_a_plugin_strategy_and_suite(installed, isolated_home):
    done = thinktank_cli("bench", "--suite", "sums:2", "-s", "first-sample:max_tokens=8",
                         "--executor", "ray", "--concurrency", "1", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = Ledger(isolated_home / "ledger.db").results(json.loads(done.stdout)["run_id"])
    assert sorted(r.problem_id for r in results) == ["sum-0", "sum-1"]
    assert {r.strategy for r in results} == {"first-sample:max_tokens=8"}


@pytest.fixture
def broken(tmp_path, monkeypatch) -> Path:
    """A plugin whose module fails to import, installed beside the good one."""
    source = "import tt_no_such_module\n"
    root = make_plugin(tmp_path / "broken", "tt-broken", "tt_broken", source,
                       {"thinktank.strategies": {"broken-one": "tt_broken:Strategy"}})  # fmt: skip
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", str(root))
    return root


def test_a_broken_plugin_is_an_error_naming_it(broken):
    expected = r"plugin strategy 'broken-one' \(tt_broken:Strategy, from package tt-broken\)"
    with pytest.raises(PluginError, match=expected + " failed to load: ModuleNotFoundError"):
        strategy_class("broken-one")
    assert strategy_class("single").name == "single"  # the built-ins still work
    listed = thinktank_cli("strategies")
    assert listed.returncode == 2
    assert "failed to load" in listed.stderr and "tt-broken" in listed.stderr
    assert "Traceback" not in listed.stderr


def test_a_plugin_taking_a_built_in_name_is_refused(tmp_path, monkeypatch):
    root = make_plugin(tmp_path / "clash", "tt-clash", "tt_clash", PLUGIN_SOURCE,
                       {"thinktank.strategies": {"single": "tt_clash:FirstSample"},
                        "thinktank.models": {"gguf": "tt_clash:alias"}})  # fmt: skip
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(PluginError, match=r"'single' .*from package tt-clash.* built-in"):
        list(STRATEGIES)
    assert strategy_class("single").__module__ == "thinktank.strategies.sampling"
    with pytest.raises(PluginError, match=r"'gguf' .*built-in"):
        listings()
