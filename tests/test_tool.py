"""`spt`, the operator's tool: inspect, policy, doctor, manifest, completion.

Every command runs as the operator runs it (`.venv/bin/spt` in a
subprocess) on the kit's guests, and each claim it makes is checked against
the launcher or the kernel: inspect's refusals carry the launcher's message
and its memory figure is the smallest --mem that launches; the policy's BPF
bytes are read back out of a running guest with ptrace; doctor's limits are
the ones a launch hits; a generated manifest note builds into a guest that
inspects and launches as declared.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import elfcraft
from conftest import ROOT, SOLO5_SPT, SPT, read_line, run, spt_run, stop
from conftest import spt_run as _spt_run

MIB = 1 << 20
CORE_SYSCALLS = {"write", "exit_group", "epoll_pwait", "timerfd_settime", "clock_gettime",
                 "arch_prctl"}


def spt(*args, **kwargs):
    return run([SPT, *map(str, args)], **kwargs)


def assert_one_line_error(proc, prefix: str = "spt: ", *contains: str) -> str:
    """The tool's error contract: non-zero, one line on stderr, nothing on
    stdout, never a traceback."""
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr
    assert proc.stdout == "", proc.stdout
    for fragment in contains:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def manifest_json_of(name: str) -> dict:
    return json.loads((ROOT / "guests" / name / "manifest.json").read_text())


# --- spt inspect ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["hello", "block", "net", "syscall_dev", "maxdev"])
def test_inspect_queries_print_the_elftool_objects(guest, name):
    abi = spt("inspect", "--query", "abi", guest(name))
    assert abi.returncode == 0, abi.stderr
    assert json.loads(abi.stdout) == {"type": "solo5.abi", "target": "spt", "version": 2}
    mft = spt("inspect", "--query", "manifest", guest(name))
    assert mft.returncode == 0, mft.stderr
    declared = manifest_json_of(name)
    assert json.loads(mft.stdout) == {"type": "solo5.manifest", "version": 1,
                                      "devices": declared["devices"]}


def test_inspect_json_matches_the_elf_headers(guest):
    path = guest("block")
    data = Path(path).read_bytes()
    proc = spt("inspect", "--json", path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["abi"] == {"type": "solo5.abi", "target": "spt", "version": 2}
    assert doc["manifest"]["devices"] == [{"name": "storage", "type": "BLOCK_BASIC"}]
    assert doc["entry"] == elfcraft.ehdr(data)["e_entry"]
    loads = [elfcraft.phdr(data, i) for i in elfcraft.load_segments(data)]
    assert [s["phdr"] for s in doc["segments"]] == elfcraft.load_segments(data)
    for seg, ph in zip(doc["segments"], loads):
        assert (seg["vaddr"], seg["offset"], seg["filesz"], seg["memsz"]) == (
            ph["p_vaddr"], ph["p_offset"], ph["p_filesz"], ph["p_memsz"])
        flags = ph["p_flags"]
        assert seg["perms"] == ("r" if flags & elfcraft.PF_R else "-") + \
            ("w" if flags & elfcraft.PF_W else "-") + ("x" if flags & elfcraft.PF_X else "-")
    last = loads[-1]
    end = -(-(last["p_vaddr"] + last["p_memsz"]) // last["p_align"]) * last["p_align"]
    assert doc["kernel_end"] == end
    assert doc["attach"] == ["--block:storage=PATH"]


def test_inspect_text_names_devices_and_how_to_attach_them(guest):
    proc = spt("inspect", guest("syscall_dev"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "abi         spt, version 2" in out
    assert "storage" in out and "BLOCK_BASIC" in out and "--block:storage=PATH" in out
    assert "service0" in out and "NET_BASIC" in out and "--net:service0=IFACE|@FD" in out
    hello = spt("inspect", guest("hello"))
    assert "devices     none" in hello.stdout
    assert "r-x" in hello.stdout and "rw-" in hello.stdout


def _min_mem(path: str) -> int:
    proc = spt("inspect", "--json", path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["min_mem_mib"]


def test_inspect_min_mem_is_the_smallest_mem_that_launches(guest):
    hello = guest("hello")
    least = _min_mem(hello)
    assert spt_run("--mem=%d" % least, hello, "fits").returncode == 0
    assert least > 1
    assert spt_run("--mem=%d" % (least - 1), hello).returncode == 1


def test_inspect_min_mem_counts_the_launch_scratch(guest, tmp_path):
    """An image whose bss ends 32 KiB below 7 MiB fits in --mem=7, but the
    launch scratch does not: inspect says 8, the launcher's boundary."""
    data = Path(guest("hello")).read_bytes()
    last = elfcraft.load_segments(data)[-1]
    vaddr = elfcraft.phdr(data, last)["p_vaddr"]
    big = tmp_path / "bigbss.spt"
    big.write_bytes(elfcraft.set_phdr(data, last, p_memsz=7 * MIB - 0x8000 - vaddr))
    assert _min_mem(str(big)) == 8
    env = dict(os.environ, SPT_PLAN_DUMP=str(tmp_path / "plan.json"))
    assert spt_run("--mem=8", big, env=env).returncode == 0
    refused = spt_run("--mem=7", big, env=env)
    assert refused.returncode == 1 and "needs at least 8 MiB" in refused.stderr, refused.stderr


def _bad_images(hello: bytes, block: bytes) -> dict:
    abi_note = elfcraft.phdr(hello, elfcraft.note_segment(hello, elfcraft.ABI1))
    return {
        "non-elf.spt": b"#!/bin/sh\necho not a unikernel\n",
        "empty.spt": b"",
        "truncated-notes.spt": elfcraft.truncate(hello, abi_note["p_offset"] + 10),
        "hvt-target.spt": elfcraft.set_abi1(hello, target=1),
        "abi-version-3.spt": elfcraft.set_abi1(hello, version=3),
        "unterminated-name.spt": elfcraft.set_manifest_entry(block, 1, name=b"s" * 68),
        "no-manifest.spt": elfcraft.set_note_header(hello, elfcraft.MFT1, n_type=0x58585858),
        "i386.spt": elfcraft.set_ehdr(hello, e_machine=elfcraft.EM_386),
    }


BAD_IMAGE_MESSAGES = {
    "non-elf.spt": "not a valid ELF file",
    "empty.spt": "not a valid ELF file",
    "truncated-notes.spt": "beyond the end of the file",
    "hvt-target.spt": "Executable is not for the solo5-spt target",
    "abi-version-3.spt": "Executable requests unsupported ABI version 3",
    "unterminated-name.spt": "Solo5 manifest is invalid",
    "no-manifest.spt": "No Solo5 manifest found in executable",
    "i386.spt": "Invalid or unsupported executable: built for another architecture",
}


@pytest.mark.parametrize("bad", sorted(BAD_IMAGE_MESSAGES))
def test_inspect_refuses_bad_images_with_the_launchers_message(guest, tmp_path, bad):
    images = _bad_images(Path(guest("hello")).read_bytes(), Path(guest("block")).read_bytes())
    path = tmp_path / bad
    path.write_bytes(images[bad])
    for query in ([], ["--json"], ["--query", "abi"]):
        line = assert_one_line_error(spt("inspect", *query, path), "spt: ",
                                     str(path), BAD_IMAGE_MESSAGES[bad])
    launcher = spt_run("--mem=8", path)
    assert launcher.returncode == 1
    assert line[len("spt: "):] == launcher.stderr.splitlines()[0][len("solo5-spt: "):]


@pytest.mark.parametrize("what", ["missing", "directory", "fifo"])
def test_inspect_refuses_what_is_not_a_file(tmp_path, what):
    path = tmp_path / what
    if what == "directory":
        path.mkdir()
    elif what == "fifo":
        os.mkfifo(path)
    expected = "No such file or directory" if what == "missing" else "not a regular file"
    assert_one_line_error(spt("inspect", path, timeout=60), "spt: ", expected)


# --- spt policy ----------------------------------------------------------------

PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
PTRACE_SECCOMP_GET_FILTER = 0x420C
__WALL = 0x40000000


def installed_filters(pid: int) -> list[bytes]:
    """Every seccomp filter of process `pid`, newest first, as the kernel
    holds it (struct sock_filter[]), read with PTRACE_SECCOMP_GET_FILTER.

    The process is seized, stopped with PTRACE_INTERRUPT for the reads and
    detached again whatever happens."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

    def ptrace(request, addr=None, data=None):
        result = libc.ptrace(request, pid, addr, data)
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, "ptrace(%#x, %d): %s" % (request, pid, os.strerror(err)))
        return result

    ptrace(PTRACE_SEIZE)
    try:
        ptrace(PTRACE_INTERRUPT)
        os.waitpid(pid, __WALL)
        filters = []
        while True:
            try:
                count = ptrace(PTRACE_SECCOMP_GET_FILTER, len(filters))
            except OSError as exc:
                if exc.errno == errno.ENOENT:  # no filter with that index
                    return filters
                raise
            buf = ctypes.create_string_buffer(count * 8)
            ptrace(PTRACE_SECCOMP_GET_FILTER, len(filters), ctypes.addressof(buf))
            filters.append(buf.raw)
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)


def own_seccomp_filters() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Seccomp_filters:"):
            return int(line.split()[1])
    return 0


def assert_guest_runs_exactly(pid: int, program: bytes) -> None:
    """The guest's newest filter is `program`, byte for byte, and it is the
    only one spt added to those this test process already had."""
    filters = installed_filters(pid)
    assert len(filters) == own_seccomp_filters() + 1
    assert filters[0] == program, (len(filters[0]), len(program))


def policy_bpf(*launch_args, **kwargs) -> bytes:
    proc = subprocess.run([SPT, "policy", "--bpf", "-", *map(str, launch_args)],
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL, **kwargs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout and len(proc.stdout) % 8 == 0
    return proc.stdout


def test_policy_bpf_is_the_filter_a_running_guest_has(guest, running):
    proc = running("--mem=8", guest("sleep"), "60")
    assert read_line(proc.stdout).strip() == "sleep: yielding"
    assert_guest_runs_exactly(proc.pid, policy_bpf("--mem=8", guest("sleep"), "60"))


def test_policy_bpf_with_a_block_device_is_the_filter_the_guest_has(guest, running,
                                                                      block_file):
    disk = block_file(64 * 4096, "disk.img")
    twin = block_file(64 * 4096, "twin.img")  # the guest holds disk.img's lock
    proc = running("--mem=8", "--block:storage=" + disk, "--block-sector-size:storage=4096",
                   guest("blockwriter"), "delay_us=2000000")
    assert read_line(proc.stdout).startswith("wrote")
    program = policy_bpf("--mem=8", "--block:storage=" + twin, "--block-sector-size:storage=4096",
                         guest("blockwriter"), "delay_us=2000000")
    assert_guest_runs_exactly(proc.pid, program)
    other_size = policy_bpf("--mem=8", "--block:storage=" + twin, guest("blockwriter"))
    assert other_size != program  # the sector size is in the filter


def test_policy_bpf_with_a_net_device_is_the_filter_the_guest_has(guest, tap, tmp_path):
    ns = tap.ns
    ns.check("ip", "tuntap", "add", "dev", "tap1", "mode", "tap")
    ns.check("ip", "link", "set", "tap1", "up")
    proc = ns.popen(SOLO5_SPT, "--mem=8", "--net:service0=" + tap.name, guest("net"),
                    "--ipv4=%s/24" % tap.guest_ip)
    try:
        assert read_line(proc.stdout).startswith("net: ready")
        out = tmp_path / "net.bpf"
        # tap0 is the running guest's (a TAP takes one opener): the twin
        # launch attaches tap1, which gets the same fd number.
        made = ns.exec(SPT, "policy", "--bpf", out, "--mem=8", "--net:service0=tap1",
                       guest("net"))
        assert made.returncode == 0, made.stderr
        assert_guest_runs_exactly(proc.pid, out.read_bytes())
    finally:
        stop(proc)


def test_policy_text_names_each_rule_with_its_conditions(guest, block_file):
    disk = block_file(16 * 4096)
    proc = spt("policy", "--mem=8", "--block:storage=" + disk, "--block-sector-size:storage=4096",
               guest("block"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(spt("policy", "--json", "--mem=8", "--block:storage=" + disk,
                         "--block-sector-size:storage=4096", guest("block")).stdout)
    plan = doc["plan"]
    block_fd = (set(plan["keep_fds"]) - {1, plan["epoll_fd"], plan["timer_fd"]}).pop()
    lines = proc.stdout.splitlines()
    for call in ("pread64", "pwrite64"):
        rule = [line for line in lines if line.startswith(call + " ")]
        assert len(rule) == 1, lines
        assert ("fd is %d and count is 4096 and offset is at most %d"
                % (block_fd, 16 * 4096 - 4096)) in rule[0]
        assert "block.policy:" in rule[0]
    assert any(line.startswith("epoll_pwait ") and "epfd is %d" % plan["epoll_fd"] in line
               for line in lines)
    assert any(line.startswith("exit_group ") and "always" in line for line in lines)
    assert lines[0].startswith("# spt:block.spt: 9 rules over 8 system calls, ")


def test_policy_json_counts_match_the_abi(guest, block_file):
    """spt-abi §5: six calls and 34 instructions with no devices; nine
    distinct calls with a block and a net device; 49 with one block."""
    hello = json.loads(spt("policy", "--json", "--mem=8", guest("hello")).stdout)
    assert set(hello["syscalls"]) == CORE_SYSCALLS
    assert hello["bpf_instructions"] == 34 == len(bytes.fromhex(hello["bpf"])) // 8
    assert all(r["words"] and r["source"].startswith("core.policy:") for r in hello["rules"])
    block = json.loads(spt("policy", "--json", "--mem=8", "--block:storage=" + block_file(4096),
                           guest("block")).stdout)
    assert block["bpf_instructions"] == 49
    assert set(block["syscalls"]) == CORE_SYSCALLS | {"pread64", "pwrite64"}


def test_policy_shows_a_net_fd_the_caller_passed(guest, tap):
    """--net:NAME=@FD: the fd the caller opened reaches solo5-spt at its own
    number, and the rules name it."""
    script = (
        "import fcntl, os, struct, sys\n"
        "fd = os.open('/dev/net/tun', os.O_RDWR)\n"
        "fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH22x', b'tap0', 0x1002))\n"
        "fd = os.dup2(fd, 9, inheritable=True)\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    proc = tap.ns.exec(sys.executable, "-c", script, SPT, "policy", "--json", "--mem=8",
                       "--net:service0=@9", guest("net"))
    assert proc.returncode == 0, proc.stderr
    rules = json.loads(proc.stdout)["rules"]
    assert {(r["syscall"], r["words"]) for r in rules if r["source"].startswith("net.policy")} \
        == {("read", "fd is 9"), ("write", "fd is 9")}


@pytest.mark.parametrize("args", [
    ["--mem=8", "block"],  # the declared device left unattached
    ["--mem=8", "--block:nothere=/dev/null", "hello"],
    ["--bogus", "hello"],
    ["--mem=lots", "hello"],
    ["--mem=8"],
    ["--mem=8", "/nonexistent/kernel.spt"],
])
def test_policy_refusals_are_the_launchers_line(guest, args):
    launch = [guest(a) if a in ("block", "hello") else a for a in args]
    proc = spt("policy", *launch)
    launcher = spt_run(*launch)
    assert launcher.returncode == 1
    line = assert_one_line_error(proc, "solo5-spt: ")
    assert proc.returncode == 1
    assert line == launcher.stderr.splitlines()[0]


def test_policy_bpf_file_gets_the_same_bytes_and_nothing_on_refusal(guest, tmp_path):
    out = tmp_path / "filter.bpf"
    made = spt("policy", "--bpf", out, "--mem=8", guest("hello"))
    assert made.returncode == 0, made.stderr
    assert out.read_bytes() == policy_bpf("--mem=8", guest("hello"))
    assert made.stdout.startswith("wrote 34 BPF instructions (272 bytes)")
    refused = tmp_path / "refused.bpf"
    assert spt("policy", "--bpf", refused, "--mem=8", guest("block")).returncode == 1
    assert sorted(os.listdir(tmp_path)) == ["filter.bpf"]


def test_policy_bpf_file_errors_name_the_file(guest, tmp_path):
    out = tmp_path / "missing" / "filter.bpf"
    assert_one_line_error(spt("policy", "--bpf", out, "--mem=8", guest("hello")), "spt: ",
                          "%s: No such file or directory" % out)
    assert_one_line_error(spt("policy", "--bpf", tmp_path, "--mem=8", guest("hello")), "spt: ",
                          "%s: Is a directory" % tmp_path)
    assert os.listdir(tmp_path) == []


def test_policy_pfc_is_libseccomps_text_of_the_same_rules(guest):
    proc = spt("policy", "--pfc", "--mem=8", guest("hello"))
    assert proc.returncode == 0, proc.stderr
    for call in CORE_SYSCALLS:
        assert 'syscall "%s"' % call in proc.stdout
    assert "action KILL_PROCESS" in proc.stdout


@pytest.mark.parametrize("views", [["--pfc", "--json"], ["--bpf", "-", "--json"],
                                   ["--bpf", "-", "--pfc"]])
def test_policy_refuses_two_views_on_stdout(guest, views):
    assert_one_line_error(spt("policy", *views, "--mem=8", guest("hello")), "spt: ")


# --- spt doctor ----------------------------------------------------------------

DOCTOR_CHECKS = ["architecture", "kernel", "seccomp", "libseccomp", "python", "trampoline",
                 "address space", "mmap_min_addr", "overcommit", "tun", "net privileges",
                 "open files", "launch cache", "jail", "debugging", "cores"]


def doctor_json(**kwargs) -> tuple[int, dict]:
    proc = spt("doctor", "--json", **kwargs)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def with_rlimit(which: int, soft: int):
    def apply():
        _soft, hard = resource.getrlimit(which)
        resource.setrlimit(which, (soft, hard))
    return apply


def test_doctor_passes_on_this_host():
    proc = spt("doctor")
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert len(lines) == len(DOCTOR_CHECKS) + 1, lines
    assert "this host can run spt guests" in lines[-1]
    status, doc = doctor_json()
    assert status == 0 and doc["ok"] is True
    assert [c["name"] for c in doc["checks"]] == DOCTOR_CHECKS
    for line, check in zip(lines, doc["checks"]):
        assert line.split()[0] == check["status"] and check["name"] in line
        # A trampoline older than an edit in native/ is only a warning.
        assert check["status"] == "ok" or (check["name"], check["status"]) == (
            "trampoline", "warn"), check


def _check(doc: dict, name: str) -> dict:
    return next(c for c in doc["checks"] if c["name"] == name)


def test_doctor_largest_mem_is_the_launchers_limit(guest, tmp_path):
    from spt.launcher import TRAMPOLINE_BASE

    _status, doc = doctor_json()
    largest = _check(doc, "address space")["value"]
    assert largest == TRAMPOLINE_BASE // MIB
    env = dict(os.environ, SPT_PLAN_DUMP=str(tmp_path / "plan.json"))
    assert spt_run("--mem=%d" % largest, guest("hello"), env=env).returncode == 0
    refused = spt_run("--mem=%d" % (largest + 1), guest("hello"), env=env)
    assert refused.returncode == 1 and "beyond the address space" in refused.stderr


def test_doctor_largest_mem_under_rlimit_as_launches(guest):
    limit = with_rlimit(resource.RLIMIT_AS, 3 << 30)
    _status, doc = doctor_json(preexec_fn=limit)
    check = _check(doc, "address space")
    largest = check["value"]
    assert largest < 3 * 1024 and "RLIMIT_AS" in check["detail"]
    ran = spt_run("--mem=%d" % largest, guest("hello"), "at the limit", preexec_fn=limit)
    assert ran.returncode == 0 and "at the limit" in ran.stdout, ran.stderr
    refused = spt_run("--mem=%d" % (largest + 1), guest("hello"), preexec_fn=limit)
    assert refused.returncode == 1 and "RLIMIT_AS" in refused.stderr


def test_doctor_fails_when_a_launch_has_too_few_fds(guest, block_file):
    """Doctor's number is the peak of a launch that compiles its filter
    (SPT_CACHE=0: the same whatever the cache holds)."""
    from spt.commands.doctor import LAUNCH_FDS

    def spt_run(*args, **kwargs):
        return _spt_run(*args, env=dict(os.environ, SPT_CACHE="0"), **kwargs)

    disk = block_file(4096)
    too_few = with_rlimit(resource.RLIMIT_NOFILE, LAUNCH_FDS - 1)
    status, doc = doctor_json(preexec_fn=too_few)
    assert status == 1 and doc["ok"] is False
    assert [c["name"] for c in doc["checks"] if c["status"] == "FAIL"] == ["open files"]
    assert spt_run("--mem=8", guest("hello"), preexec_fn=too_few).returncode == 1

    one_device = with_rlimit(resource.RLIMIT_NOFILE, LAUNCH_FDS + 1)
    status, doc = doctor_json(preexec_fn=one_device)
    assert status == 0 and "room for 1 device," in _check(doc, "open files")["detail"]
    assert spt_run("--mem=8", "--block:storage=" + disk, guest("block"),
                   preexec_fn=one_device).returncode == 0
    no_device = with_rlimit(resource.RLIMIT_NOFILE, LAUNCH_FDS)
    assert spt_run("--mem=8", "--block:storage=" + disk, guest("block"),
                   preexec_fn=no_device).returncode == 1
    assert spt_run("--mem=8", guest("hello"), preexec_fn=no_device).returncode == 0


def test_doctor_keep_page_is_the_page_a_running_guest_keeps(guest, running):
    _status, doc = doctor_json()
    keep = _check(doc, "trampoline")["value"]
    proc = running("--mem=8", guest("sleep"), "60")
    read_line(proc.stdout)
    maps = Path("/proc/%d/maps" % proc.pid).read_text().splitlines()
    kept = [int(line.split("-")[0], 16) for line in maps if line.endswith("spt-trampoline")]
    assert kept == [keep]


def test_doctor_checks_fail_on_bad_values():
    from spt.commands import doctor as d

    assert d.check_kernel("5.8.18").status == d.FAIL
    assert d.check_kernel("5.9.0-1-amd64").status == d.OK
    assert d.check_mmap_min_addr(0x10001).status == d.FAIL
    assert d.check_mmap_min_addr(0x10000).status == d.OK
    status = "Name:\tx\nSeccomp:\t0\nSeccomp_filters:\t0\n"
    assert d.check_seccomp(status, 0, "kill_process allow").status == d.OK
    assert d.check_seccomp("Name:\tx\n", 0, "kill_process").status == d.FAIL
    assert d.check_seccomp(status, -1, "kill_process").status == d.FAIL
    assert d.check_seccomp(status, 0, "kill_thread trap allow").status == d.FAIL
    assert d.check_seccomp(status.replace("filters:\t0", "filters:\t2").replace(
        "Seccomp:\t0", "Seccomp:\t2"), 2, "kill_process").status == d.WARN
    assert d.check_libseccomp(None, 34).status == d.FAIL
    assert d.check_libseccomp((2, 3, 3), 34).status == d.FAIL
    assert d.check_libseccomp((2, 5, 4), "no such syscall").status == d.FAIL
    assert d.check_tun("No such file or directory").status == d.WARN
    assert d.check_net_privileges(0, 1000).status == d.WARN
    assert d.check_net_privileges(1 << d.CAP_NET_ADMIN, 0).status == d.OK
    assert d.check_overcommit(2).status == d.WARN
    broken = d.check_python({"pyseccomp": ImportError("no libseccomp"), "pyelftools": "0.33"})
    assert broken.status == d.FAIL and "pyseccomp (no libseccomp)" in broken.detail
    assert d.check_address_space(None, 1, 2, "test").status == d.FAIL
    assert d.check_address_space(None, 100, 2, "test").status == d.WARN


def test_doctor_trampoline_check_reads_the_elf(tmp_path):
    from spt.commands import doctor as d
    from spt.launcher import TRAMPOLINE, TRAMPOLINE_BASE

    real = d.trampoline_facts(TRAMPOLINE)
    assert real.static and real.base == TRAMPOLINE_BASE and real.keep_page % 4096 == 0
    assert d.check_trampoline(real, TRAMPOLINE_BASE).status in (d.OK, d.WARN)
    dynamic = d.trampoline_facts(sys.executable)  # has PT_INTERP or is ET_DYN
    assert d.check_trampoline(dynamic, TRAMPOLINE_BASE).status == d.FAIL
    missing = d.trampoline_facts(str(tmp_path / "nothing"))
    assert d.check_trampoline(missing, TRAMPOLINE_BASE).status == d.FAIL
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + bytes(10))
    assert d.check_trampoline(d.trampoline_facts(str(junk)), TRAMPOLINE_BASE).status == d.FAIL
    copy = tmp_path / "spt-trampoline"
    shutil.copy(TRAMPOLINE, copy)
    copy.chmod(0o644)
    assert d.check_trampoline(d.trampoline_facts(str(copy)), TRAMPOLINE_BASE).status == d.FAIL


# --- spt manifest --------------------------------------------------------------

def write_json(path: Path, doc) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def manifest_doc(devices) -> dict:
    return {"type": "solo5.manifest", "version": 1,
            "devices": [{"name": n, "type": t} for n, t in devices]}


@pytest.fixture(scope="module")
def kit_build():
    """build(mft_c, out) -> compile the hello guest with the note in
    `mft_c`, with the kit's own flags and sources (asked from its Makefile)."""
    guests = ROOT / "guests"
    query = run(["make", "-s", "--no-print-directory", "-C", str(guests), "--eval",
                 "spt-test-flags: ; @echo $(CFLAGS) && echo $(filter %.c %.S,$(KIT))",
                 "spt-test-flags"])
    assert query.returncode == 0, query.stderr
    cflags, kit_sources = (line.split() for line in query.stdout.splitlines()[:2])

    def build(mft_c: Path, out: Path) -> Path:
        proc = run(["cc", *cflags, "-o", str(out), *kit_sources, "hello/hello.c", str(mft_c)],
                   cwd=guests, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return out

    return build


def test_manifest_gen_builds_a_guest_that_inspects_and_launches_as_declared(
        tmp_path, kit_build, block_file):
    doc = manifest_doc([("disk0", "BLOCK_BASIC"), ("disk1", "BLOCK_BASIC"),
                        ("x" * 67, "NET_BASIC")])
    source = write_json(tmp_path / "manifest.json", doc)
    note = tmp_path / "mft.c"
    made = spt("manifest", "gen", source, note)
    assert made.returncode == 0 and made.stdout == "" and made.stderr == "", made.stderr
    via_module = tmp_path / "module.c"
    module = run([sys.executable, "-m", "spt.manifestgen", "gen", str(source), str(via_module)])
    assert module.returncode == 0, module.stderr
    assert note.read_bytes() == via_module.read_bytes()  # what the kit's build runs

    kernel = kit_build(note, tmp_path / "three.spt")
    shown = spt("inspect", "--query", "manifest", kernel)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == doc
    # The launcher takes it too: the two block devices attached, and the net
    # one missing is named by the launcher with the declared type.
    refused = spt_run("--mem=8", "--block:disk0=" + block_file(512, "a"),
                      "--block:disk1=" + block_file(512, "b"), kernel)
    assert refused.returncode == 1
    assert "Device '%s' of type NET_BASIC declared but not attached" % ("x" * 67) \
        in refused.stderr


def test_manifest_gen_source_compiles_alone(tmp_path):
    source = write_json(tmp_path / "m.json", manifest_doc([("storage", "BLOCK_BASIC")]))
    note = tmp_path / "m.c"
    assert spt("manifest", "gen", source, note).returncode == 0
    compiled = run(["cc", "-c", "-Wall", "-Werror", "-o", str(tmp_path / "m.o"), str(note)])
    assert compiled.returncode == 0, compiled.stderr


def test_manifest_check_accepts_the_kits_manifests_and_the_limits(tmp_path):
    for name in ("hello", "block", "syscall_dev", "maxdev"):
        path = ROOT / "guests" / name / "manifest.json"
        proc = spt("manifest", "check", "--json", path)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == json.loads(path.read_text())
    most = write_json(tmp_path / "most.json",
                      manifest_doc([("d%d" % i, "NET_BASIC") for i in range(63)]))
    text = spt("manifest", "check", most)
    assert text.returncode == 0 and "valid, 63 of 63 devices" in text.stdout


BAD_MANIFESTS = {
    "hyphen-name": (manifest_doc([("st-orage", "BLOCK_BASIC")]), "name 'st-orage'"),
    "empty-name": (manifest_doc([("", "BLOCK_BASIC")]), "name ''"),
    "long-name": (manifest_doc([("n" * 68, "NET_BASIC")]), "must be 1 to 67"),
    "non-ascii-name": (manifest_doc([("disk\u00e9", "BLOCK_BASIC")]), "must be 1 to 67"),
    "duplicate": (manifest_doc([("a", "BLOCK_BASIC"), ("a", "NET_BASIC")]), "declared twice"),
    "too-many": (manifest_doc([("d%d" % i, "BLOCK_BASIC") for i in range(64)]),
                 "64 devices, at most 63"),
    "wrong-type": (manifest_doc([("a", "BLOCK")]), "type must be BLOCK_BASIC or NET_BASIC"),
    "reserved-type": (manifest_doc([("a", "RESERVED_FIRST")]), "type must be"),
    "malformed": ('{"type": "solo5.manifest", "version": 1, "devices": [', "malformed"),
    "not-a-manifest": ({"type": "solo5.abi", "version": 1}, '"type": "solo5.manifest"'),
    "version-2": ({"type": "solo5.manifest", "version": 2, "devices": []}, "version must be 1"),
    "devices-not-list": ({"type": "solo5.manifest", "version": 1, "devices": {}},
                         "must be a list"),
}


@pytest.mark.parametrize("bad", sorted(BAD_MANIFESTS))
def test_manifest_bad_json_is_refused_and_nothing_is_written(tmp_path, bad):
    doc, message = BAD_MANIFESTS[bad]
    source = write_json(tmp_path / "manifest.json", doc)
    assert_one_line_error(spt("manifest", "check", source), "spt: ", str(source), message)
    assert_one_line_error(spt("manifest", "gen", source, tmp_path / "out.c"), "spt: ",
                          str(source), message)
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_manifest_gen_keeps_an_old_output_when_refusing(tmp_path):
    out = tmp_path / "out.c"
    out.write_text("/* the previous note */\n")
    source = write_json(tmp_path / "m.json", manifest_doc([("a", "BLOCK"), ]))
    assert spt("manifest", "gen", source, out).returncode == 1
    assert out.read_text() == "/* the previous note */\n"
    assert sorted(os.listdir(tmp_path)) == ["m.json", "out.c"]


def test_manifest_missing_or_unreadable_input(tmp_path):
    assert_one_line_error(spt("manifest", "check", tmp_path / "none.json"), "spt: ",
                          "No such file or directory")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert_one_line_error(spt("manifest", "check", binary), "spt: ", str(binary))
    good = write_json(tmp_path / "good.json", manifest_doc([]))
    out = tmp_path / "no" / "dir" / "out.c"
    assert_one_line_error(spt("manifest", "gen", good, out), "spt: ",
                          "%s: No such file or directory" % out)


# --- completion and help ----------------------------------------------------------

def test_completion_script_and_completions():
    script = spt("--show-completion", "bash")
    assert script.returncode == 0, script.stderr
    assert "_spt_completion" in script.stdout and "complete " in script.stdout

    def complete(words: str, cword: int) -> list[str]:
        env = dict(os.environ, _SPT_COMPLETE="complete_bash", COMP_WORDS=words,
                   COMP_CWORD=str(cword))
        proc = run([SPT], env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert complete("spt insp", 1) == ["inspect"]
    assert {"inspect", "policy", "doctor", "manifest"} <= set(complete("spt ", 1))
    assert complete("spt manifest ", 2) == ["gen", "check"]
    assert complete("spt inspect --query ", 3) == ["abi", "manifest"]


@pytest.mark.parametrize("command", [["inspect"], ["policy"], ["doctor"], ["manifest", "gen"],
                                     ["manifest", "check"]])
def test_every_command_has_help(command):
    proc = spt(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: spt " + " ".join(command) in proc.stdout
