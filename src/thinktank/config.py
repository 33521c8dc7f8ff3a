"""Where thinktank keeps its files: ``$THINKTANK_HOME``, default ``~/.thinktank``."""

import os
from pathlib import Path


def home() -> Path:
    """The thinktank home directory (created on first use)."""
    path = Path(os.environ.get("THINKTANK_HOME") or Path.home() / ".thinktank").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
