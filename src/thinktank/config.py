"""Where thinktank keeps its files (``$THINKTANK_HOME``, default ``~/.thinktank``), and
how many threads a local backend decodes with (``$THINKTANK_THREADS``, default every
core)."""

import os
from pathlib import Path


def home() -> Path:
    """The thinktank home directory (created on first use)."""
    path = Path(os.environ.get("THINKTANK_HOME") or Path.home() / ".thinktank").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def threads() -> int:
    """Threads for a local backend: ``$THINKTANK_THREADS``, else one per core. Several
    thinktank processes on one machine (Ray workers) set it so as not to fight over
    the cores."""
    value = os.environ.get("THINKTANK_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else os.cpu_count() or 1
