"""OptiLLM as a proxy in front of thinktank (issue 19): what answers through it, and what it costs.

Starts `thinktank serve`'s app (the embedded SmolLM2, its own ledger in a temp
dir) on a free loopback port in this process, then OptiLLM's proxy as a
subprocess on another free port, pointed at it (``--base-url
http://127.0.0.1:PORT/v1``; ``OPENAI_API_KEY`` set, so OptiLLM uses its OpenAI
client), and waits until both answer. With the official ``openai`` client it
sends the same seeded chain_sum problems (a system prompt asking for "The answer
is ...", then the question) through OptiLLM as:

- ``smollm2``: a plain thinktank model, passed through (OptiLLM's ``none``);
- ``self-consistency:n=K/smollm2``: a thinktank strategy, passed through;
- ``majority_voting-smollm2`` (with ``k=K``), ``moa-smollm2``, ``bon-smollm2``
  (``--best-of-n K``): OptiLLM's approaches calling thinktank's smollm2;

and straight to thinktank (the baseline, in the same process, before the same
problem goes through OptiLLM): ``smollm2`` and ``self-consistency:n=K/smollm2``.
Per row: answered (HTTP 200 with non-empty content), correct (thinktank's math
extraction of the reply, scored by reasoning-gym's ``score_answer`` as ``bench``
does), wall seconds, the thinktank ledger calls and tokens the requests caused,
and against its direct counterpart (an approach's: the thinktank model it wraps,
or for majority voting thinktank's own self-consistency with as many samples)
the ratios of seconds and tokens, and for pass-through rows how many replies are
the very text the direct request got (the same seed gives the same sample).
A request that times out (``--timeout``) restarts OptiLLM: its connections
close, thinktank cancels their calls, and what they spent counts for that row.

OptiLLM's environment: ``pip install optillm==0.4.0`` pulls torch, transformers,
spacy, gradio, litellm and more (gigabytes, CUDA wheels). Its proxy only imports
flask, openai, cerebras_cloud_sdk, networkx, numpy, z3-solver, aiohttp,
math-verify and PyYAML when it starts (plugins whose modules are missing are
skipped with a logged error: ``majority_voting`` still loads), so ``--make-venv
DIR`` installs optillm with ``--no-deps`` and those, pinned (`OPTILLM_PACKAGES`):
about 350 MB. Then, on one core:

    .venv/bin/python benchmarks/optillm_proxy.py --make-venv /tmp/optillm-venv
    THINKTANK_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/optillm_proxy.py \\
        --optillm-python /tmp/optillm-venv/bin/python [--problems 5] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import openai
from server_load import start  # the sibling script (benchmarks run as scripts)

from thinktank.bench.suites import load_suite
from thinktank.ledger import Ledger
from thinktank.models import load_model
from thinktank.problem import Task
from thinktank.server import create_app
from thinktank.verify import extract_answer

OPTILLM = "optillm==0.4.0"
#: What optillm 0.4.0's server imports at start, at the versions measured with.
OPTILLM_PACKAGES = (
    "flask==3.1.3",
    "openai==3.57.0",
    "cerebras_cloud_sdk==1.91.0",
    "networkx==3.6.1",
    "numpy==2.4.6",
    "z3-solver==4.15.4.0",
    "aiohttp==3.14.5",
    "math-verify==0.9.0",
    "PyYAML==6.0.4",
)
SUITE = "rg:chain_sum?min_terms=2&max_terms=2&min_digits=1&max_digits=1&size={size}&seed={seed}"
SYSTEM = "You are a careful math assistant. Answer with the final result as 'The answer is ...'."
#: Environment variables that make OptiLLM pick another client than OpenAI's.
OTHER_CLIENTS = ("OPTILLM_API_KEY", "CEREBRAS_API_KEY", "AZURE_OPENAI_API_KEY")


@dataclass
class Row:
    """One configuration's requests, summed over the problems."""

    route: str
    model: str
    counterpart: str | None = None  # the direct row's model this row is compared with
    answered: int = 0
    correct: int = 0
    seconds: float = 0.0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    replies: list[str | None] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add_cost(self, calls: int, prompt_tokens: int, completion_tokens: int) -> None:
        self.calls += calls
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Fail(Exception):
    """A failure the user can fix (no OptiLLM, it does not start): exit 2 with its message."""


def make_venv(folder: Path) -> None:
    """A venv at ``folder`` with optillm and only what its proxy imports."""
    pip = folder / "bin" / "pip"
    steps = (
        [sys.executable, "-m", "venv", str(folder)],
        [str(pip), "install", *OPTILLM_PACKAGES],
        [str(pip), "install", "--no-deps", OPTILLM],
    )
    for step in steps:
        print("+", " ".join(step), flush=True)
        if subprocess.run(step).returncode != 0:
            raise Fail(f"'{' '.join(step)}' failed (see its output above)")


def optillm_version(python: str) -> str:
    """The version of optillm that ``python`` imports, or Fail saying why it cannot."""
    try:
        probe = subprocess.run(
            [python, "-c", "import optillm; print(optillm.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Fail(f"cannot run --optillm-python {python}: {exc}") from None
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise Fail(
            f"{python} cannot import optillm: {last}\nmake a venv for it with --make-venv DIR"
        )
    return probe.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OptiLLM:
    """OptiLLM's proxy as a subprocess in front of ``upstream``, on a free port."""

    def __init__(self, python: str, upstream: str, folder: Path, samples: int) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log_path = folder / "optillm.log"
        self._command = [
            python,
            "-c",
            "import optillm; optillm.main()",
            "--base-url",
            upstream,
            "--host",
            "127.0.0.1",
            "--port",
            self.url.rsplit(":", 1)[1],
            "--best-of-n",
            str(samples),
            "--log",
            "warning",
        ]
        self._env = {k: v for k, v in os.environ.items() if k not in OTHER_CLIENTS}
        self._env["OPENAI_API_KEY"] = "none"  # not "sk-...": OptiLLM then keeps its own client
        self._folder = folder  # its cwd: OptiLLM also loads plugins from ./optillm/plugins
        self._process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start it and wait until its /health answers, else Fail with its log's end."""
        with open(self._log_path, "a") as log:
            self._process = subprocess.Popen(
                self._command, cwd=self._folder, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        self.stop()
        tail = self._log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise Fail("OptiLLM did not start:\n  " + "\n  ".join(tail))

    def restart(self) -> None:
        """Drop the work of a request that timed out: its connections to thinktank close,
        and thinktank cancels what they asked for (else it would count for the next)."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


class LedgerCursor:
    """The ledger's calls since the last look: what one request caused, all its calls
    (OptiLLM's several requests each get a run id of their own)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path)
        self._last_id = self._read(0)[3]

    def _read(self, after: int) -> tuple[int, int, int, int]:
        return self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
            " COALESCE(MAX(id), ?) FROM calls WHERE id > ?",
            (after, after),
        ).fetchone()

    def since_last(self) -> tuple[int, int, int]:
        """Calls, prompt tokens and completion tokens recorded since the last call."""
        calls, prompt, completion, self._last_id = self._read(self._last_id)
        return calls, prompt, completion


def ask(
    client: openai.OpenAI, row: Row, task: Task, seed: int, max_tokens: int, extra: dict
) -> bool:
    """Send one problem as ``row``'s model and add what it answered to ``row``;
    whether the request timed out."""
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": task.problem.prompt},
    ]
    started = time.perf_counter()
    content = None
    timed_out = False
    try:
        reply = client.chat.completions.create(
            model=row.model,
            messages=messages,
            max_tokens=max_tokens,
            seed=seed,
            extra_body=extra or None,
        )
        content = reply.choices[0].message.content if reply.choices else None
    except openai.APIStatusError as exc:  # OptiLLM's errors are {"error": "text"}
        row.errors.append(f"HTTP {exc.status_code}: {exc.response.text[:300]}")
    except openai.APIError as exc:
        row.errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
        timed_out = isinstance(exc, openai.APITimeoutError)
    row.seconds += time.perf_counter() - started
    row.replies.append(content)
    if content and content.strip():
        row.answered += 1
        row.correct += task.score(extract_answer(content, task.problem.kind)) == 1.0
    return timed_out


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def print_table(rows: list[Row], direct: dict[str, Row], problems: int) -> None:
    print(
        "| route | model | answered | correct | seconds | ledger calls | prompt tok "
        "| completion tok | vs direct | seconds ratio | token ratio | same reply |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        base = direct.get(row.counterpart) if row.counterpart else None
        if base is None:
            compared = "- | - | - | -"
        else:
            same = "-"
            if row.counterpart == row.model:  # passed through: the same seeded request
                alike = sum(a == b for a, b in zip(row.replies, base.replies, strict=True))
                same = f"{alike}/{problems}"
            compared = (
                f"`{base.model}` | {ratio(row.seconds, base.seconds)} "
                f"| {ratio(row.tokens, base.tokens)} | {same}"
            )
        print(
            f"| {row.route} | `{row.model}` | {row.answered}/{problems} "
            f"| {row.correct}/{problems} | {row.seconds:.1f} | {row.calls} "
            f"| {row.prompt_tokens:,} | {row.completion_tokens:,} | {compared} |"
        )
    for row in rows:
        if row.errors:
            print(f"\n{row.route} `{row.model}`: {len(row.errors)} failed, e.g. {row.errors[0]}")


def measure(
    args: argparse.Namespace, thinktank_url: str, optillm: OptiLLM, ledger_path: Path
) -> tuple[list[Row], dict[str, Row]]:
    """Every problem, direct then through OptiLLM: the rows, and the direct ones by model."""
    strategy = f"self-consistency:n={args.samples}/smollm2"
    direct = {model: Row("direct", model) for model in ("smollm2", strategy)}
    through = [Row("OptiLLM", "smollm2", "smollm2"), Row("OptiLLM", strategy, strategy)]
    for approach in args.approach:
        wrapped = strategy if approach == "majority_voting" else "smollm2"
        through.append(Row("OptiLLM", f"{approach}-smollm2", wrapped))
    extras = {"majority_voting-smollm2": {"k": args.samples}}
    timeout = openai.Timeout(args.timeout, connect=10)
    clients = {
        route: openai.OpenAI(api_key="none", base_url=url, max_retries=0, timeout=timeout)
        for route, url in (("direct", thinktank_url), ("OptiLLM", f"{optillm.url}/v1"))
    }
    # Loads the model (on first use), so that no row pays for it.
    clients["direct"].chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=1
    )
    ledger = LedgerCursor(ledger_path)
    tasks = load_suite(SUITE.format(size=args.problems, seed=args.seed)).tasks
    for seed, task in enumerate(tasks):
        for row in (*direct.values(), *through):
            extra = extras.get(row.model, {}) if row.route == "OptiLLM" else {}
            if ask(clients[row.route], row, task, seed, args.max_tokens, extra):
                if row.route == "OptiLLM":
                    optillm.restart()
                time.sleep(1)  # thinktank cancels a dropped request at its next token
            row.add_cost(*ledger.since_last())
        print(f"problem {seed + 1}/{len(tasks)} done", file=sys.stderr, flush=True)
    return [*direct.values(), *through], direct


def run(args: argparse.Namespace) -> None:
    version = optillm_version(args.optillm_python)
    folder = Path(tempfile.mkdtemp(prefix="optillm-proxy-"))
    ledger_path = folder / "ledger.db"
    server, thinktank_url = start(create_app([load_model("smollm2")], ledger=Ledger(ledger_path)))
    try:
        optillm = OptiLLM(args.optillm_python, thinktank_url, folder, args.samples)
        try:
            rows, direct = measure(args, thinktank_url, optillm, ledger_path)
        finally:
            optillm.stop()
    finally:
        server.should_exit = True
    print(
        f"optillm {version} in front of thinktank (embedded smollm2), "
        f"{SUITE.format(size=args.problems, seed=args.seed)}, max_tokens={args.max_tokens}, "
        f"K={args.samples}, THINKTANK_THREADS={os.environ.get('THINKTANK_THREADS', '-')}\n"
    )
    print_table(rows, direct, args.problems)
    print(f"\nOptiLLM's log: {folder / 'optillm.log'}")


def main() -> None:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--optillm-python",
        metavar="PATH",
        help="the python of a venv that has optillm (run the benchmark)",
    )
    where.add_argument(
        "--make-venv",
        metavar="DIR",
        type=Path,
        help=f"make a venv at DIR with {OPTILLM} and the modules its proxy "
        "imports (--no-deps, pinned), then exit",
    )
    parser.add_argument("--problems", type=int, default=5, help="chain_sum problems (5)")
    parser.add_argument("--seed", type=int, default=19, help="the suite's seed (19)")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=64,
        help="max_tokens of every request (64); OptiLLM's approaches use it for "
        "their samples, their own fixed limits for critiques and ratings",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=4,
        help="K: samples of self-consistency, majority voting and best-of-n (4)",
    )
    parser.add_argument(
        "--approach",
        action="append",
        help="OptiLLM approach over smollm2, repeatable (default: majority_voting, moa, bon)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per request (600)")
    args = parser.parse_args()
    args.approach = args.approach or ["majority_voting", "moa", "bon"]
    try:
        if args.make_venv:
            make_venv(args.make_venv)
            print(f"\nnow: {sys.argv[0]} --optillm-python {args.make_venv / 'bin' / 'python'}")
        else:
            run(args)
    except Fail as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
