"""Run model-written Python in a child process that cannot hurt the machine.

The child runs in a fresh temporary directory, with no network (a new network
namespace via ``unshare -rn``: not even the host's loopback is reachable), an
isolated interpreter (``python -I``), a minimal environment, and resource
limits: address space, CPU seconds, file size, no core dumps. A wall-clock
timeout kills its whole process group.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache

from thinktank.errors import ThinktankError

_OUTPUT_LIMIT = 4096  # characters of stdout/stderr kept


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    file_bytes: int = 16 << 20


@dataclass(frozen=True)
class SandboxResult:
    passed: bool  # exited with status 0 within the limits
    returncode: int | None
    timed_out: bool
    stdout: str
    stderr: str


@cache
def _network_isolation() -> list[str]:
    """The command prefix that gives a child no network; refuses to run without one."""
    unshare = shutil.which("unshare")
    if unshare:
        probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [unshare, "-rn"]
    raise ThinktankError(
        "cannot isolate model-written code from the network: `unshare -rn` is unavailable"
    )


# The child limits itself, then runs the program: no preexec_fn, which is unsafe
# when the parent has threads (the runner solves problems concurrently).
_LAUNCHER = """
import resource, runpy, sys
memory, cpu, size = map(int, sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
sys.argv = sys.argv[4:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_python(code: str, limits: Limits | None = None) -> SandboxResult:
    """Execute ``code`` as a script in the sandbox; ``passed`` if it exits 0 in time."""
    limits = limits or Limits()
    prefix = _network_isolation()
    with tempfile.TemporaryDirectory(prefix="thinktank-sandbox-") as workdir:
        script = os.path.join(workdir, "program.py")
        with open(script, "w") as handle:
            handle.write(code)
        limit_args = [str(limits.memory_bytes), str(limits.cpu_seconds), str(limits.file_bytes)]
        process = subprocess.Popen(
            [*prefix, sys.executable, "-I", "-B", "-c", _LAUNCHER, *limit_args, script],
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group, killed whole on timeout
        )
        try:
            stdout, stderr = process.communicate(timeout=limits.wall_seconds)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            timed_out = True
    return SandboxResult(
        passed=not timed_out and process.returncode == 0,
        returncode=None if timed_out else process.returncode,
        timed_out=timed_out,
        stdout=stdout[-_OUTPUT_LIMIT:],
        stderr=stderr[-_OUTPUT_LIMIT:],
    )


def python_solution(prompt: str, code: str) -> str:
    """The program a code answer stands for, given the prompt it answers.

    A whole definition (``def``/``class`` at the start of a line) follows the
    prompt and replaces its stub; anything else is a body that continues it.
    """
    defines = re.search(r"^(?:async\s+)?(?:def|class)\s", code, re.MULTILINE)
    return f"{prompt}\n{code}" if defines else prompt + code
