"""``thinktank serve``: models and strategies behind the OpenAI chat-completions API."""

from __future__ import annotations

import argparse
import os
from typing import Any

from thinktank.cli.common import add_log_texts_argument, check_bindable, port, positive, stderr
from thinktank.errors import ThinktankError
from thinktank.server.limits import FLAGS as LIMIT_FLAGS
from thinktank.server.limits import RequestLimits

#: What each ``--max-request-*`` flag bounds, for its help.
LIMIT_HELP = {
    "tokens": "tokens one request may spend, all calls",
    "seconds": "seconds one request may hold the model",
    "samples": "samples, agents, beams, rollouts... in one request",
    "steps": "rounds, layers, steps... of one request",
    "sample_tokens": "tokens of one sample or step",
}


def add_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve models and strategies behind the OpenAI chat-completions API",
        description="An OpenAI-compatible server: POST /v1/chat/completions with model "
        "MODEL (plain sampling) or STRATEGY/MODEL (e.g. self-consistency:n=8/smollm2), or "
        'extra_body={"thinktank": {"strategy": ...}}; GET /v1/models. Every call is in the '
        "ledger. What you configure here is all a request can name: the served models (for "
        "pools and judges too), the process-reward endpoints and the strategies, by name; "
        "never a URL, a file, an environment variable or a module. Each request is held to "
        "the --max-request-* limits.",
        epilog="example: thinktank serve --port 8000 --model smollm2 "
        "--model qwen=openai:Qwen/Qwen3-8B@http://gpu:8000/v1 --api-key secret",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=port, default=8000, help="port (8000)")
    serve.add_argument("--model", "-m", action="append", metavar="[NAME=]SPEC",
                       help="model to serve, under NAME or its spec (repeatable; default: "
                       "smollm2)")  # fmt: skip
    serve.add_argument("--process-reward", action="append", default=[],
                       metavar="NAME=URL[#MODEL]",
                       help="a process reward model endpoint requests may use as "
                       "value=prm@NAME (repeatable)")  # fmt: skip
    serve.add_argument("--strategy", "-s", action="append", metavar="NAME",
                       help="a strategy requests may use (repeatable; default: every built-in "
                       "one: a plugin's strategy only when named)")  # fmt: skip
    serve.add_argument("--api-key", default=os.environ.get("THINKTANK_API_KEY"), metavar="KEY",
                       help="required as 'Authorization: Bearer KEY' (default: "
                       "$THINKTANK_API_KEY; none: no key needed)")  # fmt: skip
    serve.add_argument("--max-concurrent", type=positive(int), default=4, metavar="N",
                       help="requests worked on at once; the rest wait (4)")  # fmt: skip
    defaults = RequestLimits()
    for field, what in LIMIT_HELP.items():
        default = getattr(defaults, field)
        serve.add_argument(LIMIT_FLAGS[field], dest=f"limit_{field}", type=positive(type(default)),
                           default=default, metavar="N" if isinstance(default, int) else "S",
                           help=f"{what} ({default:g})")  # fmt: skip
    add_log_texts_argument(serve)
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from thinktank.ledger import Ledger
    from thinktank.models import load_model
    from thinktank.server import create_app

    models = dict(_named(entry, "--model") for entry in args.model or ["smollm2"])
    rewards = dict(_named(entry, "--process-reward", need_name=True)
                   for entry in args.process_reward)  # fmt: skip
    loaded = {name: load_model(spec) for name, spec in models.items()}  # fail before binding
    limits = RequestLimits(**{field: getattr(args, f"limit_{field}") for field in LIMIT_FLAGS})
    app = create_app(loaded, api_key=args.api_key, max_concurrent=args.max_concurrent,
                     ledger=Ledger(), limits=limits, process_rewards=rewards,
                     strategies=args.strategy)  # fmt: skip
    check_bindable(args.host, args.port)
    stderr.print(f"serving {', '.join(loaded)} on http://{args.host}:{args.port}/v1")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _named(entry: str, flag: str, *, need_name: bool = False) -> tuple[str, str]:
    """``NAME=SPEC`` (or a bare ``SPEC``, named by itself) from a repeatable option."""
    name, equals, spec = entry.partition("=")
    if equals and name.strip() and spec.strip() and "/" not in name and ":" not in name:
        return name.strip(), spec.strip()
    if need_name:
        raise ThinktankError(f"{flag} {entry!r}: expected NAME=VALUE")
    return entry.strip(), entry.strip()
