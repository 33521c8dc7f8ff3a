"""Search trees drawn as trees (SVG), from the ``tree`` entry a search's trace holds.

The tree grows left to right: the root (the empty reply) on the left, each step a
column further; leaves are spaced evenly down the page and a parent sits level with
the middle of its children, so a step's text reads beside its node (above the edge
that leaves it). Presentation attributes style it (no stylesheet needed); classes
``node``, ``finished``, ``chosen`` and ``edge`` are there for one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

#: Nodes drawn at most; a bigger tree shows the first written and the chosen path.
MAX_NODES = 300
COLUMN_WIDTH = 170  # between depths
ROW_HEIGHT = 18  # between leaves
MARGIN = 12
RADIUS = 5
ELBOW = 14  # where an edge turns, before its child's column
LABEL_CHARS = 18

_EDGE = "#b4bac4"
_CHOSEN = "#d9480f"
_FINISHED = "#2b8a3e"
_OPEN = "#ffffff"
_STROKE = "#495057"


@dataclass
class PlacedNode:
    """A node of the stored tree and where the layout put it."""

    node: dict[str, Any]
    children: list[PlacedNode] = field(default_factory=list)
    depth: int = 0
    row: float = 0.0


def tree_nodes(trace: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The nodes of the last ``tree`` entry in ``trace``; None when there is none."""
    for entry in reversed(trace or []):
        if isinstance(entry, dict) and isinstance(entry.get("tree"), list):
            return [
                n for n in entry["tree"] if isinstance(n, dict) and isinstance(n.get("id"), int)
            ]
    return None


def layout(nodes: list[dict[str, Any]]) -> list[PlacedNode]:
    """The nodes reachable from the root(s), placed: ``depth`` is the column, ``row``
    spaces the leaves one apart in depth-first order, and a parent's row is the middle
    of its first and last child's. Children keep the order they were written in."""
    placed = {n["id"]: PlacedNode(n) for n in nodes}
    roots = []
    for item in placed.values():
        parent_id = item.node.get("parent")
        parent = placed.get(parent_id) if isinstance(parent_id, int) else None
        if parent is None or parent is item:
            roots.append(item)
        else:
            parent.children.append(item)
    order: list[PlacedNode] = []
    next_leaf = 0
    # Depth first without recursion (a rollout can be a long chain): a node is placed
    # once its children are.
    stack: list[tuple[PlacedNode, int, bool]] = [(r, 0, False) for r in reversed(roots)]
    while stack:
        item, depth, expanded = stack.pop()
        if not expanded:
            item.depth = depth
            order.append(item)
            stack.append((item, depth, True))
            stack.extend((c, depth + 1, False) for c in reversed(item.children))
        elif item.children:
            item.row = (item.children[0].row + item.children[-1].row) / 2
        else:
            item.row, next_leaf = next_leaf, next_leaf + 1
    return order


def _kept(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most about `MAX_NODES`: the first written and every chosen one (a node's
    parent is written before it and is chosen when it is, so the kept form a tree)."""
    first = {n["id"] for n in nodes[:MAX_NODES]}
    return [n for n in nodes if n["id"] in first or n.get("chosen")]


def _label(node: dict[str, Any]) -> str:
    step = " ".join(str(node.get("step") or "").split())
    if node.get("parent") is None:
        step = "start"
    elif len(step) > LABEL_CHARS:
        step = step[: LABEL_CHARS - 1] + "…"
    value = node.get("value")
    return step if not isinstance(value, int | float) else f"{value:.2f} {step}"


def _tooltip(node: dict[str, Any]) -> str:
    facts = [f"{node.get('tokens', 0)} tokens"]
    if isinstance(node.get("value"), int | float):
        facts.insert(0, f"value {node['value']:.4f}")
    if node.get("finished"):
        facts.append("finished")
    if node.get("chosen"):
        facts.append("on the answer's path")
    step = str(node.get("step") or "") if node.get("parent") is not None else "(the root)"
    return f"{step}\n[{', '.join(facts)}]"


def render_tree(trace: list[dict[str, Any]]) -> str | None:
    """An inline ``<svg class="tree">`` of the search tree in ``trace`` (a solution's
    trace), one ``<g class="node">`` per node; None when the trace holds no tree."""
    nodes = tree_nodes(trace)
    if not nodes:
        return None
    kept = _kept(nodes)
    order = layout(kept)
    if not order:  # no root: every node's parent is another's child
        return None
    x = {id(p): MARGIN + p.depth * COLUMN_WIDTH for p in order}
    y = {id(p): MARGIN + p.row * ROW_HEIGHT for p in order}
    note_height = ROW_HEIGHT if len(kept) < len(nodes) else 0
    width = MARGIN * 2 + max(p.depth for p in order) * COLUMN_WIDTH + COLUMN_WIDTH
    height = MARGIN * 2 + max(p.row for p in order) * ROW_HEIGHT + note_height
    parts = [
        f'<svg class="tree" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}"'
        f' height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}"'
        ' font-family="sans-serif" font-size="11">'
    ]
    edges = [(parent, child) for parent in order for child in parent.children]
    for parent, child in sorted(edges, key=lambda edge: bool(edge[1].node.get("chosen"))):
        chosen = bool(child.node.get("chosen"))
        # An elbow: along the parent's row (under its label), down or up just before the
        # child's column, into the child; so no edge crosses a label.
        turn = x[id(child)] - ELBOW
        parts.append(
            f'<path class="edge{" chosen" if chosen else ""}" fill="none"'
            f' d="M{x[id(parent)]:.1f} {y[id(parent)]:.1f}H{turn:.1f}V{y[id(child)]:.1f}'
            f'H{x[id(child)]:.1f}" stroke="{_CHOSEN if chosen else _EDGE}"'
            f' stroke-width="{2.5 if chosen else 1}"/>'
        )
    for item in order:
        node = item.node
        classes = "node" + " finished" * bool(node.get("finished"))
        classes += " chosen" * bool(node.get("chosen"))
        fill = _FINISHED if node.get("finished") else _OPEN
        stroke = _CHOSEN if node.get("chosen") else _STROKE
        parts.append(
            f'<g class="{classes}" data-id="{escape(str(node["id"]))}">'
            f"<title>{escape(_tooltip(node))}</title>"
            f'<circle cx="{x[id(item)]:.1f}" cy="{y[id(item)]:.1f}" r="{RADIUS}" fill="{fill}"'
            f' stroke="{stroke}" stroke-width="{2 if node.get("chosen") else 1}"/>'
            f'<text x="{x[id(item)] + RADIUS + 2:.1f}" y="{y[id(item)] - 4:.1f}">'
            f"{escape(_label(node))}</text></g>"
        )
    if note_height:
        parts.append(
            f'<text class="note" x="{MARGIN}" y="{height - MARGIN / 2:.1f}" fill="{_STROKE}">'
            f"showing {len(kept)} of {len(nodes)} nodes: the first written and the"
            " answer's path</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
