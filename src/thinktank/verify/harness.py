"""Grade a code answer with tests its code cannot reach, imitate or fool.

A candidate's program may do anything it likes to its own process: exit with
status 0 before the tests run, forge the output a grader reads, patch builtins,
return an object that equals everything, or read its own program text to learn
the tests. So the tests do not run in its process. Two sandboxes run at once
(`thinktank.verify.sandbox.run_python` with a ``peer``):

- the **candidate**: its code, then a loop that answers calls to its functions;
- the **tester**: the problem's prompt (its helper functions), the tests, and
  proxies that send each call to the candidate and wait for the reply.

They share two pipes and nothing else. A reply must be plain data (None, bools,
numbers, strings, bytes, and lists, tuples, sets and dicts of them): it is
unpickled with every class refused, so no object of the candidate's making
reaches the tests. The tester alone writes the verdict, as its last line of
output; the candidate cannot see or write the tester's output, its files or
its processes. A candidate that exits, crashes, hangs or sends anything else
fails the calls it did not answer.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass

from thinktank.verify.sandbox import Limits, python_solution, run_python

#: The most bytes one reply may take (a bigger one fails its call).
MAX_REPLY_BYTES = 16 << 20

# Frames on the pipes: a 4-byte big-endian length, then a pickle.
_FRAMES = """
import os, struct


def _send(fd, payload):
    data = struct.pack(">I", len(payload)) + payload
    while data:
        data = data[os.write(fd, data):]


def _receive(fd, limit):
    header = _exactly(fd, 4)
    (size,) = struct.unpack(">I", header)
    if size > limit:
        raise EOFError(f"a frame of {size} bytes")
    return _exactly(fd, size)


def _exactly(fd, size):
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
"""

# The candidate's side: its code, then it answers (name, args, kwargs) calls until the
# tester is done. What it does to itself stays in its own sandbox.
_CANDIDATE = (
    _FRAMES
    + """
import pickle, sys

_requests, _replies = int(sys.argv[1]), int(sys.argv[2])
_space = {"__name__": "__main__"}
exec(compile(SOLUTION, "solution.py", "exec"), _space)
while True:
    try:
        _name, _args, _kwargs = pickle.loads(_receive(_requests, 1 << 30))
    except EOFError:
        break
    try:
        _reply = pickle.dumps(("return", _space[_name](*_args, **_kwargs)))
    except BaseException as _error:
        _reply = pickle.dumps(("raise", f"{type(_error).__name__}: {_error}"[:1000]))
    _send(_replies, _reply)
"""
)

# The tester's side: trusted code only (the prompt and the tests come from the suite).
_TESTER = (
    _FRAMES
    + """
import io, json, pickle, sys

_replies, _requests = int(sys.argv[1]), int(sys.argv[2])


class CandidateFailed(Exception):
    "The candidate's call raised, or it sent no proper reply."


class _PlainData(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


def _proxy(name):
    def call(*args, **kwargs):
        _send(_requests, pickle.dumps((name, args, kwargs)))
        try:
            reply = _PlainData(io.BytesIO(_receive(_replies, MAX_REPLY_BYTES))).load()
        except Exception as error:
            raise CandidateFailed(f"no proper reply: {error}") from None
        if type(reply) is not tuple or len(reply) != 2 or reply[0] not in ("return", "raise"):
            raise CandidateFailed("no proper reply")
        if reply[0] == "raise":
            raise CandidateFailed(str(reply[1]))
        return reply[1]

    return call


_space = {"__name__": "tests"}
exec(compile(PROMPT, "prompt.py", "exec"), _space)
for _name in FUNCTIONS:
    _space[_name] = _proxy(_name)
passed = 0
for _test in TESTS:
    try:
        exec(compile(_test, "tests.py", "exec"), _space)
        if CHECK:
            _space["check"](_space[FUNCTIONS[0]])
        passed += 1
    except BaseException:
        pass
print()
print(json.dumps({"thinktank-verdict": {"passed": passed, "total": len(TESTS)}}))
"""
)


@dataclass(frozen=True)
class Verdict:
    """How many of the tests passed, as the tester reported it (0 if it did not)."""

    passed: int
    total: int

    @property
    def share(self) -> float:
        return self.passed / self.total if self.total else 0.0


def run_tests(
    prompt: str,
    code: str,
    tests: Sequence[str],
    *,
    functions: Sequence[str],
    check: bool = False,
    limits: Limits | None = None,
) -> Verdict:
    """Run each of ``tests`` (Python source) against the candidate ``code`` (a whole
    definition or a body that continues ``prompt``).

    The tests run in the prompt's namespace, where each name in ``functions`` (the
    prompt's stubs: see `candidate_functions`) calls the candidate's function of that
    name; the prompt's other functions stay the prompt's own. With ``check``, each
    test defines ``check(candidate)`` and passes when ``check(functions[0])``
    returns (HumanEval's hidden tests); otherwise a test passes when it runs
    without raising.
    """
    if not functions:
        raise ValueError("name the candidate's functions the tests call")
    candidate = f"SOLUTION = {python_solution(prompt, code)!r}\n{_CANDIDATE}"
    settings = {
        "PROMPT": prompt,
        "FUNCTIONS": list(functions),
        "TESTS": list(tests),
        "CHECK": check,
        "MAX_REPLY_BYTES": MAX_REPLY_BYTES,
    }
    tester = "".join(f"{name} = {value!r}\n" for name, value in settings.items()) + _TESTER
    result = run_python(tester, limits, peer=candidate)
    return _verdict(result.stdout if result.passed else "", len(tests))


def candidate_functions(prompt: str) -> tuple[str, ...]:
    """The functions a code prompt leaves for the answer to write: its top-level
    stubs (a docstring, ``pass`` or ``...``), else its last function; none when the
    prompt is not Python."""
    try:
        tree = ast.parse(prompt)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ()
    defined = [
        node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    stubs = tuple(node.name for node in defined if all(map(_is_placeholder, node.body)))
    return stubs or tuple(node.name for node in defined[-1:])


def _is_placeholder(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Pass):
        return True
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and (isinstance(statement.value.value, str) or statement.value.value is Ellipsis)
    )


def _verdict(stdout: str, total: int) -> Verdict:
    """The tester's last line; no verdict (it crashed, or was killed) passes nothing."""
    lines = stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1])["thinktank-verdict"]
        passed = int(found["passed"])
    except (IndexError, ValueError, KeyError, TypeError):
        return Verdict(0, total)
    return Verdict(min(max(passed, 0), total), total)
