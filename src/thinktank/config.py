"""Where thinktank keeps its files (``$THINKTANK_HOME``, default ``~/.thinktank``), where
it caches model files rebuilt from packages (`cache`), and
how many threads a local backend decodes with (``$THINKTANK_THREADS``, default every
core), and whether the ledger keeps what the models wrote (``$THINKTANK_LOG_TEXTS``,
default yes)."""

import os
from pathlib import Path


def home() -> Path:
    """The thinktank home directory (created on first use)."""
    path = Path(os.environ.get("THINKTANK_HOME") or Path.home() / ".thinktank").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache() -> Path:
    """Where files rebuilt from installed packages are kept, shared by every
    ``$THINKTANK_HOME`` of the user: ``$THINKTANK_CACHE``, else
    ``$XDG_CACHE_HOME/thinktank``, else ``~/.cache/thinktank`` (created on first use)."""
    chosen = os.environ.get("THINKTANK_CACHE") or (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "thinktank"
    )
    path = Path(chosen).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def threads() -> int:
    """Threads for a local backend: ``$THINKTANK_THREADS``, else one per core. Several
    thinktank processes on one machine (Ray workers) set it so as not to fight over
    the cores."""
    value = os.environ.get("THINKTANK_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else os.cpu_count() or 1


def log_texts() -> bool:
    """Whether the ledger keeps prompts, completions and solutions' texts, not usage
    alone: ``$THINKTANK_LOG_TEXTS`` set to 0, false, no or off says no (for sensitive
    data); anything else, or unset, says yes."""
    said = os.environ.get("THINKTANK_LOG_TEXTS", "").strip().lower()
    return said not in {"0", "false", "no", "off"}
