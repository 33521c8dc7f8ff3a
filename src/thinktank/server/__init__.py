"""The OpenAI-compatible HTTP server (`thinktank serve`).

`create_app` is imported on first use, so that the command line can read the
request limits' defaults (`thinktank.server.limits`) without loading FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thinktank.server.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from thinktank.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
