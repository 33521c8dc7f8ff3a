"""Shared fixtures: the real embedded models, loaded once per test session."""

from __future__ import annotations

import pytest

from thinktank.models import load_model


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Each test gets its own THINKTANK_HOME, so ledgers never mix."""
    home = tmp_path / "home"
    monkeypatch.setenv("THINKTANK_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def smollm2():
    return load_model("smollm2")


@pytest.fixture(scope="session")
def gemma():
    return load_model("gemma3-270m")


#: A chat prompt the embedded model answers in a few tokens.
SUM_PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]
