"""The filter's shape: the devices' calls are tested first (docs/allowlist.md,
"Rule order"), and that changes the order only, never what is allowed.

The program is run by bench/bpf.py's interpreter, the one the bench uses to
count the instructions of a hot call; the real kernel's verdicts are
tests/test_allowlist.py's and tests/test_syscall_matrix.py's.
"""

from __future__ import annotations

import json
import struct

import pytest

from bench.bpf import instructions_run
from conftest import SOLO5_SPT, guest_path, run
from spt import arch, bpfcheck, bpfcompile, policy

ALLOW, KILL = 0x7FFF0000, 0x80000000
NUMBERS = arch.host().SYSCALLS
CORE = {"console_fd": 1, "epoll_fd": 5, "timer_fd": 6}
BLOCK = {"fd": 4, "sector_size": 4096, "capacity": 1 << 26}
NET = {"fd": 7, "ifname": "tap0"}


def rules(*devices) -> list:
    out = policy.render("core", policy.read_policy("core"), CORE)
    for name, facts in devices:
        out += policy.render(name, policy.read_policy(name), facts)
    return out


DEVICE_SETS = {"block": rules(("block", BLOCK)), "net": rules(("net", NET)),
               "block+net": rules(("block", BLOCK), ("net", NET))}


def compared_numbers(program: bytes) -> list[int]:
    """The call numbers the program compares with, in the order it does so:
    the path of a call no rule names (number 1000 on either architecture),
    which falls past every rule (libseccomp's architecture and x32 checks
    left out)."""
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    words = {0: 1000, 4: arch.host().AUDIT_ARCH}
    out, pc, loaded = [], 0, None
    while insns[pc][0] != 0x06:  # until a return
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            loaded, pc = k, pc + 1
            continue
        if code == 0x15 and loaded == 0 and k < 0x40000000:
            out.append(k)
        value = words.get(loaded, 0)
        taken = {0x15: value == k, 0x25: value > k, 0x35: value >= k}[code]
        pc += 1 + (jt if taken else jf)
    return out


@pytest.mark.parametrize("name", DEVICE_SETS)
def test_the_device_calls_are_compared_first(name):
    program = bpfcompile.compile_bpf(DEVICE_SETS[name])
    hot = bpfcompile.hot_calls(DEVICE_SETS[name])
    assert compared_numbers(program)[:len(hot)] == [NUMBERS[c] for c in hot]


def test_hot_calls_are_the_device_policies_calls_in_rule_order():
    assert bpfcompile.hot_calls(DEVICE_SETS["block"]) == ["pread64", "pwrite64"]
    assert bpfcompile.hot_calls(DEVICE_SETS["net"]) == ["read", "write"]
    assert bpfcompile.hot_calls(DEVICE_SETS["block+net"]) == ["pread64", "pwrite64", "read",
                                                              "write"]
    assert bpfcompile.hot_calls(rules()) == []


def test_a_sector_transfer_runs_fewer_instructions_than_in_libseccomps_order():
    block = DEVICE_SETS["block"]
    now, before = bpfcompile.compile_bpf(block), bpfcompile.compile_bpf(block, hot_first=False)
    assert len(now) == len(before)
    for call in ("pread64", "pwrite64"):
        args = (BLOCK["fd"], 0, BLOCK["sector_size"], 0)
        action, run_now = instructions_run(now, NUMBERS[call], args)
        action_before, run_before = instructions_run(before, NUMBERS[call], args)
        assert action == action_before == ALLOW
        # arch (2), x32 (3) and this call's number, then its three argument checks
        assert run_now <= 20 < run_before, (call, run_now, run_before)


def probes(facts_fd: int, sector: int, capacity: int):
    """Calls at and around every boundary the rules draw."""
    fds = (0, 1, 5, 6, facts_fd - 1, facts_fd, facts_fd + 1, 1 << 32 | facts_fd)
    counts = (sector - 1, sector, sector + 1, 1 << 32 | sector)
    last = capacity - sector
    offsets = (0, last - 1, last, last + 1, 1 << 32, 1 << 63)
    for nr in sorted(set(NUMBERS.values()) | {2, 59, 230, 0x40000000 | 17}):
        for fd in fds:
            for count in counts:
                for offset in offsets:
                    yield nr, (fd, 0, count, offset, 0, 0)
        for first in (0, 1, 2, 0x1002, 0x1001, 1 << 32):
            yield nr, (first, 0, 0, 0, 0, 0)


@pytest.mark.parametrize("name", DEVICE_SETS)
def test_the_order_changes_no_verdict(name):
    now = bpfcompile.compile_bpf(DEVICE_SETS[name])
    before = bpfcompile.compile_bpf(DEVICE_SETS[name], hot_first=False)
    assert now != before
    fd = NET["fd"] if name == "net" else BLOCK["fd"]
    verdicts = {ALLOW: 0, KILL: 0}
    for nr, args in probes(fd, BLOCK["sector_size"], BLOCK["capacity"]):
        action = instructions_run(now, nr, args)[0]
        assert action == instructions_run(before, nr, args)[0], (nr, args)
        verdicts[action] += 1
    assert verdicts[ALLOW] and verdicts[KILL]
    assert instructions_run(now, NUMBERS["pread64"], (4, 0, 4096, 0), arch=3)[0] == KILL


@pytest.mark.parametrize("name", DEVICE_SETS)
def test_the_cache_proof_accepts_the_new_shape(name):
    """A cached filter of this shape is still installed (spt/bpfcheck.py),
    and one that allows more than its rules is still refused."""
    program = bpfcompile.compile_bpf(DEVICE_SETS[name])
    assert bpfcheck.allows_only(program, DEVICE_SETS[name])
    assert not bpfcheck.allows_only(program, rules())


def test_the_launch_installs_the_device_calls_first(tmp_path, block_file):
    path = tmp_path / "plan.json"
    proc = run(["env", "SPT_PLAN_DUMP=%s" % path, SOLO5_SPT,
                "--block:storage=" + block_file(1 << 20), guest_path("block")])
    assert proc.returncode == 0, proc.stderr
    program = bytes.fromhex(json.loads(path.read_text())["bpf"])
    assert compared_numbers(program)[:2] == [NUMBERS["pread64"], NUMBERS["pwrite64"]]
    numbers = compared_numbers(program)
    assert len(numbers) == len(set(numbers)) == len({r.syscall for r in DEVICE_SETS["block"]})
