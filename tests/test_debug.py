"""solo5-spt --gdb under a real gdb and gdbserver, --dumpcore cores read by
a real gdb, and the debug options' refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SOLO5_SPT, SPT, assert_refused, read_line, spt_run, stop, wait_for, which
from hostile_util import fd_table
from spt import abi, launcher, plan

MEM_MIB = 8
MEM = MEM_MIB << 20
GDB_TIMEOUT = 180  # gdb's own connect/reply bounds below are generous too


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def entry_of(kernel: str) -> int:
    from elftools.elf.elffile import ELFFile

    with open(kernel, "rb") as f:
        return ELFFile(f).header["e_entry"]


def file_bytes_at(kernel: str, addr: int, n: int) -> bytes:
    from elftools.elf.elffile import ELFFile

    with open(kernel, "rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            start = seg["p_vaddr"]
            if seg["p_type"] == "PT_LOAD" and start <= addr < start + seg["p_filesz"]:
                f.seek(seg["p_offset"] + addr - start)
                return f.read(n)
    raise AssertionError("%#x is not in the file" % addr)


class Session:
    """solo5-spt --gdb started by the test; killed by its pid at teardown."""

    def __init__(self, tmp_path: Path, kernel: str, *guest_args, options=(), env=None):
        self.kernel = kernel
        self.port = free_port()
        self.out = tmp_path / "guest.out"
        self.err = tmp_path / "guest.err"
        self.proc = subprocess.Popen(
            [SOLO5_SPT, "--gdb", "--gdb-port=%d" % self.port, "--mem=%d" % MEM_MIB, *options,
             kernel, *guest_args],
            stdin=subprocess.DEVNULL, stdout=self.out.open("wb"), stderr=subprocess.PIPE,
            env=env)

    def gdb_command(self, *commands: str) -> list[str]:
        """Real gdb in batch mode against the session. gdb polls the port
        itself (tcp auto-retry) until the guest waits at its entry."""
        cmd = [which("gdb"), "-nx", "-batch",
               "-ex", "set tcp connect-timeout %d" % (GDB_TIMEOUT - 30),
               "-ex", "set remotetimeout 60",
               "-ex", "target remote localhost:%d" % self.port]
        for c in commands:
            cmd += ["-ex", c]
        return cmd + [self.kernel]

    def gdb(self, *commands: str) -> str:
        proc = subprocess.run(self.gdb_command(*commands), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=GDB_TIMEOUT)
        return proc.stdout + proc.stderr

    def wait(self) -> int:
        return self.proc.wait(timeout=60)

    def stderr(self) -> str:
        return self.proc.stderr.read().decode() if self.proc.poll() is not None else ""

    def close(self) -> None:
        stop(self.proc)
        self.proc.stderr.close()


@pytest.fixture
def session(tmp_path):
    started = []

    def start(*args, **kwargs):
        s = Session(tmp_path, *args, **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def test_gdb_breaks_by_symbol_backtraces_reads_a_variable_and_exits_with_the_guests_status(
        session, guest):
    s = session(guest("debuggee"), "7")
    out = s.gdb("break solo5_app_main", "continue", "bt", "break count_to", "continue",
                "finish", "print debuggee_counter", "continue")
    assert "Breakpoint 1, solo5_app_main" in out, out
    frames = [line for line in out.splitlines() if line.startswith("#")]
    assert [f.split(" in ")[-1].split(" (")[0] if " in " in f else f.split()[1]
            for f in frames[:3]] == ["solo5_app_main", "guest_main", "_start"], out
    assert "Breakpoint 2, count_to" in out, out
    assert "$1 = 3" in out, out
    assert "exited with code 07" in out, out
    assert s.wait() == 7
    assert "debuggee: counter=3" in s.out.read_text()


def test_gdb_finds_the_guest_before_its_first_instruction_with_the_abi_registers(
        session, guest):
    kernel = guest("hello")  # a plain kit guest
    s = session(kernel, "x")
    entry = entry_of(kernel)
    regs = ("rip rsp rdi rax rbx rcx rdx rsi rbp r8 r9 r10 r11 r12 r13 r14 r15 fs_base")
    out = s.gdb("info registers " + regs, "x/2xb $pc", "detach")
    values = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in regs.split() and words[1].startswith("0x"):
            values[words[0]] = int(words[1], 16)
    assert values.get("rip") == entry, out
    assert values.get("rsp") == MEM - 8, out
    assert values.get("rdi") == abi.BOOT_INFO_ADDR, out
    for reg in regs.split()[3:]:
        assert values.get(reg) == 0, (reg, out)
    # The guest's own first instruction is there (nothing planted is left).
    first = file_bytes_at(kernel, entry, 2)
    assert "0x%02x\t0x%02x" % (first[0], first[1]) in out, out
    assert s.wait() == 0  # detached: the guest runs on to its end
    assert "cmdline: 'x'" in s.out.read_text()


def test_gdb_writes_memory_and_registers_steps_and_watches(session, guest):
    s = session(guest("debuggee"))
    out = s.gdb("break count_to", "continue", "set var debuggee_counter = 40",
                "set var $rdi = 5",  # count_to(n): n is now 5
                "stepi", "watch debuggee_watched", "continue", "delete", "continue")
    assert "Breakpoint 1, count_to" in out, out
    assert "atchpoint 2: debuggee_watched" in out and "New value = 90" in out, out
    assert "exited normally" in out, out
    assert s.wait() == 0
    assert "debuggee: counter=45" in s.out.read_text()


def test_a_debugged_guest_dies_of_its_own_signal(session, guest):
    s = session(guest("debuggee"), "crash")
    out = s.gdb("continue", "bt", "continue")
    assert "SIGSEGV" in out and "crash_here" in out, out
    assert "terminated with signal SIGSEGV" in out, out
    assert s.wait() == -signal.SIGSEGV


def test_gdb_interrupts_a_running_guest_and_kills_it(session, guest):
    s = session(guest("sleep"), "600")
    gdb = subprocess.Popen(s.gdb_command("continue", "bt", "kill"), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The guest runs under gdbserver once it sleeps in its yield.
        deadline = time.monotonic() + GDB_TIMEOUT
        while True:
            assert time.monotonic() < deadline and gdb.poll() is None, "the guest never ran"
            kids = _children(s.proc.pid)
            guest_status = _status(kids[0]) if kids else {}
            if guest_status.get("TracerPid", "0").strip() not in ("0", str(s.proc.pid)) \
                    and guest_status.get("State", "").strip().startswith("S"):
                break
            time.sleep(0.05)
        gdb.send_signal(signal.SIGINT)  # Ctrl-C in gdb
        out, _ = gdb.communicate(timeout=GDB_TIMEOUT)
    finally:
        stop(gdb)
    assert "Program received signal SIGINT" in out, out
    assert "kit_yield" in out and "guest_main" in out, out
    assert "killed" in out, out
    assert s.wait() == -signal.SIGKILL
    assert "internal error" not in s.proc.stderr.read().decode()


def _children(pid: int) -> list[int]:
    """The guest among solo5-spt's children (gdbserver is the other one)."""
    try:
        text = Path("/proc/%d/task/%d/children" % (pid, pid)).read_text()
    except OSError:
        return []
    kids = []
    for kid in (int(p) for p in text.split()):
        try:
            if Path("/proc/%d/comm" % kid).read_text().startswith(("spt:", "solo5-spt", "python")):
                kids.append(kid)
        except OSError:
            pass
    return kids


def _status(pid: int) -> dict:
    try:
        text = Path("/proc/%d/status" % pid).read_text()
    except OSError:
        return {}  # gone
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _fd_kinds(pid: int) -> dict:
    """{fd: what kind of file} (stdio goes to different pipes and files)."""
    return {fd: target.split(":[")[0] if fd > 2 else "stdio"
            for fd, target in fd_table(pid).items()}


def _plan_dump(tmp_path, name, *args):
    out = tmp_path / name
    proc = spt_run("--mem=%d" % MEM_MIB, *args, env=dict(os.environ, SPT_PLAN_DUMP=str(out)))
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_a_waiting_guest_runs_under_the_same_filter_fds_and_mappings(
        session, guest, running, tmp_path):
    kernel = guest("sleep")
    plain = _plan_dump(tmp_path, "plain.json", kernel, "60")
    debugged = _plan_dump(tmp_path, "debug.json", "--gdb", "--gdb-port=%d" % free_port(),
                          kernel, "60")
    assert debugged["bpf"] == plain["bpf"] and debugged["rules"] == plain["rules"]
    assert debugged["plan"]["flags"] == plain["plan"]["flags"] | plan.FLAG_STOP_AT_ENTRY
    assert dict(debugged["plan"], flags=0) == dict(plain["plan"], flags=0)

    s = session(kernel, "60")
    assert "waiting for a debugger" in read_line(s.proc.stderr, timeout=60)
    [pid] = _children(s.proc.pid)
    normal = running("--mem=%d" % MEM_MIB, kernel, "60")
    read_line(normal.stdout, timeout=60)
    for status in (_status(pid), _status(normal.pid)):
        assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
    assert _fd_kinds(pid) == _fd_kinds(normal.pid)
    maps = Path("/proc/%d/maps" % pid).read_text().splitlines()
    files = [line.split()[-1] for line in maps if len(line.split()) == 6]
    from spt import imagestore

    store = imagestore.store_dir()  # the guest's own image pages are guest memory
    assert [f for f in files if f != "[vsyscall]" and os.path.dirname(f) != store] == [
        launcher.TRAMPOLINE], maps
    kept = [line for line in maps if line.endswith("spt-trampoline")][0].split()[0].split("-")
    assert int(kept[1], 16) - int(kept[0], 16) == abi.PAGE_SIZE
    for line in maps:
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        assert (abi.GUEST_MEM_START <= lo and hi <= MEM) or line.endswith(
            ("spt-trampoline", "[vsyscall]")), line
    # The debug session owns the guest: ending it ends the guest, no orphan.
    os.kill(s.proc.pid, signal.SIGKILL)
    s.proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while "Z" not in _status(pid).get("State", "Z"):
        assert time.monotonic() < deadline, "the guest outlived its debug session"
        time.sleep(0.05)


def test_spt_debug_runs_both_steps_in_one_terminal(guest):
    # gdb reads its commands from a stdin that is not a terminal.
    commands = "break solo5_app_main\ncontinue\nbt\nprint debuggee_counter\ncontinue\n"
    proc = subprocess.run([SPT, "debug", "--mem=%d" % MEM_MIB, guest("debuggee"), "9"],
                          input=commands, capture_output=True, text=True, timeout=GDB_TIMEOUT)
    assert "Breakpoint 1, solo5_app_main" in proc.stdout, proc.stdout + proc.stderr
    assert "guest_main" in proc.stdout and "$1 = 0" in proc.stdout, proc.stdout
    assert "debuggee: counter=3" in proc.stdout
    assert proc.returncode == 9, proc.stderr


def test_spt_debug_refuses_its_own_options_in_the_launch(guest):
    proc = subprocess.run([SPT, "debug", "--gdb", guest("hello")], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.startswith("spt: spt debug runs solo5-spt"), \
        proc.stderr
    assert "Traceback" not in proc.stderr


# --- cores ------------------------------------------------------------------------

def _plain_core_pattern() -> str:
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if not pattern or pattern.startswith(("|", "/")):
        pytest.skip("kernel.core_pattern is %r: cores do not land in a directory this test "
                    "controls (the test never changes host sysctls)" % pattern)
    return pattern


@pytest.mark.parametrize("kernel, args, signame, frame", [
    ("debuggee", ["crash"], "SIGSEGV", "crash_here"),
    ("fault", ["null"], "SIGSEGV", "fault_null"),
    ("fault", ["syscall", "39"], "SIGSYS", "kit_syscall"),
])
def test_gdb_reads_a_crashed_guests_core(guest, tmp_path, kernel, args, signame, frame):
    _plain_core_pattern()
    cores = tmp_path / "cores"
    cores.mkdir()
    shutil.copy(guest(kernel), tmp_path / "k.spt")
    kernel = str(tmp_path / "k.spt")
    # Both paths relative: KERNEL is opened before the launch moves into DIR.
    proc = spt_run("--dumpcore=cores", "--mem=%d" % MEM_MIB, "k.spt", *args, timeout=120,
                   cwd=tmp_path)
    assert proc.returncode == -getattr(signal, signame), proc.stderr
    assert str(cores) in proc.stderr.splitlines()[0]
    [core] = list(cores.iterdir())
    out = subprocess.run([which("gdb"), "-nx", "-batch", "-ex", "bt", "-ex", "info registers rip",
                          kernel, str(core)], stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, timeout=GDB_TIMEOUT)
    text = out.stdout + out.stderr
    assert "Program terminated with signal %s" % signame in text, text
    first = next(line for line in text.splitlines() if line.startswith("#0"))
    assert frame in first, text
    assert "_start" in text, text


def test_without_dumpcore_no_core_is_written(guest, tmp_path):
    _plain_core_pattern()
    proc = spt_run("--mem=%d" % MEM_MIB, guest("fault"), "null", cwd=tmp_path,
                   preexec_fn=lambda: __import__("resource").setrlimit(
                       __import__("resource").RLIMIT_CORE, (0, -1)))
    assert proc.returncode == -signal.SIGSEGV
    assert list(tmp_path.iterdir()) == []


def test_core_destination_says_what_core_pattern_does():
    from spt.debug import core_destination

    assert "/d" in core_destination("core", "/d") and "'core'" in core_destination("core", "/d")
    piped = core_destination("|/usr/lib/systemd/systemd-coredump %P %u", "/d")
    assert "systemd-coredump" in piped and "not to /d" in piped and "coredumpctl" in piped
    assert "not to /d" in core_destination("/var/crash/core.%p", "/d")
    assert "no core" in core_destination("", "/d")


# --- refusals -----------------------------------------------------------------------

@pytest.mark.parametrize("option, fragment", [
    ("--gdb=1", "--gdb"),
    ("--gdb-port", "--gdb-port=N"),
    ("--gdb-port=0", "1 to 65535"),
    ("--gdb-port=65536", "1 to 65535"),
    ("--gdb-port=12a", "1 to 65535"),
    ("--gdb-port=\u0661\u0662", "1 to 65535"),
    ("--dumpcore=", "directory"),
    ("--dumpcore=/nonexistent/spt-cores", "not a directory"),
])
def test_bad_debug_options_are_refused(guest, option, fragment):
    assert_refused(spt_run("--gdb", option, guest("hello")), fragment)


def test_gdb_without_gdbserver_is_refused(guest, tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no gdbserver here
    assert_refused(spt_run("--gdb", guest("hello"), env=env), "gdbserver")


def test_gdb_on_a_port_in_use_is_refused_before_the_launch(guest):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = spt_run("--gdb", "--gdb-port=%d" % port, guest("hello"))
    assert_refused(proc, "--gdb-port=%d" % port, "cannot listen")
    assert "hello" not in proc.stdout


def test_a_gdbserver_that_cannot_attach_leaves_no_guest_behind(session, guest, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "gdbserver").write_text("#!/bin/sh\nexit 3\n")  # as if ptrace were refused
    (fake / "gdbserver").chmod(0o755)
    s = session(guest("hello"), env=dict(os.environ, PATH="%s:%s" % (fake, os.environ["PATH"])))
    assert "waiting for a debugger" in read_line(s.proc.stderr, timeout=60)
    [pid] = _children(s.proc.pid)
    deadline = time.monotonic() + 60
    while True:  # the test is the debugger: connect, polling with a bound
        try:
            conn = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with conn:
        assert s.wait() == 1
    rest = s.proc.stderr.read().decode()
    assert "could not attach to the guest" in rest and "Traceback" not in rest, rest
    # killed (a zombie until reaped), not spinning: SIGKILL lands when the
    # machine gets to it, so wait for the state with a generous bound
    wait_for(lambda: "Z" in _status(pid).get("State", "Z"), timeout=30)


def test_gdb_with_a_bad_kernel_is_one_line(tmp_path):
    junk = tmp_path / "junk.spt"
    junk.write_bytes(b"not an ELF")
    proc = spt_run("--gdb", "--gdb-port=%d" % free_port(), junk)
    assert_refused(proc)
    assert "waiting for a debugger" not in proc.stderr


def test_gdb_port_alone_changes_nothing(guest):
    proc = spt_run("--gdb-port=4321", "--mem=%d" % MEM_MIB, guest("hello"))
    assert proc.returncode == 0 and "hello from" in proc.stdout


# --- spt doctor ---------------------------------------------------------------------

def test_doctor_debugging_and_cores_checks():
    from spt.commands import doctor as d

    ok = d.check_debugging("/usr/bin/gdbserver", "/usr/bin/gdb", 1, None, 0)
    assert ok.status == d.OK and "PR_SET_PTRACER" in ok.detail
    assert d.check_debugging(None, "/usr/bin/gdb", 0, None, 0).status == d.WARN
    assert d.check_debugging("/usr/bin/gdbserver", None, 3, None, -1).status == d.WARN
    assert d.check_debugging("/usr/bin/gdbserver", None, 2, None, 0).status == d.WARN
    assert d.check_debugging("/usr/bin/gdbserver", None, 2, None,
                             1 << d.CAP_SYS_PTRACE).status == d.OK
    assert d.check_debugging("/usr/bin/gdbserver", None, None, "EPERM", 0).status == d.WARN
    assert d.check_cores("core", 0, True).status == d.OK
    assert d.check_cores("core", 0, False).status == d.WARN
    assert d.check_cores("", -1, True).status == d.WARN
    assert "coredumpctl" in d.check_cores("|/lib/systemd/systemd-coredump %P", -1, False).detail


def test_doctor_ptrace_probe_traces_a_child():
    from spt import debug

    assert debug.ptrace_problem() is None  # root in CI: tracing is permitted
