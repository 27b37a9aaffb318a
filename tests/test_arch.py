"""The host's architecture, through the real kernel: the facts table
(spt/arch/), the allow-list both ways, exit statuses, TLS, and refusal of a
kernel built for another architecture.

This file holds on every architecture spt supports; `make test-arm64` runs
it inside an arm64 Linux under qemu, the ordinary suite on x86_64. Numbers
come from the host's facts table, which the first test checks against
libseccomp's own.
"""

from __future__ import annotations

import os
import re
import signal

import pytest

import elfcraft
from conftest import ROOT, SOLO5_SPT, guest_path, spt_run
from test_allowlist import assert_killed, result
from spt import arch

HOST = arch.host()
NR = HOST.SYSCALLS
OTHER_ARCH = {"x86_64": ("aarch64", elfcraft.EM_AARCH64), "aarch64": ("x86_64", elfcraft.EM_X86_64)}
X86_64_ARCH_PRCTL = 158
ARCH_SET_FS = 0x1002


def plain(*args):
    return spt_run("--mem=8", guest_path("syscall"), *map(str, args))


def test_the_host_is_an_architecture_spt_supports():
    assert HOST.NAME == os.uname().machine


def test_the_facts_table_is_libseccomps_and_the_kernels():
    import pyseccomp as sc

    assert sc.system_arch() == HOST.AUDIT_ARCH
    for name, number in NR.items():
        assert sc.resolve_syscall(sc.Arch.NATIVE, name) == number, name


def test_every_allowed_call_works_once():
    proc = plain("seq")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "syscall: seq ok" in proc.stdout


def test_every_allowed_device_call_works_once(tap, block_file):
    disk = block_file(16 * 512)
    proc = tap.ns.exec(SOLO5_SPT, "--mem=8", "--block:storage=" + disk,
                       "--net:service0=" + tap.name, guest_path("syscall_dev"), "seq")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "syscall: seq ok" in proc.stdout


def test_console_write_is_allowed_and_any_other_fd_is_killed():
    assert result(plain(NR["write"], "console", "buf", 3)) == 3
    assert_killed(plain(NR["write"], 2, "buf", 3))


@pytest.mark.parametrize("clock, allowed", [(0, True), (1, True), (2, False), (7, False)])
def test_clock_gettime_allows_only_the_two_clocks(clock, allowed):
    proc = plain(NR["clock_gettime"], clock, "ts")
    if allowed:
        assert result(proc) == 0
    else:
        assert_killed(proc)


def test_epoll_pwait_and_timerfd_settime_only_on_their_fds():
    assert result(plain(NR["epoll_pwait"], "epoll", "buf", 1, 0, 0, 8)) == 0
    assert_killed(plain(NR["epoll_pwait"], "timer", "buf", 1, 0, 0, 8))
    assert result(plain(NR["timerfd_settime"], "timer", 0, "ts", 0)) == 0
    assert_killed(plain(NR["timerfd_settime"], "epoll", 0, "ts", 0))


@pytest.mark.parametrize("number", [-1, 1000, 0x7FFFFFFF, 0x40000000 | 1])
def test_out_of_range_and_unknown_numbers_are_killed(number):
    assert_killed(plain(number, 0, 0, 0))


def test_the_x86_only_arch_prctl_number_is_allowed_only_on_x86_64():
    proc = plain(X86_64_ARCH_PRCTL, ARCH_SET_FS, "buf")
    if HOST.NAME == "x86_64":
        assert result(proc) == 0
    else:
        assert "arch_prctl" not in NR
        assert_killed(proc)


@pytest.mark.parametrize("status", [0, 1, 7, 255])
def test_exit_status_is_the_guests(status):
    proc = spt_run("--mem=8", guest_path("exit"), str(status))
    assert proc.returncode == status, proc.stderr


def test_abort_is_255_and_a_fault_is_sigsegv():
    assert spt_run("--mem=8", guest_path("exit"), "abort").returncode == 255
    assert spt_run("--mem=8", guest_path("fault"), "null").returncode == -signal.SIGSEGV


def test_the_guest_sets_its_tls_base_as_its_architecture_does():
    proc = spt_run("--mem=8", guest_path("fault"), "tls")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "fault: tls ok" in proc.stdout


def test_wx_holds_for_text_and_data():
    for mode in ("write-text", "exec-data", "exec-heap"):
        proc = spt_run("--mem=8", guest_path("fault"), mode)
        assert proc.returncode == -signal.SIGSEGV, (mode, proc.stdout, proc.stderr)


def test_a_kernel_for_another_architecture_is_refused(tmp_path):
    other, machine = OTHER_ARCH[HOST.NAME]
    with open(guest_path("hello"), "rb") as f:
        image = elfcraft.set_ehdr(f.read(), e_machine=machine)
    kernel = tmp_path / ("hello-%s.spt" % other)
    kernel.write_bytes(image)
    proc = spt_run("--mem=8", str(kernel))
    assert proc.returncode == 1
    # Solo5's words first (its loader says no more), then which architecture
    assert proc.stderr == ("solo5-spt: %s: Invalid or unsupported executable: built for %s "
                           "(e_machine EM_%s), "
                           "this host is %s\n" % (kernel, other, other.upper(), HOST.NAME))


def test_a_real_kernel_built_for_another_architecture_is_refused():
    """The other architecture's build of hello: in the arm64 VM the x86_64
    one rides along (tests/arm64/vm.py); on x86_64, `make test-arm64`'s
    cross build in build/aarch64/."""
    other, _ = OTHER_ARCH[HOST.NAME]
    places = [ROOT / "guests" / ("out-" + other) / "hello.spt",
              ROOT / "build" / other / "guests" / "hello.spt"]
    found = [p for p in places if p.exists()]
    if not found:
        pytest.skip("no kernel of another architecture was built beside this one")
    proc = spt_run("--mem=8", str(found[0]))
    assert proc.returncode == 1
    assert "Invalid or unsupported executable: built for %s" % other in proc.stderr


# --- what the tools say of the architecture -------------------------------------------

def test_doctor_names_the_host_architecture_and_the_trampolines():
    from spt.commands import doctor as d
    from spt.launcher import TRAMPOLINE

    check = d.check_architecture(HOST.NAME, d.trampoline_facts(TRAMPOLINE).machine)
    assert (check.status, check.value) == (d.OK, HOST.NAME), check
    assert d.check_architecture("riscv64", None).status == d.FAIL
    other, _ = OTHER_ARCH[HOST.NAME]
    wrong = d.check_architecture(HOST.NAME, arch.facts(other).ELF_MACHINE)
    assert wrong.status == d.FAIL and "make native" in wrong.detail


def test_inspect_shows_the_architecture():
    import json

    from conftest import SPT, run

    doc = json.loads(run([SPT, "inspect", "--json", guest_path("hello")]).stdout)
    assert doc["arch"] == HOST.NAME
    text = run([SPT, "inspect", guest_path("hello")]).stdout
    assert "arch        %s\n" % HOST.NAME in text


def test_policy_rules_marked_for_another_architecture_are_left_out():
    from spt import policy

    text = "[x86_64] arch_prctl: code == 0x1002  # x\n[aarch64] write: fd == 1  # y\nexit_group\n"
    x86 = [r.syscall for r in policy.render("t", text, {}, arch="x86_64")]
    a64 = [r.syscall for r in policy.render("t", text, {}, arch="aarch64")]
    assert (x86, a64) == (["arch_prctl", "exit_group"], ["write", "exit_group"])
    with pytest.raises(policy.PolicyError, match="unknown architecture 'sparc'"):
        policy.render("t", "[sparc] write: fd == 1\n", {})


def test_the_core_allow_list_has_arch_prctl_only_on_x86_64():
    from spt import policy

    core = policy.read_policy("core")
    calls = {arch_name: {r.syscall for r in policy.render("core", core, {
        "console_fd": 1, "epoll_fd": 3, "timer_fd": 4}, arch=arch_name)}
        for arch_name in arch.SUPPORTED}
    assert calls["x86_64"] - calls["aarch64"] == {"arch_prctl"}
    assert calls["aarch64"] <= set(arch.facts("aarch64").SYSCALLS)
    assert calls["x86_64"] <= set(arch.facts("x86_64").SYSCALLS)
