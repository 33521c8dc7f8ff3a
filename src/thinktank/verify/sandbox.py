"""Run model-written Python where it cannot reach the host.

**Threat model.** The program is hostile. It may try to write the user's files
(the installed thinktank package among them, so that its code would run on the
host the next time thinktank starts), read the user's private files, signal or
kill the user's processes, fork without end, outlive the wall-clock limit in a
grandchild that left its session, fill the disk or the memory, flood its
output, or reach the network. It runs under bubblewrap (``bwrap``) with:

- **a read-only view of the system and nothing else**: its root holds /usr (with
  /bin, /lib, ... as on the host) and the interpreter's installation, read-only,
  with the interpreter's site-packages hidden; the user's home, /etc, the host's
  /tmp, the checkout and the ledger do not exist in it. Its root and /dev are
  read-only too;
- **a private /tmp** (a tmpfs of ``Limits.tmp_bytes`` in all), its working
  directory and the only place it can write; it is gone when the program ends;
- **no network**: a network namespace of its own (not even the host's loopback);
- **its own PID namespace**: it sees and signals none of the host's processes,
  and when it ends or is killed the kernel kills everything it started;
- **an unprivileged uid** (65534) with no capabilities, no new privileges and no
  further user namespaces. When thinktank runs as root, an outer bubblewrap
  drops to uid 65534 before the inner one starts, so that the kernel applies the
  process limit (it exempts root) and root's files stay out of reach;
- **resource limits** (setrlimit, per process): address space, CPU seconds,
  processes and threads, open files, size of a file written, no core dumps;
- **a wall-clock limit and an output limit enforced from outside**: past either,
  the sandbox is killed (its whole PID namespace with it) and `run_python`
  returns at once; it never waits on anything the program left behind.

Memory is capped per process, so the program's worst case is ``processes x
memory_bytes`` for at most ``wall_seconds``. Where bubblewrap is missing or
cannot create its namespaces, `run_python` raises `SandboxUnavailable`: there is
never a fallback to less isolation.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from thinktank.errors import ThinktankError

#: The uid (and gid) the program runs as: nobody.
SANDBOX_UID = 65534
#: Where the program's text is inside the sandbox (read-only).
PROGRAM_PATH = "/sandbox/program.py"
#: Once the output pipes close, how long bubblewrap may take to exit (it holds them
#: open until it does, so this is a formality, even at the wall clock).
_EXIT_GRACE_SECONDS = 0.2


class SandboxUnavailable(ThinktankError):
    """Model-written code cannot be isolated on this machine, so it is not run."""


@dataclass(frozen=True)
class Limits:
    """What one program may use. Memory and CPU are per process."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    #: The largest file it may write.
    file_bytes: int = 16 << 20
    #: Its private /tmp, all files together.
    tmp_bytes: int = 64 << 20
    #: Processes and threads at once, the program itself included.
    processes: int = 8
    open_files: int = 64
    #: stdout and stderr together; a program that writes more is killed.
    output_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"sandbox limit {name} must be positive, got {value}")


@dataclass(frozen=True)
class SandboxResult:
    #: Exited with status 0 within every limit.
    passed: bool
    #: None when the sandbox killed it (wall clock or output).
    returncode: int | None
    timed_out: bool
    output_exceeded: bool
    stdout: str
    stderr: str


# Runs first inside the sandbox: limits itself, then runs the program in the same
# interpreter (no preexec_fn, which is unsafe when the caller has threads).
_LAUNCHER = """
import resource, runpy, sys
for name, value in zip(("AS", "CPU", "FSIZE", "NOFILE", "NPROC", "CORE"), sys.argv[1:7]):
    resource.setrlimit(getattr(resource, "RLIMIT_" + name), (int(value), int(value)))
sys.argv = sys.argv[7:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_python(
    code: str, limits: Limits | None = None, *, peer: str | None = None
) -> SandboxResult:
    """Execute ``code`` as a script in the sandbox; ``passed`` if it exits 0 within
    the limits. Raises `SandboxUnavailable` where the sandbox cannot be built.

    ``peer`` is a second program, run at the same time in a sandbox of its own (its
    own files, processes and limits) and killed when ``code`` ends. The two share
    nothing but two pipes: each finds its end's file descriptors, to read and to
    write, in ``sys.argv[1:3]``. The peer's output is discarded. This is how a grader
    calls a candidate's code without the candidate reaching the tests or the verdict
    (`thinktank.verify.harness`).
    """
    limits = limits or Limits()
    prefix = _isolation()
    with contextlib.ExitStack() as running:
        channel: tuple[int, ...] = ()
        if peer is not None:
            to_peer, from_peer = os.pipe(), os.pipe()
            try:
                _start(running, prefix, peer, limits, (to_peer[0], from_peer[1]), quiet=True)
                channel = (from_peer[0], to_peer[1])
                process = _start(running, prefix, code, limits, channel)
            finally:
                for fd in (*to_peer, *from_peer):
                    os.close(fd)  # the sandboxes hold their own copies
        else:
            process = _start(running, prefix, code, limits, channel)
        stdout, stderr, stopped = _collect(process, limits)
    timed_out, output_exceeded = stopped == "wall clock", stopped == "output"
    returncode = None if stopped else process.returncode
    return SandboxResult(
        passed=returncode == 0,
        returncode=returncode,
        timed_out=timed_out,
        output_exceeded=output_exceeded,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
    )


def _start(
    running: contextlib.ExitStack,
    prefix: tuple[str, ...],
    code: str,
    limits: Limits,
    channel: tuple[int, ...],
    *,
    quiet: bool = False,
) -> subprocess.Popen:
    """Start ``code`` in a sandbox that ``running`` kills on exit; it inherits the
    ``channel`` file descriptors (named in its argv) and no others. A ``quiet`` one's
    output goes nowhere."""
    program = running.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (the stack closes it)
    program.write(code.encode("utf-8", "replace"))
    program.flush()
    program.seek(0)
    output = subprocess.DEVNULL if quiet else subprocess.PIPE
    process = subprocess.Popen(
        [*prefix, *_inner(limits, program.fileno()), *map(str, channel)],
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
        pass_fds=(program.fileno(), *channel),
        start_new_session=True,  # bubblewrap and its namespace's init: one group
    )
    running.callback(_kill, process)
    return process


def _kill(process: subprocess.Popen) -> None:
    """Kill bubblewrap and its namespace's init at once (unless it has ended): the kernel
    then kills everything in the PID namespace."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _collect(process: subprocess.Popen, limits: Limits) -> tuple[bytes, bytes, str | None]:
    """The program's output once it ends, and what stopped it: "wall clock", "output" or
    None (it ended by itself). The wall clock counts from here; nothing waits past it."""
    kept = {process.stdout: bytearray(), process.stderr: bytearray()}
    stopped = _read_until_end(process, kept, limits)
    return bytes(kept[process.stdout]), bytes(kept[process.stderr]), stopped


def _read_until_end(
    process: subprocess.Popen, kept: dict[object, bytearray], limits: Limits
) -> str | None:
    deadline = time.monotonic() + limits.wall_seconds
    room = limits.output_bytes
    with selectors.DefaultSelector() as selector:
        for stream in kept:
            os.set_blocking(stream.fileno(), False)
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return "wall clock"
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                kept[key.fileobj] += chunk[:room]
                room -= len(chunk)
                if room < 0:
                    return "output"
    try:
        process.wait(max(deadline - time.monotonic(), _EXIT_GRACE_SECONDS))
    except subprocess.TimeoutExpired:
        return "wall clock"
    return None


def _inner(limits: Limits, program_fd: int) -> list[str]:
    """The bubblewrap command that runs the program (as the user, or as nobody)."""
    # The process limit counts bubblewrap's init (pid 1 of the namespace) too.
    rlimits = (limits.memory_bytes, limits.cpu_seconds, limits.file_bytes,
               limits.open_files, limits.processes + 1, 0)  # fmt: skip
    hidden = [arg for path in _site_directories() for arg in ("--perms", "0555", "--size",
              "4096", "--tmpfs", path)]  # fmt: skip
    return [
        _bwrap(),
        "--unshare-all", "--unshare-user", "--disable-userns",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox",
        *_system_view(), *hidden,
        "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
        "--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp",
        "--ro-bind-data", str(program_fd), PROGRAM_PATH,
        "--remount-ro", "/",
        "--chdir", "/tmp", "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
        "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8",
        _interpreter(), "-I", "-S", "-B", "-c", _LAUNCHER, *map(str, rlimits), PROGRAM_PATH,
    ]  # fmt: skip


def _outer() -> list[str]:
    """For root: a bubblewrap that shows the system as the inner one will (so nobody can
    reach the interpreter under /root, say), then drops to uid 65534.

    Its own PID namespace makes killing it kill everything below, although the drop
    clears the parent-death signal of the inner bubblewrap. It shows the host's
    /proc because the inner one can only mount a new /proc where one is fully visible.
    """
    return [
        _bwrap(), "--unshare-pid", "--die-with-parent", *_system_view(),
        "--bind", "/proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
        _tool("setpriv", "util-linux"), f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}",
        "--clear-groups", "--",
    ]  # fmt: skip


def _system_view() -> list[str]:
    """Read-only mounts of /usr, the top-level links into it, and the interpreter."""
    view = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/", name)
        if path.is_symlink():
            view += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            view += ["--ro-bind", str(path), str(path)]
    for installation in _installations():
        for parent in reversed(installation.parents[:-1]):  # readable by nobody on the way
            view += ["--perms", "0755", "--dir", str(parent)]
        view += ["--ro-bind", str(installation), str(installation)]
    return view


@cache
def _installations() -> tuple[Path, ...]:
    """The interpreter's installation directories that /usr does not already hold."""
    found = []
    for prefix in {Path(sys.base_prefix).resolve(), Path(sys.base_exec_prefix).resolve()}:
        if not prefix.is_relative_to("/usr") and prefix != Path("/"):
            found.append(prefix)
    return tuple(sorted(found))


@cache
def _site_directories() -> tuple[str, ...]:
    """The base interpreter's site-packages inside what the sandbox sees: hidden, so
    that a program cannot read installed packages' data (benchmarks' hidden tests)."""
    roots = [Path("/usr"), *_installations()]
    found = []
    for directory in site.getsitepackages([sys.base_prefix, sys.base_exec_prefix]):
        path = Path(directory).resolve()
        if path.is_dir() and any(path.is_relative_to(root) for root in roots):
            found.append(str(path))
    return tuple(sorted(set(found)))


@cache
def _interpreter() -> str:
    """The base interpreter (not a virtual environment's, whose packages stay out)."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


@cache
def _bwrap() -> str:
    return _tool("bwrap", "bubblewrap")


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SandboxUnavailable(
            f"model-written code runs only in a sandbox, and `{name}` is missing: install "
            f"the {package} package (Debian/Ubuntu: apt-get install {package})"
        )
    return path


@cache
def _isolation() -> tuple[str, ...]:
    """The command prefix the inner bubblewrap needs (empty unless root), once checked
    by running a program that must see the sandbox as described above."""
    prefix = tuple(_outer()) if os.geteuid() == 0 else ()
    probe = (
        "import os\n"
        f"assert os.getuid() == {SANDBOX_UID} and os.getcwd() == '/tmp'\n"
        "assert not os.path.exists('/etc')\n"
        "print('isolated')\n"
    )
    with tempfile.TemporaryFile() as program:
        program.write(probe.encode())
        program.flush()
        program.seek(0)
        command = [*prefix, *_inner(Limits(), program.fileno())]
        result = subprocess.run(command, capture_output=True, pass_fds=(program.fileno(),),
                                timeout=60, check=False)  # fmt: skip
    if result.stdout.strip() != b"isolated":
        reason = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        raise SandboxUnavailable(
            "cannot build the sandbox for model-written code with bubblewrap "
            f"({reason[0]}); it needs unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)"
        )
    return prefix


def python_solution(prompt: str, code: str) -> str:
    """The program a code answer stands for, given the prompt it answers.

    A whole definition (``def``/``class`` at the start of a line) follows the
    prompt and replaces its stub; anything else is a body that continues it.
    """
    defines = re.search(r"^(?:async\s+)?(?:def|class)\s", code, re.MULTILINE)
    return f"{prompt}\n{code}" if defines else prompt + code
