"""Helpers of the hostile-input suite (fuzz, syscall matrix, fd hygiene,
block integrity, bad environment): namespaces with several TAPs, the
sd_notify socket that tells "the guest started" from "the launcher died",
file snapshots, and the figures docs/security.md quotes.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import subprocess
import time
import uuid
from pathlib import Path

from conftest import SOLO5_SPT


def record_figures(config, key: str, figures: dict) -> None:
    """Keep this run's figures under .pytest_cache/v/spt/security/KEY
    (docs/security.md quotes the last full run)."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        cache.set("spt/security/" + key, dict(figures, when=time.strftime("%Y-%m-%d %H:%M:%S")))


class TapNamespace:
    """A network namespace of our own with `count` TAPs, all up; deleted by
    `close()`. Nothing reaches the host's network from here."""

    def __init__(self, count: int, prefix: str = "spt-h", quiet: bool = False):
        """quiet: IPv6 off, so the host side sends nothing on its own (no
        router solicitations or DAD) and an idle guest stays idle."""
        self.name = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
        self.taps = ["tap%d" % i for i in range(count)]
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=60)
        try:
            if quiet:
                for scope in ("all", "default"):
                    self.check("sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % scope)
            self.check("ip", "link", "set", "lo", "up")
            for i, tap in enumerate(self.taps):
                self.check("ip", "tuntap", "add", "dev", tap, "mode", "tap")
                self.check("ip", "addr", "add", "10.78.%d.1/24" % i, "dev", tap)
                self.check("ip", "link", "set", tap, "up")
        except BaseException:
            self.close()
            raise

    def wrap(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def check(self, *cmd: str) -> None:
        proc = subprocess.run(self.wrap(list(cmd)), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False, timeout=60)


class NotifySocket:
    """A bound sd_notify datagram socket (a path, so it also works across
    network namespaces, where abstract names do not). The trampoline sends
    READY=1 after every step that can fail and just before it drops the
    tender and jumps: so READY=1 means the guest was about to start."""

    def __init__(self, directory: Path):
        self.path = str(directory / ("n%s.sock" % uuid.uuid4().hex[:10]))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(self.path)
        self.messages: list[bytes] = []

    def drain(self, timeout: float = 0) -> bool:
        """Collect what arrived (waiting up to `timeout`); True once READY=1 came."""
        while True:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return self.ready
            self.messages.append(self.sock.recv(4096))
            timeout = 0

    @property
    def ready(self) -> bool:
        return any(b"READY=1" in m for m in self.messages)

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def launch_env(**extra: str) -> dict:
    """The environment of a launch under test: ours, minus the hooks that
    change what a launch does, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPT_PLAN_DUMP", "SPT_TIMING", "NOTIFY_SOCKET", "SPT_STOP_ON_TERM")}
    env.update(extra)
    return env


def solo5_spt(*args) -> list[str]:
    return [SOLO5_SPT, *map(str, args)]


def sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def snapshot(directory) -> dict:
    """{name: (size, sha256)} of every file in `directory` (not recursive):
    to show that a refused launch changed nothing on disk."""
    out = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False):
            out[entry.name] = (entry.stat().st_size, sha256(entry.path))
        else:
            out[entry.name] = ("not a file",)
    return out


def fd_table(pid: int) -> dict[int, str]:
    """{fd: what it points at} of a running process."""
    base = "/proc/%d/fd" % pid
    table = {}
    for name in os.listdir(base):
        try:
            table[int(name)] = os.readlink(os.path.join(base, name))
        except FileNotFoundError:
            pass
    return table


def current_syscall(pid: int) -> int | None:
    """The number of the system call `pid` is blocked in, if any."""
    try:
        with open("/proc/%d/syscall" % pid) as f:
            first = f.read().split(" ", 1)[0].strip()
    except OSError:
        return None
    return int(first) if first.lstrip("-").isdigit() else None


def wait_exit(proc: subprocess.Popen, timeout: float):
    """The return code, or None if it is still running after `timeout`."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
