"""The system call allow-list (spt-abi §5), enforced by the real kernel.

Each row has both sides: the call the row allows succeeds, and the nearest
call the row does not allow kills the guest with SIGSYS. The `syscall` and
`syscall_dev` guests make one raw call from their command line
(`NR ARGS...`, symbolic args console/epoll/timer/blk/net/buf/ts) and print
`syscall: ret=N`; a killed guest prints nothing and its process dies of
SIGSYS (returncode -31 for subprocess, 159 in a shell).

SPT_PLAN_DUMP shows the rendered rules, which are checked against the fds,
sector size and capacity of the same launch.
"""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from conftest import SOLO5_SPT, guest_path, run, spt_run

KILLED = -signal.SIGSYS
NR = {"read": 0, "write": 1, "pread64": 17, "pwrite64": 18, "arch_prctl": 158,
      "clock_gettime": 228, "exit_group": 231, "epoll_pwait": 281, "timerfd_settime": 286}
EAGAIN = 11
SECTOR = 512
CAPACITY = 16 * SECTOR


def result(proc) -> int:
    """The guest lived through its call: the call's return value."""
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    found = re.findall(r"syscall: ret=(-?\d+)", proc.stdout)
    assert len(found) == 1, proc.stdout
    return int(found[0])


def assert_killed(proc) -> None:
    """The filter killed the guest at its call: SIGSYS, nothing printed
    after the call, and no message from the launcher (it was long gone)."""
    assert proc.returncode == KILLED, (proc.returncode, proc.stdout, proc.stderr)
    assert "syscall: ret=" not in proc.stdout, proc.stdout
    assert proc.stderr == "", proc.stderr


def plain(*args):
    """The `syscall` guest (no devices)."""
    return spt_run("--mem=8", guest_path("syscall"), *args)


@pytest.fixture
def with_devices(tap, block_file):
    """with_devices(*args, sector=512) -> the `syscall_dev` guest with block
    "storage" (CAPACITY bytes) and net "service0" (tap0 of this test's
    namespace), making one call."""
    disk = block_file(CAPACITY)

    def run_guest(*args, sector: int = SECTOR):
        return tap.ns.exec(SOLO5_SPT, "--mem=8", "--block:storage=" + disk,
                           "--block-sector-size:storage=%d" % sector,
                           "--net:service0=" + tap.name, guest_path("syscall_dev"),
                           *map(str, args))

    run_guest.disk = disk
    return run_guest


# --- write: fd == 1 (console) ------------------------------------------------------------

def test_write_to_the_console_is_allowed():
    proc = plain(NR["write"], "console", "buf", 5)
    assert result(proc) == 5
    assert proc.stdout.startswith("\0" * 5)


@pytest.mark.parametrize("fd", [0, 2, 3, 5, 0x100000001])
def test_write_to_any_other_fd_is_killed(fd):
    assert_killed(plain(NR["write"], fd, "buf", 5))


# --- exit_group: always --------------------------------------------------------------------

@pytest.mark.parametrize("status", [0, 7, 255])
def test_exit_group_is_allowed_with_any_status(status):
    proc = plain(NR["exit_group"], status)
    assert proc.returncode == status, proc.stderr
    assert "syscall: ret=" not in proc.stdout


def test_exit_is_not_exit_group_and_is_killed():
    assert_killed(plain(60, 0))


# --- epoll_pwait: fd == epollfd -----------------------------------------------------------

def test_epoll_pwait_on_the_epoll_fd_is_allowed():
    # timeout 0: nothing is armed, so no event
    assert result(plain(NR["epoll_pwait"], "epoll", "buf", 1, 0, 0, 8)) == 0


@pytest.mark.parametrize("fd", ["timer", "console", 0])
def test_epoll_pwait_on_another_fd_is_killed(fd):
    assert_killed(plain(NR["epoll_pwait"], fd, "buf", 1, 0, 0, 8))


def test_epoll_wait_without_p_is_killed():
    assert_killed(plain(232, "epoll", "buf", 1, 0))


# --- timerfd_settime: fd == timerfd ---------------------------------------------------------

def test_timerfd_settime_on_the_timer_fd_is_allowed():
    # a zeroed itimerspec disarms the timer
    assert result(plain(NR["timerfd_settime"], "timer", 0, "ts", 0)) == 0


@pytest.mark.parametrize("fd", ["epoll", "console"])
def test_timerfd_settime_on_another_fd_is_killed(fd):
    assert_killed(plain(NR["timerfd_settime"], fd, 0, "ts", 0))


# --- clock_gettime: CLOCK_REALTIME or CLOCK_MONOTONIC ---------------------------------------

@pytest.mark.parametrize("clock", [0, 1], ids=["realtime", "monotonic"])
def test_clock_gettime_realtime_and_monotonic_are_allowed(clock):
    assert result(plain(NR["clock_gettime"], clock, "ts")) == 0


@pytest.mark.parametrize("clock", [2, 3, 4, 5, 6, 7, -1])
def test_clock_gettime_of_other_clocks_is_killed(clock):
    assert_killed(plain(NR["clock_gettime"], clock, "ts"))


# --- arch_prctl: ARCH_SET_FS ------------------------------------------------------------------

def test_arch_prctl_set_fs_is_allowed():
    assert result(plain(NR["arch_prctl"], 0x1002, "buf")) == 0


@pytest.mark.parametrize("code", [0x1001, 0x1003, 0x1004, 0x3001],
                         ids=["set-gs", "get-fs", "get-gs", "cet-status"])
def test_arch_prctl_other_codes_are_killed(code):
    assert_killed(plain(NR["arch_prctl"], code, "buf"))


# --- other architectures and x32 ---------------------------------------------------------------

@pytest.mark.parametrize("call", [["4", "1", "buf", "5"], ["1", "0"], ["20"]],
                         ids=["i386-write", "i386-exit", "i386-getpid"])
def test_int80_system_calls_are_killed(call):
    assert_killed(plain("int80", *call))


@pytest.mark.parametrize("nr", [0x40000001, 0x40000000 | 231, 0x40000000 | 228],
                         ids=["x32-write", "x32-exit_group", "x32-clock_gettime"])
def test_x32_system_calls_are_killed(nr):
    args = {0x40000001: ["console", "buf", 5], 0x40000000 | 231: [0],
            0x40000000 | 228: [1, "ts"]}[nr]
    assert_killed(plain(nr, *args))


# --- the default: kill -------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    ["39"],                          # getpid
    ["257", "-100", "buf", "0"],     # openat
    ["9", "0", "4096", "3", "0x22", "-1", "0"],  # mmap
    ["59", "buf", "0", "0"],         # execve
    ["10", "0x100000", "4096", "7"],  # mprotect
    ["11", "0x100000", "4096"],      # munmap
    ["3", "5"],                      # close
    ["16", "console", "0x5401", "buf"],  # ioctl
    ["41", "2", "2", "0"],           # socket
    ["57"],                          # fork
    ["62", "1", "9"],                # kill
    ["35", "ts", "0"],               # nanosleep
    ["157", "15", "buf"],            # prctl
    ["317", "0", "0", "0"],          # seccomp
    ["0", "0", "buf", "1"],          # read from stdin
    ["17", "console", "buf", "512", "0"],  # pread64 without a block device
], ids=["getpid", "openat", "mmap", "execve", "mprotect", "munmap", "close", "ioctl", "socket",
        "fork", "kill", "nanosleep", "prctl", "seccomp", "read-stdin", "pread64-no-device"])
def test_calls_outside_the_allow_list_are_killed(call):
    assert_killed(plain(*call))


# --- read/write: fd == a net device's fd ----------------------------------------------------------

def test_read_on_the_net_fd_is_allowed(with_devices):
    ret = result(with_devices(NR["read"], "net", "buf", 1514))
    assert ret == -EAGAIN or ret > 0


def test_write_on_the_net_fd_is_allowed(with_devices):
    assert result(with_devices(NR["write"], "net", "buf", 60)) == 60


@pytest.mark.parametrize("call", ["read", "write"])
def test_read_and_write_on_the_block_fd_are_killed(with_devices, call):
    assert_killed(with_devices(NR[call], "blk", "buf", SECTOR))


def test_write_to_the_console_is_still_allowed_with_devices(with_devices):
    assert result(with_devices(NR["write"], "console", "buf", 3)) == 3


# --- pread64/pwrite64: the block fd, one sector, inside the device -----------------------------------

@pytest.mark.parametrize("call", ["pread64", "pwrite64"])
@pytest.mark.parametrize("offset", [0, SECTOR, CAPACITY - SECTOR, CAPACITY - SECTOR - 1],
                         ids=["first", "second", "last", "unaligned-inside"])
def test_one_sector_inside_the_device_is_allowed(with_devices, call, offset):
    assert result(with_devices(NR[call], "blk", "buf", SECTOR, offset)) == SECTOR


@pytest.mark.parametrize("call", ["pread64", "pwrite64"])
@pytest.mark.parametrize("count", [SECTOR - 1, 2 * SECTOR, 0, 1],
                         ids=["sector-1", "2-sectors", "zero", "one-byte"])
def test_count_other_than_one_sector_is_killed(with_devices, call, count):
    assert_killed(with_devices(NR[call], "blk", "buf", count, 0))


@pytest.mark.parametrize("call", ["pread64", "pwrite64"])
@pytest.mark.parametrize("offset", [CAPACITY - SECTOR + 1, CAPACITY, 1 << 40, -SECTOR],
                         ids=["last+1", "capacity", "far", "negative"])
def test_offset_past_the_last_sector_is_killed(with_devices, call, offset):
    assert_killed(with_devices(NR[call], "blk", "buf", SECTOR, offset))


def test_pwrite64_past_the_end_does_not_grow_the_file(with_devices):
    assert_killed(with_devices(NR["pwrite64"], "blk", "buf", SECTOR, CAPACITY))
    assert os.path.getsize(with_devices.disk) == CAPACITY


@pytest.mark.parametrize("call", ["pread64", "pwrite64"])
@pytest.mark.parametrize("fd", ["net", "console"])
def test_pread64_and_pwrite64_on_other_fds_are_killed(with_devices, call, fd):
    assert_killed(with_devices(NR[call], fd, "buf", SECTOR, 0))


def test_sector_size_sets_the_allowed_count(with_devices):
    sector = 4096
    assert result(with_devices(NR["pread64"], "blk", "buf", sector, 0, sector=sector)) == sector
    assert result(with_devices(NR["pread64"], "blk", "buf", sector, CAPACITY - sector,
                               sector=sector)) == sector
    assert_killed(with_devices(NR["pread64"], "blk", "buf", 512, 0, sector=sector))
    assert_killed(with_devices(NR["pread64"], "blk", "buf", sector, CAPACITY - sector + 1,
                               sector=sector))


def test_every_allowed_call_in_sequence_keeps_the_guest_alive(with_devices):
    proc = with_devices("seq")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "syscall: seq ok" in proc.stdout


# --- the rendered rules, from SPT_PLAN_DUMP ---------------------------------------------------------

def dump(tmp_path, *args, netns=None) -> dict:
    path = tmp_path / "plan.json"
    cmd = ["env", "SPT_PLAN_DUMP=%s" % path, SOLO5_SPT, *map(str, args)]
    proc = netns.exec(*cmd) if netns else run(cmd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "", "the guest must not run"
    return json.loads(path.read_text())


def rule_set(doc) -> set:
    return {(r["syscall"], tuple((c["arg"], c["index"], c["op"], c["value"])
                                 for c in r["conditions"])) for r in doc["rules"]}


def core_rules(epoll_fd: int, timer_fd: int) -> set:
    return {
        ("write", (("fd", 0, "==", 1),)),
        ("exit_group", ()),
        ("epoll_pwait", (("epfd", 0, "==", epoll_fd),)),
        ("timerfd_settime", (("fd", 0, "==", timer_fd),)),
        ("clock_gettime", (("clockid", 0, "==", 1),)),
        ("clock_gettime", (("clockid", 0, "==", 0),)),
        ("arch_prctl", (("code", 0, "==", 0x1002),)),
    }


def test_rules_without_devices_are_the_core_rows(tmp_path):
    doc = dump(tmp_path, "--mem=8", guest_path("syscall"))
    plan = doc["plan"]
    assert rule_set(doc) == core_rules(plan["epoll_fd"], plan["timer_fd"])
    assert sorted(plan["keep_fds"]) == sorted({1, plan["epoll_fd"], plan["timer_fd"]})


def test_rules_with_devices_carry_their_fds_sector_size_and_capacity(tmp_path, tap, block_file):
    disk = block_file(CAPACITY)
    doc = dump(tmp_path, "--mem=8", "--block:storage=" + disk,
               "--block-sector-size:storage=4096", "--net:service0=" + tap.name,
               guest_path("syscall_dev"), netns=tap.ns)
    plan = doc["plan"]
    core = {1, plan["epoll_fd"], plan["timer_fd"]}
    net_fd = [fd for fd, data in plan["watch"] if data == 2]  # service0 is entry 2
    assert len(net_fd) == 1
    net_fd = net_fd[0]
    blk_fd = set(plan["keep_fds"]) - core - {net_fd}
    assert len(blk_fd) == 1
    blk_fd = blk_fd.pop()
    one_sector = (("fd", 0, "==", blk_fd), ("count", 2, "==", 4096),
                  ("offset", 3, "<=", CAPACITY - 4096))
    expected = core_rules(plan["epoll_fd"], plan["timer_fd"]) | {
        ("pread64", one_sector), ("pwrite64", one_sector),
        ("read", (("fd", 0, "==", net_fd),)), ("write", (("fd", 0, "==", net_fd),)),
    }
    assert rule_set(doc) == expected
    assert len({r["syscall"] for r in doc["rules"]}) == 9
    assert all(r["reason"] for r in doc["rules"])


def test_bpf_program_without_devices_is_small(tmp_path, record_property):
    doc = dump(tmp_path, "--mem=8", guest_path("syscall"))
    bpf = bytes.fromhex(doc["bpf"])
    assert len(bpf) % 8 == 0 and bpf
    instructions = len(bpf) // 8
    record_property("bpf_instructions_no_devices", instructions)
    print("BPF instructions with no devices: %d (Solo5's tender: 34)" % instructions)
    assert instructions <= 64


def test_bpf_program_grows_with_a_block_device(tmp_path, block_file, record_property):
    plain_len = len(dump(tmp_path, "--mem=8", guest_path("syscall"))["bpf"]) // 16
    doc = dump(tmp_path, "--mem=8", "--block:storage=" + block_file(CAPACITY), guest_path("block"))
    block_len = len(doc["bpf"]) // 16
    record_property("bpf_instructions_one_block", block_len)
    print("BPF instructions with one block device: %d (Solo5's tender: 49)" % block_len)
    assert plain_len < block_len <= 96
