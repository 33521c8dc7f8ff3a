"""`thinktank strategies [NAME]` and `thinktank models`, run as a user runs them: every
option with its default and meaning, the table and --json listing the same rows."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from thinktank.models import listings, load_model
from thinktank.spec import describe_options
from thinktank.strategies import STRATEGIES, build_strategy

from .test_cli import thinktank


def table_rows(text: str) -> list[dict[str, str]]:
    """The first line of each row of the first table in ``text``, cell by cell under its
    headers (a row's wrapped lines, whose first cell is empty, are skipped)."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.strip() and set(line.strip()) == {"─"})
    header = lines[rule - 1]
    columns = [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    rows = []
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        if line[: columns[1][1]].strip():
            ends = [start for _, start in columns[1:]] + [len(line)]
            rows.append(
                {
                    name: line[start:end].strip()
                    for (name, start), end in zip(columns, ends, strict=True)
                }
            )
    return rows


def test_every_strategy_option_has_a_one_line_meaning_and_every_example_builds():
    for name, cls in STRATEGIES.items():
        options = describe_options(cls)
        assert [o.name for o in options if not o.meaning or "\n" in o.meaning] == [], name
        assert {o.name for o in options} == {f.name for f in dataclasses.fields(cls) if f.init}
        assert type(build_strategy(cls.example)) is cls, name


def test_a_strategy_in_full_shows_every_option_with_its_default(isolated_home):
    shown = thinktank("strategies", "deepconf", home=isolated_home)
    assert shown.returncode == 0, shown.stderr
    rows = {row["option"]: row for row in table_rows(shown.stdout)}
    described = json.loads(thinktank("strategies", "deepconf", "--json", home=isolated_home).stdout)
    # Its own options first, then the sampling options it inherits, as --json lists them.
    assert list(rows) == [o["name"] for o in described["options"]]
    assert list(rows)[:9] == [
        "warmup",
        "window",
        "keep",
        "mode",
        "measure",
        "top_logprobs",
        "confidence",
        "n",
        "temperature",
    ]
    defaults = {
        "n": "32",
        "warmup": "16",
        "window": "2048",
        "keep": "0.1",
        "mode": "online",
        "measure": "lowest",
        "top_logprobs": "20",
        "confidence": "top-k",
        "temperature": "None",
        "max_tokens": "None",
        "repetition_penalty": "None",
    }
    assert {name: rows[name]["default"] for name in defaults} == defaults
    assert rows["temperature"]["type"] == "float | None" and rows["keep"]["type"] == "float"
    assert all(row["meaning"] for row in rows.values())
    assert rows["keep"]["meaning"].startswith("share of traces kept")
    assert "example: deepconf:n=32,warmup=16,keep=0.9" in shown.stdout


def test_strategies_json_lists_the_rows_of_the_table(isolated_home):
    shown = thinktank("strategies", home=isolated_home)
    listed = json.loads(thinktank("strategies", "--json", home=isolated_home).stdout)
    rows = table_rows(shown.stdout)
    assert [(r["strategy"], r["what it does"]) for r in rows] == [
        (s["name"], s["summary"]) for s in listed["strategies"]
    ]
    assert len(rows) == len(STRATEGIES)
    cascade = json.loads(thinktank("strategies", "cascade", "--json", home=isolated_home).stdout)
    assert cascade in listed["strategies"]
    assert {o["name"]: o["default"] for o in cascade["options"]}["threshold"] == 0.5


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_an_unknown_strategy_name_is_one_clear_error_naming_close_ones(isolated_home, json_flag):
    result = thinktank("strategies", "self-consistensy", *json_flag, home=isolated_home)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "unknown strategy 'self-consistensy' (did you mean self-consistency" in message
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_models_table_and_json_list_the_same_models(isolated_home):
    shown = thinktank("models", home=isolated_home)
    listed = json.loads(thinktank("models", "--json", home=isolated_home).stdout)["models"]
    assert [row["model"] for row in table_rows(shown.stdout)] == [m["name"] for m in listed]
    models = {m["name"]: m for m in listed}
    assert set(models) == {
        "smollm2",
        "gemma3-270m",
        "torch:smollm2",
        "gguf:PATH[?chat=1]",
        "torch:PATH[?chat=1&weights=bfloat16]",
        "openai:MODEL@BASE_URL",
    }
    assert models["smollm2"]["backend"] == "llama.cpp"
    assert models["smollm2"]["price"]["output_per_mtok"] == 0.0269  # the shipped price book
    assert models["gemma3-270m"]["capabilities"]["chat"] is False
    assert models["torch:smollm2"]["capabilities"]["shared_cache"] is True
    assert models["gguf:PATH[?chat=1]"]["capabilities"]["chat"] is None  # the spec says
    assert models["openai:MODEL@BASE_URL"]["price"] is None
    for model in listed:
        assert model["pricing"] and model["pricing"] in " ".join(shown.stdout.split())


def test_the_listed_capabilities_are_those_of_the_loaded_models(smollm2):
    listed = {row.spec: row.capabilities for row in listings()}
    assert dataclasses.asdict(smollm2.capabilities) == listed["smollm2"]
    remote = load_model("openai:some-model@http://127.0.0.1:9/v1")  # no request is made
    assert dataclasses.asdict(remote.capabilities) == listed["openai:MODEL@BASE_URL"]
