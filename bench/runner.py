"""What every figure needs: the tenders to compare, the guests, processes
started and timed without the bench's own overhead in the way, and network
namespaces the bench creates (and deletes) for its traffic.

Processes are started with posix_spawn (no fork of the bench's own memory)
and waited for through a pidfd, so a hang ends in a BenchError after a
deadline instead of stalling `make bench`. Only processes started here are
ever signalled, always by their own pid.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUEST_DIR = ROOT / "guests" / "out"


class BenchError(Exception):
    """A measurement cannot be made: one line for the operator."""


@dataclass(frozen=True)
class Tender:
    """A program taking Solo5's `solo5-spt` argv."""
    label: str
    path: str

    def argv(self, *args) -> list[str]:
        return [self.path, *map(str, args)]


@dataclass(frozen=True)
class Sizes:
    launch_runs: int = 50
    memory_runs: int = 3
    block_bytes: int = 4 << 30  # per block run, read or write: about a second
    block_file_bytes: int = 64 << 20  # the device; runs wrap around it
    io_reps: int = 5
    net_seconds: float = 3.0
    ping_count: int = 100000
    density_n: int = 200
    density_window: int = 4  # launches in flight at once


QUICK = Sizes(launch_runs=5, memory_runs=1, block_bytes=4 << 20, block_file_bytes=1 << 20,
              io_reps=1, net_seconds=0.5, ping_count=1000, density_n=3, density_window=2)


@dataclass
class Context:
    sizes: Sizes
    spt: Tender
    compare: Tender | None
    interpreter: str  # the launcher's own interpreter (its #! line)
    tmp: str
    env: dict = field(default_factory=dict)

    def tenders(self) -> list[Tender]:
        return [self.spt] + ([self.compare] if self.compare else [])

    def guest(self, name: str, section=None) -> str | None:
        """The built kit guest `name`, or None; with `section`, a missing
        guest is also noted there as the reason its figure is absent."""
        path = GUEST_DIR / (name + ".spt")
        if path.is_file():
            return str(path)
        if section is not None:
            section.notes.append("Not measured: guests/out/%s.spt is not built." % name)
        return None

    def floor_argv(self, code: str = "pass") -> list[str]:
        """The Python floor: the launcher's interpreter with nothing loaded."""
        return [self.interpreter, "-I", "-S", "-c", code]


def shebang_interpreter(script: str) -> str:
    """The interpreter a console script runs under, from its `#!` line."""
    try:
        with open(script, "rb") as f:
            first = f.readline(4096)
    except OSError as exc:
        raise BenchError("%s: %s" % (script, exc.strerror)) from None
    if not first.startswith(b"#!"):
        raise BenchError("%s: not a script with a #! line; cannot tell its interpreter" % script)
    words = first[2:].decode(errors="replace").split()
    if not words:
        raise BenchError("%s: empty #! line" % script)
    return words[0]


def spt_tender() -> Tender:
    """This checkout's launcher: the solo5-spt next to the running interpreter."""
    path = Path(sys.executable).parent / "solo5-spt"
    if not path.is_file():
        found = shutil.which("solo5-spt")
        if not found:
            raise BenchError("solo5-spt not found next to %s (run `make setup`)" % sys.executable)
        path = Path(found)
    return Tender("spt", str(path))


def compare_tender(value: str | None) -> Tender | None:
    """SPT_COMPARE=/path/to/solo5-spt, another tender taking the same argv."""
    if not value:
        return None
    if not (os.path.isfile(value) and os.access(value, os.X_OK)):
        raise BenchError("SPT_COMPARE=%s is not an executable file" % value)
    return Tender("compare", os.path.abspath(value))


# --- processes ---------------------------------------------------------------

def spawn(argv: list[str], env: dict, stdout: int | str = os.devnull,
          stderr: int | str = os.devnull) -> int:
    """Start argv with stdin from /dev/null and stdout/stderr to an fd or a
    path (opened for append); returns the pid."""
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    for target, where in ((1, stdout), (2, stderr)):
        if isinstance(where, int):
            actions.append((os.POSIX_SPAWN_DUP2, where, target))
        else:
            actions.append((os.POSIX_SPAWN_OPEN, target, where,
                            os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    try:
        return os.posix_spawnp(argv[0], argv, env, file_actions=actions)
    except OSError as exc:
        raise BenchError("cannot start %s: %s" % (argv[0], exc.strerror)) from None


def wait_exit(pid: int, timeout: float) -> int:
    """Exit code of a child (negative: killed by that signal); past the
    deadline the child is killed and BenchError raised."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = None  # already a zombie: waitpid below returns at once
    try:
        if pidfd is not None:
            ready, _, _ = select.select([pidfd], [], [], timeout)
            if not ready:
                kill_and_reap(pid)
                raise BenchError("pid %d still running after %.0f s; killed" % (pid, timeout))
        _, status = os.waitpid(pid, 0)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return os.waitstatus_to_exitcode(status)


def kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def timed(argv: list[str], env: dict, timeout: float = 30, stdout: int | str = os.devnull,
          stderr: int | str = os.devnull) -> tuple[int, int]:
    """(wall nanoseconds from spawn to reaped exit, exit code)."""
    start = time.perf_counter_ns()
    pid = spawn(argv, env, stdout, stderr)
    code = wait_exit(pid, timeout)
    return time.perf_counter_ns() - start, code


def run(argv: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run to completion with captured text output, bounded in time."""
    try:
        return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("%s did not finish within %.0f s"
                         % (" ".join(argv[:3]), timeout)) from None
    except OSError as exc:
        raise BenchError("cannot run %s: %s" % (argv[0], exc.strerror)) from None


@dataclass
class Child:
    """A long-running process started here. `code` is set once it has been
    reaped: from then on its pid may belong to someone else, so it is never
    signalled again."""
    pid: int
    code: int | None = None


def start(argv: list[str], env: dict, stdout: int | str = os.devnull,
          stderr: int | str = os.devnull) -> Child:
    return Child(spawn(argv, env, stdout, stderr))


def wait_for_text(path: str, text: str, child: Child, timeout: float = 10) -> str:
    """Poll a child's output file until `text` appears; BenchError if the
    child exits first or the deadline passes (the child is then stopped)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, errors="replace") as f:
                content = f.read()
        except FileNotFoundError:
            content = ""
        if text in content:
            return content
        done, status = os.waitpid(child.pid, os.WNOHANG)
        if done:
            child.code = os.waitstatus_to_exitcode(status)
            raise BenchError("exited (%d) before printing %r: %s"
                             % (child.code, text, last_line(content)))
        if time.monotonic() > deadline:
            stop(child)
            raise BenchError("no %r within %.0f s: %s" % (text, timeout, last_line(content)))
        time.sleep(0.01)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def stop(child: Child, timeout: float = 10) -> int:
    """SIGTERM a child started here and reap it (SIGKILL past the
    deadline); its exit code. A child already reaped is left alone."""
    if child.code is None:
        os.kill(child.pid, signal.SIGTERM)  # unreaped: the pid is still ours
        child.code = wait_exit(child.pid, timeout)
    return child.code


# --- network namespaces -------------------------------------------------------

class Netns:
    """A network namespace made for one measurement and deleted after it:
    every packet the bench sends stays inside."""

    def __init__(self, tag: str):
        self.name = "sptb-%s-%s" % (tag, uuid.uuid4().hex[:6])

    def __enter__(self) -> "Netns":
        self._ip("netns", "add", self.name)
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self._delete()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._delete()

    def _delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)

    @staticmethod
    def _ip(*args: str) -> None:
        proc = subprocess.run(["ip", *args], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30)
        if proc.returncode != 0:
            raise BenchError("ip %s: %s" % (" ".join(args), last_line(proc.stderr)))

    def ip(self, *args: str) -> None:
        self._ip("-n", self.name, *args)

    def argv(self, argv: list[str]) -> list[str]:
        """argv run inside the namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def add_tap(self, name: str, host_cidr: str) -> None:
        self.ip("tuntap", "add", "dev", name, "mode", "tap")
        self.ip("addr", "add", host_cidr, "dev", name)
        self.ip("link", "set", name, "up")
