"""Search trees and collaboration transcripts: what the trace records, and how the
view draws it (an SVG tree; columns per worker or agent).

Layout and escaping are checked on hand-made traces; a beam search, a tree search,
a debate and a Hogwild! session on the real models check that what a run stores in
the ledger is consistent and draws.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

import thinktank
from thinktank.ledger import Ledger
from thinktank.strategies.collaborate import written_steps
from thinktank.view.transcripts import render_transcript
from thinktank.view.trees import MAX_NODES, layout, render_tree

SVG = "{http://www.w3.org/2000/svg}"
SCRIPT = "<script>alert('x')</script>"


def node(id_, parent, step="a step. ", **fields):
    return {"id": id_, "parent": parent, "step": step, "finished": False, "tokens": 3,
            "value": None, "chosen": False, **fields}  # fmt: skip


def small_tree():
    """0 -> 1, 2; 1 -> 3, 4; 2 -> 5 (the chosen path 0, 2, 5; 3, 4, 5 finished)."""
    return [
        node(0, None, "", chosen=True),
        node(1, 0, value=0.4),
        node(2, 0, value=0.9, chosen=True),
        node(3, 1, "The answer is 1", finished=True, value=0.2),
        node(4, 1, "The answer is 2", finished=True, value=0.3),
        node(5, 2, "The answer is 3", finished=True, value=0.95, chosen=True),
    ]


def drawn(svg: str) -> dict[int, ET.Element]:
    """The SVG's node groups by node id (parsing it checks that it is well formed)."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("class") == "tree"
    return {int(g.get("data-id")): g for g in root.iter(f"{SVG}g")}


def centre(group: ET.Element) -> tuple[float, float]:
    circle = group.find(f"{SVG}circle")
    return float(circle.get("cx")), float(circle.get("cy"))


# -- the tree, drawn -----------------------------------------------------------------


def test_leaves_are_spaced_evenly_and_parents_centred_on_their_children():
    groups = drawn(render_tree([{"step": 0}, {"tree": small_tree()}]))
    assert sorted(groups) == [0, 1, 2, 3, 4, 5]
    x, y = (
        {i: centre(g)[0] for i, g in groups.items()},
        {i: centre(g)[1] for i, g in groups.items()},
    )
    assert y[4] - y[3] == y[5] - y[4] > 0  # leaves one row apart, in the order written
    assert y[1] == (y[3] + y[4]) / 2 and y[2] == y[5] and y[0] == (y[1] + y[2]) / 2
    assert x[0] < x[1] == x[2] < x[3] == x[4] == x[5]  # a column per depth


def test_the_chosen_path_and_finished_nodes_are_marked_and_values_shown():
    svg = render_tree([{"tree": small_tree()}])
    groups = drawn(svg)
    assert {i for i, g in groups.items() if "chosen" in g.get("class").split()} == {0, 2, 5}
    assert {i for i, g in groups.items() if "finished" in g.get("class").split()} == {3, 4, 5}
    edges = ET.fromstring(svg).findall(f"{SVG}path")
    assert len(edges) == 5 and sum("chosen" in e.get("class") for e in edges) == 2
    assert "0.95" in "".join(groups[5].itertext())
    assert groups[5].find(f"{SVG}title").text.startswith("The answer is 3")


def test_step_text_is_escaped():
    tree = small_tree()
    tree[3]["step"] = SCRIPT
    svg = render_tree([{"tree": tree}])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert drawn(svg)[3].find(f"{SVG}title").text.startswith(SCRIPT)  # read back whole


def test_a_big_tree_is_cut_to_the_first_written_and_the_chosen_path():
    # A comb: a spine 1..n with a leaf hanging off every spine node; the last is chosen.
    tree, n = [node(0, None, "", chosen=True)], 400
    for k in range(1, n + 1):
        tree.append(node(2 * k - 1, 0 if k == 1 else 2 * k - 3, chosen=True))
        tree.append(node(2 * k, 2 * k - 1, finished=True))
    tree[-2]["finished"] = True
    svg = render_tree([{"tree": tree}])
    groups = drawn(svg)
    assert MAX_NODES <= len(groups) < len(tree)
    assert {i for i, g in groups.items() if "chosen" in g.get("class")} >= {2 * n - 1}
    assert f"showing {len(groups)} of {len(tree)} nodes" in svg


def test_no_tree_draws_nothing():
    assert render_tree([{"step": 0, "kept": 2}]) is None and render_tree([]) is None


def test_layout_of_a_long_chain_does_not_recurse():
    chain = [node(0, None, "")] + [node(k, k - 1) for k in range(1, 5000)]
    placed = layout(chain)
    assert len(placed) == 5000 and {p.row for p in placed} == {0.0}


# -- transcripts, drawn --------------------------------------------------------------


def debate_solution():
    """A stored debate: two agents, two rounds (agent-2 silenced in round 2)."""
    texts = ["6 + 7 = 13. Confidence: 0.9", SCRIPT, "It is 13. Confidence: 1.0", SCRIPT]
    candidates = [{"text": t, "answer": a, "worker": w}
                  for t, a, w in zip(texts, ["13", None, "13", None],
                                     ["agent-1", "agent-2"] * 2, strict=True)]  # fmt: skip
    trace = [{"round": r, "agents": ["agent-1", "agent-2"], "answers": ["13", None],
              "confidences": [0.9, None], "weights": [0.8, 0.0]} for r in (1, 2)]  # fmt: skip
    return {"answer": "13", "candidates": candidates, "trace": trace}


def columns(html: str) -> list[str]:
    return re.findall(r'<div class="column" data-who="([^"]*)"', html)


def rows(html: str, who: str) -> list[int]:
    """The grid rows of ``who``'s turns."""
    column = html.split(f'data-who="{who}"')[1].split('<div class="column"')[0]
    return [
        int(r) for r in re.findall(r'class="turn" style="grid-column:\d+;grid-row:(\d+)', column)
    ]


def test_a_debate_is_a_column_per_agent_and_a_row_per_round():
    html = render_transcript(debate_solution())
    assert html.startswith('<div class="transcript"')
    assert columns(html) == ["agent-1", "agent-2"]
    assert rows(html, "agent-1") == rows(html, "agent-2") == [2, 3]  # rounds line up
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "round 2 · no answer · unchanged" in html and "confidence 0.90" in html


def test_hogwild_steps_interleave_in_the_order_they_were_written():
    solution = {
        "answer": "8",
        "candidates": [
            {"text": "4 + 4 = 8. The answer is 8", "answer": "8", "worker": "Alice",
             "completion_tokens": 12},
            {"text": f"I check. {SCRIPT}", "answer": None, "worker": "Bob",
             "completion_tokens": 9},
        ],
        "trace": [{"layout": "combined", "declared": {"Alice": "8"},
                   "tokens": {"Alice": 12, "Bob": 9},
                   "steps": [{"worker": "Alice", "text": "4 + 4 = 8.\n\n"},
                             {"worker": "Bob", "text": "I check.\n\n"},
                             {"worker": "Alice", "text": "The answer is 8"},
                             {"worker": "Bob", "text": SCRIPT}]}],
    }  # fmt: skip
    html = render_transcript(solution)
    assert columns(html) == ["Alice", "Bob"]
    assert rows(html, "Alice") == [2, 4] and rows(html, "Bob") == [3, 5]
    assert "step 2 · declared 8" in html and "&lt;script&gt;" in html and SCRIPT not in html
    del solution["trace"][0]["steps"]  # stored before the order was recorded: one row
    flat = render_transcript(solution)
    assert rows(flat, "Alice") == rows(flat, "Bob") == [2]
    assert "The answer is 8" in flat


def test_a_solution_that_is_no_collaboration_has_no_transcript():
    assert render_transcript({"answer": "3", "candidates": [], "trace": [{"kept": 1}]}) is None


def test_steps_come_out_of_the_cache_in_order_ending_as_the_workers_did():
    header = re.compile(r"\*\*(Alice|Bob) \[\d+\]:\*\* ")
    cache = (
        "**Alice [1]:** Hi, I'm Alice. Here's how we can add: 4 + 4.\n\n"
        "**Bob [1]:** Hi, I'm Bob. I will check.\n\n"
        "\n\n### Work in progress (others)\n\n"
        "**Alice [2]:** So it is<...>\n\n"
        "**Bob [2]:** Alice is right\n\n**Bob [<...>\n\n"
    )
    written = {"Alice": " add: 4 + 4.\n\nSo it is 8", "Bob": " I will check.\n\nAlice is right"}
    steps = written_steps(cache, header, written)
    assert [s["worker"] for s in steps] == ["Alice", "Bob", "Alice", "Bob"]
    assert steps[0]["text"] == "Hi, I'm Alice. Here's how we can add: 4 + 4.\n\n"
    assert steps[2]["text"] == "So it is 8"  # its last token was never fed
    assert steps[3]["text"] == "Alice is right"  # a stop string cut the rest
    assert written_steps("nobody wrote a step header", header, written) == []


# -- real runs: what the ledger holds draws -------------------------------------------


def stored_solution(solution) -> dict:
    """The solution as the view reads it: back from the ledger (THINKTANK_HOME)."""
    [stored] = Ledger().transcripts(solution.run_id)
    return stored.solution


def path_text(tree: list[dict], leaf: dict) -> str:
    by_id = {n["id"]: n for n in tree}
    steps, current = [], leaf
    while current["parent"] is not None:
        steps.append(current["step"])
        current = by_id[current["parent"]]
    return "".join(reversed(steps))


@pytest.mark.parametrize(
    "spec",
    ["beam:beams=2,expand=2,max_steps=2,step_tokens=8,max_tokens=16",
     "tree-search:rollouts=3,batch=2,branching=2,max_tokens=16"],
    ids=["beam", "tree-search"],
)  # fmt: skip
def test_a_real_search_stores_its_whole_tree_and_it_draws(spec, smollm2):
    solution = thinktank.solve("What is 2 + 3?", model=smollm2, strategy=spec, seed=1)
    stored = stored_solution(solution)
    tree = stored["trace"][-1]["tree"]
    ids = [n["id"] for n in tree]
    assert ids == list(range(len(ids))) and tree[0]["parent"] is None and tree[0]["step"] == ""
    assert all(n["parent"] in ids[: n["id"]] for n in tree[1:])  # parents come first
    # Every candidate is a finished leaf of the tree, its text the steps on the way.
    leaves = {path_text(tree, n) for n in tree if n["finished"]}
    assert {c["text"] for c in stored["candidates"]} <= leaves
    assert len(tree) > len(stored["candidates"]) + 1  # pruned or shared steps are there too
    chosen_parents = {n["parent"] for n in tree if n["chosen"]}
    [chosen] = [n for n in tree if n["chosen"] and n["id"] not in chosen_parents]
    committed = [c for c in stored["candidates"] if c["text"] == path_text(tree, chosen)]
    assert committed and committed[0]["answer"] == stored["answer"]
    assert all(n["value"] is not None for n in tree if n["finished"])
    groups = drawn(render_tree(stored["trace"]))
    assert len(groups) == len(tree)


def test_a_real_debate_draws_two_columns(smollm2):
    spec = "debate:agents=2,rounds=2,max_tokens=16"
    for seed in range(1, 9):  # until the agents disagree: then there is a second round
        solution = thinktank.solve("What is 6 + 7?", model=smollm2, strategy=spec, seed=seed)
        if len(solution.trace) == 2:
            break
    stored = stored_solution(solution)
    html = render_transcript(stored)
    assert columns(html) == ["agent-1", "agent-2"]
    assert rows(html, "agent-1") == rows(html, "agent-2") == [2, 3]
    assert [e["agents"] for e in stored["trace"]] == [["agent-1", "agent-2"]] * 2


def test_a_real_hogwild_session_records_the_order_of_its_steps(torch_smollm2):
    spec = "hogwild:workers=2,max_tokens=16,prompt=team,layout=step,step=line,final_tokens=0"
    solution = thinktank.solve("What is 4 + 4?", model=torch_smollm2, strategy=spec, seed=1)
    stored = stored_solution(solution)
    [session] = stored["trace"]
    steps = session["steps"]
    assert {s["worker"] for s in steps} == {"Alice", "Bob"} and len(steps) > 2
    for candidate in stored["candidates"]:  # a worker's steps end where it ended
        written = "".join(s["text"] for s in steps if s["worker"] == candidate["worker"])
        assert written.endswith(candidate["text"][-8:])
    html = render_transcript(stored)
    assert columns(html) == ["Alice", "Bob"]
    assert sorted(rows(html, "Alice") + rows(html, "Bob")) == list(range(2, len(steps) + 2))
