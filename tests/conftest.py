"""Shared test fixtures: real guests, real TAPs in test-made namespaces.

Every network test runs inside a network namespace it creates here and
removes afterwards; no packet leaves it. Tests run as root (CI does).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A root launch caches in /var/cache/spt, which is the host's, not the
# suite's: every launch of the suite caches here instead (tests that look at
# a cache of their own set SPT_CACHE_DIR themselves). Removed at the end.
SUITE_CACHE = None
if "SPT_CACHE_DIR" not in os.environ:
    import tempfile

    SUITE_CACHE = tempfile.mkdtemp(prefix="spt-suite-cache-")
    os.environ["SPT_CACHE_DIR"] = SUITE_CACHE
BIN = Path(sys.executable).parent
SOLO5_SPT = str(BIN / "solo5-spt")
SPT = str(BIN / "spt")
GUESTS = ROOT / "guests" / "out"


def guest_path(name: str) -> str:
    path = GUESTS / (name + ".spt")
    if not path.exists():
        pytest.fail("guest %s is not built (make -C guests)" % path)
    return str(path)


@pytest.fixture
def guest():
    """guest("hello") -> path of the built kit guest."""
    return guest_path


def run(cmd, *, timeout: float = 120, netns: str | None = None, **kwargs):
    """Run a command (optionally inside a netns), capture text output; a
    hang fails the test instead of stalling the suite."""
    if netns:
        cmd = ["ip", "netns", "exec", netns] + list(cmd)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def spt_run(*args, **kwargs):
    """solo5-spt ARGS..."""
    return run([SOLO5_SPT, *map(str, args)], **kwargs)


def assert_refused(proc, *contains: str) -> str:
    """The launcher's error contract: exit 1, one line `solo5-spt: ...` on
    stderr (the usage text may follow where the CLI spec says so), never a
    traceback, and the line contains every fragment given."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and lines[0].startswith("solo5-spt: "), proc.stderr
    for fragment in contains:
        assert fragment in lines[0], (fragment, proc.stderr)
    return lines[0]


@dataclass
class Netns:
    name: str

    def exec(self, *cmd, **kwargs):
        return run(list(cmd), netns=self.name, **kwargs)

    def check(self, *cmd, **kwargs):
        proc = self.exec(*cmd, **kwargs)
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
        return proc

    def popen(self, *cmd, **kwargs):
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kwargs)


@pytest.fixture
def netns():
    """A fresh network namespace, deleted after the test."""
    name = "spt-t-" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name)
    ns.check("ip", "link", "set", "lo", "up")
    try:
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


@dataclass
class Tap:
    ns: Netns
    name: str
    host_ip: str
    guest_ip: str


@pytest.fixture
def tap(netns):
    """A TAP `tap0` in a fresh namespace, up, with 10.77.0.1/24 on the host
    side; a guest attached to it uses 10.77.0.2."""
    netns.check("ip", "tuntap", "add", "dev", "tap0", "mode", "tap")
    netns.check("ip", "addr", "add", "10.77.0.1/24", "dev", "tap0")
    netns.check("ip", "link", "set", "tap0", "up")
    return Tap(netns, "tap0", "10.77.0.1", "10.77.0.2")


@pytest.fixture
def block_file(tmp_path):
    """block_file(size) -> path of a zero-filled file of that many bytes."""

    def make(size: int, name: str = "disk.img") -> str:
        path = tmp_path / name
        with open(path, "wb") as f:
            f.truncate(size)
        return str(path)

    return make


def wait_for(predicate, timeout: float = 60, interval: float = 0.02, what: str = ""):
    """Poll predicate() until it returns something true, and return that.
    The timeout is only a bound (generous: the suite runs on busy machines);
    failing, it says what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("waited %.0fs for %s" % (
                timeout, what or getattr(predicate, "__name__", "a condition")))
        time.sleep(interval)


def stop(proc: subprocess.Popen, sig=signal.SIGKILL, timeout: float = 60):
    """End a process this test started (by its own Popen handle only)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=timeout)


@pytest.fixture
def running():
    """Popen guests started by a test; each is killed at teardown."""
    procs = []

    def start(*args, **kwargs):
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen([SOLO5_SPT, *map(str, args)], **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop(proc)


def read_line(stream, timeout: float = 60) -> str:
    """One line from a Popen pipe, bounded in time."""
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise AssertionError("waited %.0fs for a line of output" % timeout)
    line = stream.readline()
    return line.decode() if isinstance(line, bytes) else line


def which(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        pytest.fail("%s is not installed (scripts/install-deps installs it)" % tool)
    return path


# --- what ran where: the closing summary of a run ------------------------------

# A test runs on a real thing when it uses the fixture that brings it, or
# carries the marker (tests that make their namespaces by hand).
PLACES = {
    "real systemd": ("systemd",),
    "podman": ("podman_ns", "podman"),
    "containerd": ("containerd",),
    "gdb": ("session",),
    "network namespaces": ("netns", "tap", "topology", "taps", "quiet_tap", "fuzz_taps",
                           "podman_ns", "systemd"),
    "VM": ("vm", "qemu"),
}
PLACE_MARKERS = {"real systemd": "systemd", "podman": "podman", "containerd": "containerd",
                 "gdb": "gdb", "network namespaces": "netns", "VM": "vm"}
RAN_WHERE = pytest.StashKey[dict]()


def pytest_configure(config):
    for marker, what in (("systemd", "runs under a real systemd"),
                         ("podman", "runs a real podman"),
                         ("containerd", "runs a real containerd"),
                         ("gdb", "runs a real gdb or gdbserver"),
                         ("netns", "makes network namespaces of its own"),
                         ("vm", "boots a VM")):
        config.addinivalue_line("markers", "%s: %s" % (marker, what))
    config.stash[RAN_WHERE] = {place: set() for place in PLACES}


def pytest_unconfigure(config):
    if SUITE_CACHE is not None:
        shutil.rmtree(SUITE_CACHE, ignore_errors=True)


def places_of(item) -> list[str]:
    names = set(getattr(item, "fixturenames", ()))
    return [place for place, fixtures in PLACES.items()
            if names.intersection(fixtures) or item.get_closest_marker(PLACE_MARKERS[place])
            or (place == "VM" and os.environ.get("SPT_IN_ARM64_VM") == "1")]  # make test-arm64


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and not report.skipped:
        for place in places_of(item):
            item.config.stash[RAN_WHERE][place].add(item.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    ran = config.stash.get(RAN_WHERE, None)
    if ran is None:
        return
    terminalreporter.write_sep("-", "what ran where")
    terminalreporter.write_line(", ".join(
        "%s: %d test%s" % (place, len(ids), "" if len(ids) == 1 else "s")
        for place, ids in ran.items()))


def progress_note(request, text: str) -> None:
    """A line for the reader of a run (a fuzz seed), through pytest's
    terminal reporter, on a line of its own: in the progress by file, the
    test file's line starts again after it."""
    config = request.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        if reporter.verbosity < 0:  # -q: one run of dots, never ended by the reporter
            reporter.write("\n")
        reporter.write_line(text)
        if reporter.verbosity == 0:
            path = config.rootpath / request.node.nodeid.split("::")[0]
            reporter.currentfspath = path
            reporter.write(os.path.relpath(path, reporter.startpath) + " ")
