"""fd hygiene: whatever the parent leaves open, the guest holds exactly its set.

The launcher is started (through tests/fd_filler.py) with every fd from 3
to 1023 taken by something a careless parent could leave behind: pipes,
socket pairs, inet sockets, directories, eventfds, memfds, an unattached
/dev/net/tun, epoll instances, files; two in three inheritable, the rest
close-on-exec. The running guest's /proc/PID/fd must be exactly the console
(1), its epoll instance and timerfd, and its devices - the numbers the plan
names, nothing of the parent's, not even stdin or stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import guest_path, stop, wait_for
from hostile_util import (TapNamespace, current_syscall, fd_table, launch_env, record_figures,
                          solo5_spt)

FILLER = str(Path(__file__).with_name("fd_filler.py"))
EPOLL_PWAIT = 281  # where an idle guest waits
INHERITED = range(3, 1024)
# A jailed guest's TUN fd reads back as /net/tun when the launcher was the
# last process of its mount namespace (`ip netns exec` makes one for it): the
# /dev mount the fd was opened on is then detached, and its path starts there.
TUN_PATHS = ("/dev/net/tun", "/net/tun")


def start_filled(launch_args, *, filler_opts=(), ns: TapNamespace | None = None,
                 env_extra=None) -> subprocess.Popen:
    cmd = [sys.executable, FILLER, *filler_opts, "--", *solo5_spt(*launch_args)]
    if ns is not None:
        cmd = ns.wrap(cmd)
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=launch_env(**(env_extra or {})),
                            start_new_session=True)


def guest_fds_when_idle(proc: subprocess.Popen) -> dict[int, str]:
    """The fd table once the guest itself waits in epoll_pwait (only the
    guest makes that call: by then the trampoline has closed what it
    closes)."""
    def idle():
        if proc.poll() is not None:
            raise AssertionError("guest ended: rc=%s stderr=%r"
                                 % (proc.returncode, proc.stderr.read()))
        return current_syscall(proc.pid) == EPOLL_PWAIT
    wait_for(idle, timeout=60, what="the guest in epoll_pwait")
    return fd_table(proc.pid)


def plan_fds(launch_args, tmp_path: Path, ns: TapNamespace | None = None) -> dict:
    """The plan's facts for the same command line (SPT_PLAN_DUMP): which fd
    numbers the launcher gives the guest."""
    dump = tmp_path / "plan.json"
    cmd = solo5_spt(*launch_args)
    if ns is not None:
        cmd = ns.wrap(cmd)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=launch_env(SPT_PLAN_DUMP=str(dump)), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return json.loads(dump.read_text())["plan"]


def assert_core_fds(table: dict[int, str], plan: dict) -> None:
    assert table[1].startswith("pipe:"), table  # our stdout, untouched
    assert table[plan["epoll_fd"]] == "anon_inode:[eventpoll]", table
    assert table[plan["timer_fd"]] == "anon_inode:[timerfd]", table


def test_guest_without_devices_holds_only_console_epoll_and_timer(tmp_path, request):
    args = ("--mem=2", guest_path("sleep"), "3600")
    plan = plan_fds(args, tmp_path)
    proc = start_filled(args)
    try:
        table = guest_fds_when_idle(proc)
    finally:
        stop(proc)
    assert sorted(table) == sorted(plan["keep_fds"]) == sorted({1, plan["epoll_fd"],
                                                                plan["timer_fd"]}), table
    assert_core_fds(table, plan)
    record_figures(request.config, "fds", {
        "inherited": "%d..%d" % (INHERITED[0], INHERITED[-1]), "fds_tested": len(INHERITED),
        "guest_fds_no_devices": sorted(table)})


@pytest.fixture
def quiet_tap():
    ns = TapNamespace(1, prefix="spt-fd", quiet=True)
    yield ns
    ns.close()


def test_guest_with_block_and_net_holds_exactly_its_devices_too(tmp_path, quiet_tap):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(64 * 1024))
    # syscall_dev blocks in epoll_pwait(epoll, buf, 1, -1) on a silent TAP.
    args = ("--mem=2", "--block:storage=%s" % disk, "--net:service0=%s" % quiet_tap.taps[0],
            guest_path("syscall_dev"), "281", "epoll", "buf", "1", "-1", "0", "8")
    plan = plan_fds(args, tmp_path, ns=quiet_tap)
    proc = start_filled(args, ns=quiet_tap)
    try:
        table = guest_fds_when_idle(proc)
    finally:
        stop(proc)
    assert sorted(table) == sorted(plan["keep_fds"]) and len(table) == 5, table
    assert_core_fds(table, plan)
    devices = sorted(table[fd] for fd in table if fd not in (1, plan["epoll_fd"], plan["timer_fd"]))
    assert devices in (sorted([str(disk), tun]) for tun in TUN_PATHS), table


def test_a_tap_passed_as_a_high_fd_is_kept_and_everything_else_closed(tmp_path, quiet_tap):
    """--net:NAME=@FD (albatross-style): fd 1000 among 1020 strangers."""
    tap_fd = 1000
    args = ("--mem=2", "--block:storage=%s" % (tmp_path / "disk.img"),
            "--net:service0=@%d" % tap_fd, guest_path("syscall_dev"),
            "281", "epoll", "buf", "1", "-1", "0", "8")
    (tmp_path / "disk.img").write_bytes(bytes(4096))
    proc = start_filled(args, filler_opts=("--tap", "%d:%s" % (tap_fd, quiet_tap.taps[0])),
                        ns=quiet_tap)
    try:
        table = guest_fds_when_idle(proc)
    finally:
        stop(proc)
    assert len(table) == 5 and table.get(tap_fd) in TUN_PATHS, table
    assert 1 in table and 0 not in table and 2 not in table, table
    kinds = sorted(table.values())
    assert "anon_inode:[eventpoll]" in kinds and "anon_inode:[timerfd]" in kinds, table


def test_boots_with_rlimit_nofile_1024_and_the_table_nearly_full(tmp_path):
    """Soft RLIMIT_NOFILE 1024 with 3..1021 taken: the launcher closes the
    strangers before it opens anything, so it needs no headroom of its own.
    (The last two must stay free for the interpreter itself: with all of
    3..1023 taken, ld.so cannot open libpython and no dynamically linked
    program - Python or C - starts at all.)"""
    args = ("--mem=2", guest_path("sleep"), "3600")
    plan = plan_fds(args, tmp_path)
    proc = start_filled(args, filler_opts=("--rlimit", "1024", "--upto", "1021"))
    try:
        table = guest_fds_when_idle(proc)
        limits = Path("/proc/%d/limits" % proc.pid).read_text()
    finally:
        stop(proc)
    assert sorted(table) == sorted(plan["keep_fds"]), table
    assert_core_fds(table, plan)
    # The jail then lowers the limit to just above the guest's highest fd.
    assert any(line.startswith("Max open files") and line.split()[3] == str(max(table) + 1)
               for line in limits.splitlines()), limits
