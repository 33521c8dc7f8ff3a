"""Model names key results and shared samples: distinct models never share a name, and
one model named twice in a run is refused. On real copies of the embedded GGUF file."""

from __future__ import annotations

import shutil

import pytest

import thinktank
from thinktank.errors import SpecError
from thinktank.ledger import Ledger
from thinktank.models import _file_name, load_model
from thinktank.tune import tune

SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size=1&seed=1"


@pytest.fixture(scope="module")
def twins(tmp_path_factory, smollm2):
    """Two copies of SmolLM2's file, both called model.gguf, in two folders."""
    root = tmp_path_factory.mktemp("twins")
    copies = []
    for folder in ("a", "b"):
        (root / folder).mkdir()
        copies.append(shutil.copyfile(smollm2.path, root / folder / "model.gguf"))
    return copies


def test_two_files_of_one_file_name_are_two_models_with_a_row_each(twins, tmp_path):
    first, second = (load_model(f"gguf:{path}") for path in twins)
    assert first.name != second.name
    assert first.name.startswith("model-") and second.name.startswith("model-")
    assert load_model(f"gguf:{twins[0]}").name == first.name  # stable
    # Read as a chat model, the same file prompts differently: another model.
    assert _file_name(twins[0], chat=True) != _file_name(twins[0], chat=False)

    ledger = Ledger(tmp_path / "ledger.db")
    outcome = thinktank.benchmark(SUITE, ["single:max_tokens=4"], [first, second],
                                  ledger=ledger, concurrency=1)  # fmt: skip
    rows = ledger.results(outcome.run_id)
    assert sorted(r.model for r in rows) == sorted([first.name, second.name])
    assert [s.model for s in outcome.summaries] == [first.name, second.name]
    assert {c.model for c in ledger.calls(outcome.run_id)} == {first.name, second.name}


def test_one_model_named_twice_in_a_run_is_refused(twins, tmp_path):
    link = tmp_path / "link.gguf"
    link.symlink_to(twins[0])
    assert load_model(f"gguf:{link}").name == load_model(f"gguf:{twins[0]}").name
    ledger = Ledger(tmp_path / "ledger.db")
    for models in ([f"gguf:{twins[0]}", f"gguf:{link}"], ["smollm2", "smollm2"]):
        with pytest.raises(SpecError, match="are the same model"):
            thinktank.benchmark(SUITE, ["single:max_tokens=4"], models, ledger=ledger)
        with pytest.raises(SpecError, match="name each model once"):
            tune(SUITE.replace("size=1", "size=2"), models, ["single:max_tokens=4"],
                 ledger=ledger, out_dir=tmp_path / "t")  # fmt: skip
    assert ledger.recent_runs() == []  # refused before any run started
