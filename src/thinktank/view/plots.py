"""The bench report's plots as inline SVG, for the run summary page."""

from __future__ import annotations

import io
import threading

import matplotlib
import matplotlib.pyplot as plt

from thinktank.bench.report import report_figures
from thinktank.bench.summary import ConfigSummary

#: pyplot keeps global state, and the app serves pages from several threads.
_PYPLOT = threading.Lock()


def svg_plots(summaries: list[ConfigSummary]) -> list[tuple[str, str]]:
    """Each of the report's plots (its name, an ``<svg>`` element to inline), in the
    report's order; none for a run with no results yet."""
    if not summaries:
        return []
    # Text as text, not glyph paths: smaller, and it can be searched and selected.
    with _PYPLOT, matplotlib.rc_context({"svg.fonttype": "none"}):
        return [(name, _svg(figure)) for name, figure in report_figures(summaries)]


def _svg(figure: plt.Figure) -> str:
    buffer = io.StringIO()
    figure.tight_layout()
    figure.savefig(buffer, format="svg", bbox_inches="tight")  # keeps a legend set outside
    plt.close(figure)
    document = buffer.getvalue()
    return document[document.index("<svg") :]  # no XML prolog inside an HTML page
