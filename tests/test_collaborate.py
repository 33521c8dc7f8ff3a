"""Debate (ReConcile), Mixture-of-Agents and Learning from Peers on the real model."""

from __future__ import annotations

import pytest

import thinktank
from thinktank.aggregate import majority_vote
from thinktank.errors import ThinktankError
from thinktank.ledger import Ledger
from thinktank.meter import Budget
from thinktank.models.base import Sampling
from thinktank.solution import Candidate
from thinktank.strategies import build_strategy
from thinktank.strategies.collaborate import confidence, stated_confidence

from .conftest import SUM_PROMPT
from .test_bench import CountingModel

TINY = {
    "debate": "debate:agents=2,rounds=2,max_tokens=32",
    "mixture-of-agents": "mixture-of-agents:proposers=2,layers=2,max_tokens=32",
    "leap": "leap:paths=2,interval=12,max_tokens=40,summary_tokens=10",
}


class RecordingModel(CountingModel):
    """The real model, keeping every prompt it is sent."""

    def __init__(self, model):
        super().__init__(model)
        self.prompts: list = []

    def generate(self, prompt, n=1, sampling=None, **options):
        self.prompts.append(prompt)
        return super().generate(prompt, n, sampling, **options)


def _text(prompt) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("The answer is 12. Confidence: 0.8", 0.8), ("confidence 80%", 0.8),
     ("Confidence: 8/10", 0.8), ("The answer is 3.", None), ("CONFIDENCE: 1", 1.0)],
)  # fmt: skip
def test_stated_confidence(text, expected):
    assert stated_confidence(text) == expected


def test_unstated_confidence_is_the_models_own():
    candidate = Candidate("The answer is 3.", "3", "stop", 4, logprob=-2.0, mean_logprob=-0.5)
    assert confidence(candidate) == pytest.approx(0.6065, abs=1e-4)


@pytest.mark.parametrize("spec", TINY.values(), ids=TINY.keys())
def test_each_runs_by_spec_and_within_a_budget(spec, smollm2):
    solution = thinktank.solve("What is 4 + 4?", model=smollm2, strategy=spec, seed=1)
    assert solution.strategy == build_strategy(spec).spec and solution.candidates
    capped = thinktank.solve("What is 4 + 4?", model=smollm2, strategy=spec, seed=1,
                             budget=Budget(max_tokens=80))  # fmt: skip
    assert capped.usage.total_tokens <= 80 and capped.budget_exhausted  # even round one is cut


def test_debaters_read_each_others_answers(smollm2):
    for seed in range(3, 11):  # until the agents disagree at first: then they discuss
        model = RecordingModel(smollm2)
        solution = thinktank.solve("What is 6 + 7?", model=model, seed=seed,
                                   strategy="debate:agents=3,rounds=2,max_tokens=32")  # fmt: skip
        if len(set(solution.trace[0]["answers"])) > 1:
            break
    assert len(solution.trace) == 2  # a disagreement makes a second round
    # One call a round: ReConcile's discussion prompt is the same for every agent.
    _, later = model.prompts
    shown = _text(later)
    agents = solution.candidates[:3]
    assert all(a.text.strip() in shown for a in agents)
    assert all(f"answer is {a.answer}" in shown for a in agents if a.answer is not None)
    assert "Confidence" in shown


def test_the_aggregator_reads_every_proposal(smollm2):
    model = RecordingModel(smollm2)
    solution = thinktank.solve(
        "What is 6 + 7?",
        model=model,
        seed=4,
        strategy="mixture-of-agents:proposers=3,layers=1,max_tokens=32",
    )
    proposals, aggregator = solution.candidates[:3], solution.candidates[3]
    assert aggregator.worker == "aggregator"
    last = _text(model.prompts[-1])
    assert all(p.text.strip() in last for p in proposals)  # whole, not cut


def test_peers_progress_reaches_every_path(smollm2):
    solution = thinktank.solve(
        "What is 6 + 7?",
        model=smollm2,
        seed=5,
        strategy="leap:paths=3,interval=10,max_tokens=40,summary_tokens=10",
    )
    [trace] = solution.trace
    assert trace["exchanges"] >= 1
    # Every path still writing after its first 10 tokens was told what its peers did.
    went_on = [c for c, tokens in zip(solution.candidates, trace["tokens"], strict=True)
               if tokens > 10]  # fmt: skip
    assert went_on and all("(Peers' progress:" in c.text for c in went_on)


def test_a_paths_answer_is_its_own_not_its_peers():
    from thinktank.problem import Problem
    from thinktank.solution import Partial
    from thinktank.strategies.collaborate import LearningFromPeers

    leap = LearningFromPeers()
    path = Partial(("6 + 7 = 13. ", leap._PEERS.format(summaries="the answer is 9"), "So 13."))
    candidate = leap._path(path, Problem(id="p", prompt="What is 6 + 7?", kind="math"))
    assert candidate.answer == "13" and "the answer is 9" in candidate.text


HOGWILD = "hogwild:workers=2,max_tokens=32"


def test_hogwild_on_a_backend_without_a_shared_cache_is_a_clear_error(smollm2):
    with pytest.raises(ThinktankError, match="torch:smollm2"):
        thinktank.solve("What is 4 + 4?", model=smollm2, strategy=HOGWILD, seed=1)


@pytest.mark.parametrize("layout", ["token", "step", "combined"])
def test_hogwild_workers_answer_together_and_the_ledger_pays_each_call(
    layout, torch_smollm2, tmp_path
):
    ledger = Ledger(tmp_path / "ledger.db")
    spec = f"{HOGWILD},layout={layout},until=all"
    solution = thinktank.solve("What is 4 + 4?", model=torch_smollm2, strategy=spec, seed=1,
                               ledger=ledger)  # fmt: skip
    workers, final = solution.candidates[:2], solution.candidates[2:]
    assert [c.worker for c in workers] == ["Alice", "Bob"]
    # cut_impersonation: nobody starts a step under a team member's name, or a section.
    cues = ("**Alice [", "**Bob [", "### Work in progress")
    assert not any(cue in c.text for c in workers for cue in cues)
    session, *after = ledger.calls(solution.run_id)  # one shared session, one row
    assert session.n == 2 and session.model == "torch:smollm2"
    assert session.completion_tokens == sum(c.completion_tokens for c in workers)
    calls = [session, *after]
    assert solution.usage.total_tokens == sum(c.prompt_tokens + c.completion_tokens for c in calls)
    declared = solution.trace[0]["declared"]
    if declared:  # the answer is the declarers' vote
        assert not after and not final
        assert solution.answer == majority_vote(list(declared.values()), "math").winner
    else:  # the final-answer step read everything and answered, one row more
        assert [c.n for c in after] == [1] and [c.worker for c in final] == ["final"]
        votes = majority_vote([c.answer for c in workers], "math").winner
        assert solution.answer == (final[0].answer or votes)


def test_hogwild_stays_within_a_token_budget(torch_smollm2):
    # The prompt and first headers take about 405 tokens: one worker fits, shortened.
    solution = thinktank.solve("What is 4 + 4?", model=torch_smollm2,
                               strategy="hogwild:workers=3,max_tokens=64", seed=2,
                               budget=Budget(max_tokens=500))  # fmt: skip
    assert solution.usage.total_tokens <= 500 and solution.budget_exhausted
    assert solution.candidates  # a session ran


def test_hogwild_session_ends_when_a_worker_declares_the_answer(torch_smollm2):
    """until=first: the first declared answer ends every worker at that step."""
    calls = []

    def until(texts):
        calls.append(list(texts))
        return len(calls) == 5  # as if a worker declared at step 5

    sampling = Sampling(temperature=0.7, max_tokens=40, seed=4)
    done = torch_smollm2.generate_together(SUM_PROMPT, ["\nAlice: ", "\nBob: "], sampling,
                                           until=until)  # fmt: skip
    assert len(calls) == 5
    assert all(c.completion_tokens <= 5 for c in done)
    assert [c.text for c in done] == calls[-1]
