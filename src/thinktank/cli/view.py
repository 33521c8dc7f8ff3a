"""``thinktank view``: a local web app over the ledger, to read what the models wrote."""

from __future__ import annotations

import argparse
import ipaddress
import os
import threading
import time
import webbrowser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from thinktank.cli.common import EXIT_BAD_INPUT, check_bindable, port, stderr
from thinktank.config import home

#: Host names that are this machine.
LOOPBACK_NAMES = ("localhost", "127.0.0.1")


def add_parser(commands: Any) -> None:
    view = commands.add_parser(
        "view",
        help="browse the ledger in a web browser: runs, reports, candidates, calls",
        description="A local web app over the ledger: the runs, a bench run's report with "
        "its plots, every problem's question, the evaluator's reference (apart), each "
        "strategy's candidates, votes, scores and cost, search trees, two configurations "
        "compared, a run followed live, and every call's prompt and completions. Each page "
        "has a JSON twin under /api. The ledger holds every prompt: the view binds to "
        "127.0.0.1, and another address needs --api-key.",
        epilog="example: thinktank view --open",
    )
    view.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    view.add_argument("--port", type=port, default=8765, help="port (8765)")
    view.add_argument("--api-key", default=os.environ.get("THINKTANK_API_KEY"), metavar="KEY",
                      help="required as 'Authorization: Bearer KEY', or by a browser once "
                      "through /login?key=KEY (default: $THINKTANK_API_KEY; none: no key "
                      "needed)")  # fmt: skip
    view.add_argument("--ledger", type=Path, metavar="PATH",
                      help="the ledger to read (default: $THINKTANK_HOME/ledger.db)")  # fmt: skip
    view.add_argument("--open", action="store_true", help="open it in the web browser")
    view.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from thinktank.ledger import Ledger
    from thinktank.view.app import create_view_app

    path = args.ledger if args.ledger is not None else home() / "ledger.db"
    if not path.is_file():
        stderr.print(f"[red]error:[/] no ledger at {path} (run thinktank solve or bench first, "
                     "or name one with --ledger)")  # fmt: skip
        return EXIT_BAD_INPUT
    if not args.api_key and not _is_loopback(args.host):
        stderr.print(f"[red]error:[/] --host {args.host} would show every prompt in the ledger "
                     "to the network: set --api-key (or $THINKTANK_API_KEY) too")  # fmt: skip
        return EXIT_BAD_INPUT
    app = create_view_app(Ledger(path), api_key=args.api_key or None)
    if not args.api_key:
        # Without a key, only requests naming the loopback host: a web page whose domain
        # is rebound to 127.0.0.1 must not read the ledger through the browser.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK_NAMES, args.host])
    check_bindable(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/"
    stderr.print(f"thinktank view of {path} on {url}", soft_wrap=True)
    if args.api_key:
        stderr.print(f"a browser signs in once at {url}login?key=KEY", soft_wrap=True)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                           log_level="warning"))  # fmt: skip
    if args.open:
        target = f"{url}login?{urlencode({'key': args.api_key})}" if args.api_key else url
        threading.Thread(target=_open_when_started, args=(server, target), daemon=True).start()
    server.run()
    return 0


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _open_when_started(server: Any, url: str) -> None:
    """Open ``url`` in the browser once ``server`` listens (a browser opened before
    would find nothing there)."""
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.1)
    webbrowser.open(url)
