"""The OpenAI-compatible HTTP server (`thinktank serve`)."""

from thinktank.server.app import create_app

__all__ = ["create_app"]
