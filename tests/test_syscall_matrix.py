"""Syscall escape matrix: a guest gets its allow-list and nothing else.

The `syscall` guest makes one raw system call named on its command line.
For every x86_64 number from 0 to past the kernel's highest, and for each
argument rule on both sides of its boundary, the expected fate is computed
from the allow-list of spt-abi §5 written below as data (not read from
policies/, so the test checks the policy files instead of repeating them):
an allowed call returns to the guest, which prints `syscall: ret=N` and
exits 0; anything else kills the guest with SIGSYS before it returns.
The 32-bit entry (`int $0x80`) and x32 numbers (bit 30 set) must die too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import pytest
from conftest import guest_path, run
from hostile_util import TapNamespace, launch_env, record_figures, sha256, solo5_spt

SIGSYS = 31
U64 = (1 << 64) - 1
X32_BIT = 0x40000000
# 0..511 spans every number Linux assigns on x86_64 (the highest is below
# 480 as of 6.18); 512..547 are the x32-only slots, invalid without bit 30.
PROBED_NUMBERS = range(0, 548)

ARCH_SET_FS = 0x1002
BLOCK_SECTOR = 512
BLOCK_CAPACITY = 64 * 1024


class Fd(NamedTuple):
    """A descriptor the guest names symbolically (its real number is
    whatever the launcher chose, always >= 3: 0-2 are stdio). Numeric fds in
    the probes below are 0, 1, 2 or have high bits set, so they never equal
    one of these."""
    kind: str  # epoll | timer | blk | net


class Raw(str):
    """A guest buffer the guest names (buf: 64 KiB, ts: 32 zero bytes); no
    rule looks at pointers."""


EPOLL, TIMER, BLK, NET = Fd("epoll"), Fd("timer"), Fd("blk"), Fd("net")
BUF, TS = Raw("buf"), Raw("ts")
CONSOLE = 1


class Devices(NamedTuple):
    block: bool
    net: bool
    sector: int = BLOCK_SECTOR
    capacity: int = BLOCK_CAPACITY


def block_access(args, dev: Devices) -> bool:
    fd, _buf, count, offset = args[:4]
    return (dev.block and fd == BLK and count == dev.sector
            and offset <= dev.capacity - dev.sector)  # offsets compare as u64


# spt-abi §5, the system call allow-list (x86_64), as data:
# number -> (name, when a call with these arguments is allowed).
ALLOW_LIST: dict[int, tuple[str, Callable]] = {
    0: ("read", lambda a, d: d.net and a[0] == NET),
    1: ("write", lambda a, d: a[0] == CONSOLE or (d.net and a[0] == NET)),
    17: ("pread64", block_access),
    18: ("pwrite64", block_access),
    158: ("arch_prctl", lambda a, d: a[0] == ARCH_SET_FS),
    228: ("clock_gettime", lambda a, d: a[0] in (0, 1)),
    231: ("exit_group", lambda a, d: True),
    281: ("epoll_pwait", lambda a, d: a[0] == EPOLL),
    286: ("timerfd_settime", lambda a, d: a[0] == TIMER),
}
NUMBER = {name: nr for nr, (name, _) in ALLOW_LIST.items()}


def allowed(nr: int, args, dev: Devices) -> bool:
    rule = ALLOW_LIST.get(nr)
    return rule is not None and rule[1](args, dev)


def token(value) -> str:
    """The guest's spelling of an argument."""
    return value.kind if isinstance(value, Fd) else str(value)


def symbolic(value):
    """An argument as the allow-list sees it: Fd, Raw, or the u64 the kernel gets."""
    return value if isinstance(value, (Fd, Raw)) else value & U64


class Probe(NamedTuple):
    nr: int
    args: tuple = ()
    int80: bool = False
    # For allowed calls: the return values that count as success (None: any).
    returns: tuple | None = None

    def cmdline(self) -> list[str]:
        words = [str(self.nr)] + [token(a) for a in self.args]
        return (["int80"] if self.int80 else []) + words

    def expect_allowed(self, dev: Devices) -> bool:
        if self.int80 or self.nr & X32_BIT:
            return False
        args = tuple(symbolic(a) for a in self.args) + (0,) * (6 - len(self.args))
        return allowed(self.nr, args, dev)


class Outcome(NamedTuple):
    rc: int
    stdout: str
    stderr: str


def ret_of(stdout: str) -> int | None:
    """The guest's report (a write probe may put bytes before it)."""
    found = re.search(r"syscall: ret=(-?\d+)\n", stdout)
    return int(found[1]) if found else None


def verdict(probe: Probe, dev: Devices, out: Outcome) -> str | None:
    """None if the outcome is what the allow-list says, else what went wrong."""
    where = "%s -> rc=%d stdout=%r stderr=%r" % (" ".join(probe.cmdline()), out.rc,
                                                  out.stdout, out.stderr)
    if probe.expect_allowed(dev):
        if probe.nr == NUMBER["exit_group"]:
            status = symbolic(probe.args[0]) & 0xFF if probe.args else 0
            return None if out.rc == status and "ret=" not in out.stdout else "exit: " + where
        ret = ret_of(out.stdout)
        if out.rc != 0 or ret is None:
            return "allowed call did not return: " + where
        if probe.returns is not None and ret not in probe.returns:
            return "allowed call returned %d, expected one of %s: %s" % (ret, probe.returns, where)
        return None
    if out.rc != -SIGSYS or "ret=" in out.stdout or out.stderr:
        return "expected death by SIGSYS: " + where
    return None


def launch(kernel: str, words: list[str], device_args=(), wrap=lambda c: c) -> Outcome:
    # A session of its own: even a call that slipped through (vhangup, a
    # signal to the process group) could not reach the test's terminal.
    cmd = wrap(solo5_spt("--mem=2", *device_args, kernel, *words))
    proc = run(cmd, timeout=120, env=launch_env(), start_new_session=True)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


# --- every number, zero arguments ------------------------------------------------

# The control for a number that was not killed: the same call, zero
# arguments, from a process whose only seccomp rule kills that number. If it
# lives there too, the host kernel serves the number before seccomp filters
# run (a patched kernel can; a stock one does not), and no filter - spt's or
# any other - could stop it: a fact about the host, reported, not a hole in
# spt's policy. If the control dies, spt's filter let the call through: fail.
SECCOMP_CONTROL = """
import ctypes, sys, pyseccomp as sc
nr = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
f = sc.SyscallFilter(sc.ALLOW)
f.add_rule(sc.KILL_PROCESS, nr)
f.load()
libc.syscall(ctypes.c_long(nr), 0, 0, 0, 0, 0, 0)
"""


def host_skips_seccomp(nr: int) -> bool:
    proc = subprocess.run([sys.executable, "-c", SECCOMP_CONTROL, str(nr)], capture_output=True,
                          timeout=120, stdin=subprocess.DEVNULL, start_new_session=True)
    return proc.returncode != -SIGSYS


NO_DEVICES = Devices(block=False, net=False)


def test_every_syscall_number_is_killed_unless_the_allow_list_admits_it(request):
    kernel = guest_path("syscall")
    probes = [Probe(nr, returns=(-14,) if nr == NUMBER["clock_gettime"] else None)
              for nr in PROBED_NUMBERS]
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda p: launch(kernel, p.cmdline()), probes))
    failures, host_bypass = [], []
    for probe, out in zip(probes, outcomes):
        failure = verdict(probe, NO_DEVICES, out)
        if failure and not probe.expect_allowed(NO_DEVICES) and host_skips_seccomp(probe.nr):
            host_bypass.append(probe.nr)
        elif failure:
            failures.append(failure)
    survivors = [p.nr for p in probes if p.expect_allowed(NO_DEVICES)]
    record_figures(request.config, "syscall-numbers", {
        "numbers": "%d..%d" % (PROBED_NUMBERS[0], PROBED_NUMBERS[-1]),
        "probed": len(probes), "allowed_with_zero_args": survivors,
        "killed": sum(o.rc == -SIGSYS for o in outcomes), "host_kernel_bypass": host_bypass,
        "failures": len(failures)})
    assert not failures, "\n".join(failures[:30])
    # With zero arguments only clock_gettime(CLOCK_REALTIME, NULL) (-EFAULT)
    # and exit_group(0) may live; everything else has no rule or fails one.
    assert survivors == [NUMBER["clock_gettime"], NUMBER["exit_group"]]


# Plain numbers, and the two calls that would be allowed as x86_64 calls.
X32_PROBES = [Probe(X32_BIT | nr) for nr in (0, 1, 15, 39, 60, 158, 228, 231, 281, 286, 512, 547)]
X32_PROBES += [Probe(X32_BIT | 1, (CONSOLE, BUF, 1)), Probe(X32_BIT | 228, (1, TS))]
# i386 numbers: 1 exit, 4 write, 20 getpid, 252 exit_group, 265 clock_gettime.
INT80_PROBES = [Probe(1, (0,), int80=True), Probe(4, (CONSOLE, BUF, 1), int80=True),
                Probe(20, int80=True), Probe(252, (0,), int80=True),
                Probe(265, (1, TS), int80=True)]


@pytest.mark.parametrize("probe", X32_PROBES + INT80_PROBES, ids=lambda p: " ".join(p.cmdline()))
def test_x32_numbers_and_the_32_bit_entry_are_killed(guest, probe):
    out = launch(guest("syscall"), probe.cmdline())
    assert verdict(probe, NO_DEVICES, out) is None


def test_the_sequence_of_allowed_calls_succeeds(guest):
    out = launch(guest("syscall"), ["seq"])
    assert out.rc == 0 and "syscall: seq ok" in out.stdout, out


# --- argument rules on both sides, with a block and a net device -----------------

CAP, SEC = BLOCK_CAPACITY, BLOCK_SECTOR
WITH_DEVICES = Devices(block=True, net=True)

ARGUMENT_PROBES = [
    # console and net writes; stderr and every other fd are not the console
    Probe(1, (CONSOLE, BUF, 1), returns=(1,)), Probe(1, (2, BUF, 1)), Probe(1, (0, BUF, 1)),
    Probe(1, (NET, BUF, 60), returns=(60,)), Probe(1, (BLK, BUF, SEC)), Probe(1, (EPOLL, BUF, 8)),
    Probe(1, (TIMER, BUF, 8)), Probe(1, ((1 << 32) | CONSOLE, BUF, 1)),
    # reads: only the net device
    Probe(0, (NET, BUF, 1514)), Probe(0, (0, BUF, 1)), Probe(0, (CONSOLE, BUF, 1)),
    Probe(0, (BLK, BUF, SEC)), Probe(0, (TIMER, BUF, 8)), Probe(0, (EPOLL, BUF, 8)),
    # pread64 / pwrite64: one sector, inside the device, on the block fd only
    *[Probe(nr, args, returns=(SEC,) if nr == 17 else None) for nr in (17, 18) for args in (
        (BLK, BUF, SEC, 0), (BLK, BUF, SEC, CAP - SEC), (BLK, BUF, SEC, 1),
        (BLK, BUF, SEC, CAP - SEC + 1), (BLK, BUF, SEC, CAP), (BLK, BUF, SEC, CAP + SEC),
        (BLK, BUF, SEC, -SEC), (BLK, BUF, SEC - 1, 0), (BLK, BUF, 2 * SEC, 0), (BLK, BUF, 0, 0),
        (BLK, BUF, (1 << 32) | SEC, 0), (NET, BUF, SEC, 0), (0, BUF, SEC, 0),
        (CONSOLE, BUF, SEC, 0))],
    # epoll_pwait only on the epoll instance
    Probe(281, (EPOLL, BUF, 1, 0, 0, 8), returns=(0, 1)), Probe(281, (TIMER, BUF, 1, 0, 0, 8)),
    Probe(281, (NET, BUF, 1, 0, 0, 8)), Probe(281, (BLK, BUF, 1, 0, 0, 8)),
    Probe(281, (0, BUF, 1, 0, 0, 8)),
    # timerfd_settime only on the timer
    Probe(286, (TIMER, 0, TS, 0), returns=(0,)), Probe(286, (EPOLL, 0, TS, 0)),
    Probe(286, (NET, 0, TS, 0)), Probe(286, (0, 0, TS, 0)),
    # clock_gettime: REALTIME and MONOTONIC only
    Probe(228, (0, TS), returns=(0,)), Probe(228, (1, TS), returns=(0,)),
    *[Probe(228, (clock, TS)) for clock in (2, 3, 4, 5, 6, 7, 11, -1, (1 << 32) | 1)],
    # arch_prctl: ARCH_SET_FS only
    Probe(158, (ARCH_SET_FS, BUF), returns=(0,)),
    *[Probe(158, (code, BUF))
      for code in (0x1001, 0x1003, 0x1004, 0x3001, 0, (1 << 32) | ARCH_SET_FS)],
    Probe(231, (7,)),
]


@pytest.mark.netns
def test_argument_rules_hold_on_both_sides(tmp_path, request):
    disk = tmp_path / "disk.img"
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(CAP))
    disk.write_bytes(pattern)
    kernel = guest_path("syscall_dev")
    ns = TapNamespace(1, prefix="spt-sx")
    devices = ("--block:storage=%s" % disk, "--net:service0=%s" % ns.taps[0])
    failures = []
    try:
        for probe in ARGUMENT_PROBES:
            before = sha256(disk)
            out = launch(kernel, probe.cmdline(), devices, wrap=ns.wrap)
            failure = verdict(probe, WITH_DEVICES, out)
            if failure:
                failures.append(failure)
            if disk.stat().st_size != CAP:
                failures.append("the block file changed size: %s" % " ".join(probe.cmdline()))
            if not probe.expect_allowed(WITH_DEVICES) and sha256(disk) != before:
                failures.append("a killed call changed the disk: %s" % " ".join(probe.cmdline()))
        seq = launch(kernel, ["seq"], devices, wrap=ns.wrap)
    finally:
        ns.close()
    assert seq.rc == 0 and "syscall: seq ok" in seq.stdout, seq
    sides = {True: 0, False: 0}
    for probe in ARGUMENT_PROBES:
        sides[probe.expect_allowed(WITH_DEVICES)] += 1
    record_figures(request.config, "syscall-arguments", {
        "probes": len(ARGUMENT_PROBES), "allowed": sides[True], "killed": sides[False],
        "failures": len(failures)})
    assert not failures, "\n".join(failures)
    assert sides[True] >= 12 and sides[False] >= 40, sides


@pytest.mark.netns
def test_filter_rejects_a_block_size_other_than_the_declared_one(tmp_path):
    """With --block-sector-size 4096 the count rule moves with it."""
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(CAP))
    dev = Devices(block=True, net=True, sector=4096)
    kernel = guest_path("syscall_dev")
    ns = TapNamespace(1, prefix="spt-sx")
    devices = ("--block:storage=%s" % disk, "--block-sector-size:storage=4096",
               "--net:service0=%s" % ns.taps[0])
    try:
        probes = [Probe(17, (BLK, BUF, 4096, CAP - 4096), returns=(4096,)),
                  Probe(17, (BLK, BUF, 512, 0)), Probe(17, (BLK, BUF, 4096, CAP - 512))]
        results = [(p, launch(kernel, p.cmdline(), devices, wrap=ns.wrap)) for p in probes]
    finally:
        ns.close()
    for probe, out in results:
        assert verdict(probe, dev, out) is None
