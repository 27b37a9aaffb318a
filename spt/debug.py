"""Debug mode of `solo5-spt`: --gdb (a GDB remote session on the guest) and --dumpcore.

Only `solo5-spt --gdb` or `--dumpcore` imports this module; a launch without
them never does (tests/test_launch_path.py).

--gdb forks. The child becomes the guest exactly as a normal launch does
(same plan, fds, filter; nothing of the tender stays mapped) with one plan
flag more, SPT_PLAN_STOP_AT_ENTRY: it asks to be traced (PTRACE_TRACEME)
before it execs the trampoline, and the trampoline's kept page executes an
int3 right before the jump to the guest, after the filter is installed. The
parent (this module, outside the guest) holds the guest in that trap until
a debugger connects to 127.0.0.1:PORT, then completes the jump (%rip =
entry, %rsp = mem_size - 8), parks the guest on its entry and hands it to
Debian's gdbserver (`gdbserver --attach - PID`, the protocol on a socket
pair this process relays to the debugger's connection). gdbserver serves the
GDB protocol; when the guest exits, this process exits with the guest's
status (or dies of the guest's signal).

--dumpcore[=DIR] raises RLIMIT_CORE and, right before the exec, moves the
launch into DIR, where the kernel writes a relative core_pattern's core.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
import subprocess
import sys
from collections import namedtuple

from spt import launcher
from spt.errors import SptError

DEFAULT_GDB_PORT = 1234
GDBSERVER = "gdbserver"  # Debian's package gdbserver
CORE_PATTERN = "/proc/sys/kernel/core_pattern"
YAMA_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"

# ptrace(2) requests and options (x86_64 Linux).
PTRACE_TRACEME = 0
PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SETOPTIONS = 0x4200
PTRACE_O_EXITKILL = 0x100000
INT3 = 0xCC
JMP_SELF = b"\xeb\xfe"  # jmp . (x86)

# struct user_regs_struct (sys/user.h), 27 unsigned longs.
USER_REGS = ("r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs "
             "eflags rsp ss fs_base gs_base ds es fs gs").split()


class DebugOptions(namedtuple("DebugOptions", "gdb gdb_port dumpcore")):
    """--gdb (bool), --gdb-port (int), --dumpcore (a directory, "" for the
    current one, or None)."""

    __slots__ = ()


class UserRegs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulonglong) for name in USER_REGS]


def parse_options(given: dict):
    """{"--gdb" | "--gdb-port" | "--dumpcore": the argument as given} ->
    DebugOptions, or None when neither --gdb nor --dumpcore is on (as with
    hvt, --gdb-port alone changes nothing; it is still checked)."""
    gdb = given.get("--gdb")
    if gdb is not None and gdb != "--gdb":
        raise SptError("Invalid option: `%s' (--gdb takes no value)" % gdb, usage=True)
    port = DEFAULT_GDB_PORT
    if "--gdb-port" in given:
        name, eq, value = given["--gdb-port"].partition("=")
        if not eq:
            raise SptError("Invalid option: `%s' (expected --gdb-port=N)" % name, usage=True)
        port = parse_port(value)
    dumpcore = None
    if "--dumpcore" in given:
        _name, eq, dumpcore = given["--dumpcore"].partition("=")
        if eq and not dumpcore:
            raise SptError("--dumpcore=: expected a directory (or --dumpcore alone for the "
                           "current one)")
    if gdb is None and dumpcore is None:
        return None
    return DebugOptions(gdb=gdb is not None, gdb_port=port, dumpcore=dumpcore)


def parse_port(value: str) -> int:
    if not value.isdigit() or not value.isascii() or not 1 <= int(value) <= 65535:
        raise SptError("--gdb-port: expected a TCP port number 1 to 65535, got '%s'" % value)
    return int(value)


def start(opts, timer=None) -> None:
    """The launcher's hand-off for a launch with debug options."""
    debug = opts.debug
    if debug.dumpcore is not None:
        core_dir = enable_cores(debug.dumpcore)
        if opts.jail == "auto" and os.geteuid() == 0:
            # A jailed guest's working directory is its empty root and its
            # uid is not the operator's: the kernel could write its core
            # nowhere. --dumpcore keeps the jail's rlimits, not the rest
            # (docs/debugging.md, docs/security.md).
            opts = opts._replace(jail="limits")
            print("solo5-spt: --dumpcore: the guest keeps uid 0 and the host's namespaces "
                  "(the jail's rlimits only), so that the kernel can write its core",
                  file=sys.stderr)
    else:
        core_dir = None
    if not debug.gdb:
        become_guest(opts, timer, 0, core_dir)
        return
    serve_gdb(opts, timer, debug.gdb_port, core_dir)


def become_guest(opts, timer, extra_flags: int, core_dir: str | None) -> None:
    """The normal launch (launcher.start) with plan flags added and, for
    --dumpcore, the working directory moved where the core is to go."""
    def move_to_core_dir() -> None:
        try:
            os.chdir(core_dir)  # after every open: relative KERNEL and block paths still work
        except OSError as exc:
            raise SptError("--dumpcore: %s: %s" % (core_dir, exc.strerror)) from None

    launcher.start(opts._replace(debug=None), timer, extra_flags,
                   move_to_core_dir if core_dir is not None else None)


# --- cores --------------------------------------------------------------------

def enable_cores(directory: str) -> str:
    """RLIMIT_CORE as high as allowed, the directory checked, and one line
    saying where the host's core_pattern sends a core. Returns the absolute
    directory to launch from."""
    target = os.path.abspath(directory or ".")
    if not os.path.isdir(target):
        raise SptError("--dumpcore: %s is not a directory" % target)
    if not os.access(target, os.W_OK | os.X_OK):
        raise SptError("--dumpcore: %s is not writable" % target)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        if hard == 0:
            raise SptError("--dumpcore: the hard RLIMIT_CORE is 0 (ulimit -Hc): no core can "
                           "be written") from None
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    print("solo5-spt: --dumpcore: %s" % core_destination(read_core_pattern(), target),
          file=sys.stderr)
    return target


def read_core_pattern() -> str:
    try:
        with open(CORE_PATTERN, encoding="utf-8", errors="replace") as f:
            return f.read().rstrip("\n")
    except OSError:
        return ""


def core_destination(pattern: str, directory: str) -> str:
    """Where the kernel puts a crashing guest's core, in words."""
    if pattern.startswith("|"):
        return ("kernel.core_pattern pipes cores to %s, so a crash's core goes there, not "
                "to %s (with systemd-coredump: coredumpctl list; coredumpctl dump PID -o FILE)"
                % (pattern[1:].split()[0] if pattern[1:].split() else "a program", directory))
    if not pattern:
        return "kernel.core_pattern is empty: the kernel writes no core"
    if pattern.startswith("/"):
        return ("kernel.core_pattern is the absolute path '%s', so a crash's core goes there, "
                "not to %s" % (pattern, directory))
    return ("a crash leaves its core in %s, named by kernel.core_pattern '%s'"
            % (directory, pattern))


# --- --gdb ----------------------------------------------------------------------

def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    return libc


def _ptrace(libc, request: int, pid: int, addr=None, data=None) -> None:
    if libc.ptrace(request, pid, addr, data) == -1:
        err = ctypes.get_errno()
        raise SptError("--gdb: ptrace: %s" % os.strerror(err))


def gdbserver_path() -> str | None:
    import shutil

    return shutil.which(GDBSERVER)


def listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise SptError("--gdb-port=%d: cannot listen on localhost: %s"
                       % (port, exc.strerror)) from None
    sock.listen(1)
    return sock


def serve_gdb(opts, timer, port: int, core_dir: str | None) -> None:
    server = gdbserver_path()
    if server is None:
        raise SptError("--gdb needs gdbserver (Debian package gdbserver), not found in PATH")
    listen(port).close()  # a port in use fails now, before anything is prepared
    libc = _libc()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        # The guest-to-be: traced by the parent from here on, killed with it,
        # attachable by the parent's gdbserver under yama ptrace_scope 1, and
        # its own process group, which is where gdbserver sends gdb's Ctrl-C.
        import prctl

        os.setpgid(0, 0)

        prctl.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        try:
            prctl.set_ptracer(parent)
        except OSError:
            pass  # EINVAL: no Yama in this kernel, nothing to lift
        _ptrace(libc, PTRACE_TRACEME, 0)
        become_guest(opts, timer, _stop_flag(), core_dir)
        return  # SPT_PLAN_DUMP: the plan is written, exit 0
    exit_like(run_session(libc, pid, server, port, opts.kernel))


def _stop_flag() -> int:
    from spt import plan

    return plan.FLAG_STOP_AT_ENTRY


def run_session(libc, pid: int, server: str, port: int, kernel: str) -> int:
    """Wait for the guest's stop at its entry, then for a debugger, then
    for the guest's end. Returns the guest's wait status. The port listens
    only once the guest waits at its entry: a debugger that connects
    earlier is refused and retries (gdb does, for `tcp connect-timeout`)."""
    status = wait_for_entry(libc, pid)
    if status is not None:
        return status  # the launch failed (its message is out) or SPT_PLAN_DUMP
    try:
        listener = listen(port)
    except SptError:
        os.kill(pid, signal.SIGKILL)
        raise
    print("solo5-spt: the guest is stopped before its first instruction; waiting for a "
          "debugger: gdb --ex='target remote localhost:%d' %s" % (port, kernel),
          file=sys.stderr, flush=True)
    try:
        conn, _addr = listener.accept()  # meanwhile the guest waits in our ptrace stop
    finally:
        listener.close()
    entry, saved = park_at_entry(libc, pid)
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen([server, "--once", "--attach", "-", str(pid)],
                                stdin=theirs.fileno(), stdout=theirs.fileno(), close_fds=True)
    except OSError as exc:
        os.kill(pid, signal.SIGKILL)
        raise SptError("--gdb: cannot run %s: %s" % (server, exc.strerror)) from None
    finally:
        theirs.close()
    try:
        if not wait_attached(pid, proc):
            os.kill(pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise SptError("--gdb: %s could not attach to the guest (see `spt doctor`)"
                           % server)
        write_guest(pid, entry, saved)  # the guest's own first instruction again
        relay(conn, ours)
    finally:
        conn.close()
        ours.close()
    _pid, status = os.waitpid(pid, 0)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return status


def wait_for_entry(libc, pid: int):
    """Follow the traced child to keep.S's int3 right before the guest's
    first instruction. Returns None there (still traced), or the child's
    wait status if it ended first."""
    exec_seen = False
    while True:
        _pid, status = os.waitpid(pid, 0)
        if not os.WIFSTOPPED(status):
            return status
        sig = os.WSTOPSIG(status)
        if sig == signal.SIGTRAP and not exec_seen:
            exec_seen = True  # the SIGTRAP a traced execve raises
            _ptrace(libc, PTRACE_SETOPTIONS, pid, None, PTRACE_O_EXITKILL)
            _ptrace(libc, PTRACE_CONT, pid, None, 0)
            continue
        if sig == signal.SIGTRAP and exec_seen and _read_guest(pid, _regs(libc, pid).rip - 1, 1) \
                == bytes([INT3]):
            return None
        _ptrace(libc, PTRACE_CONT, pid, None, sig)  # not ours: deliver it


def _regs(libc, pid: int) -> UserRegs:
    regs = UserRegs()
    _ptrace(libc, PTRACE_GETREGS, pid, None, ctypes.byref(regs))
    return regs


def park_at_entry(libc, pid: int) -> tuple[int, bytes]:
    """Hand the guest over untraced without letting it run a guest
    instruction and without a pending stop signal (a job-control stop would
    show the debugger spurious SIGSTOPs): complete keep.S's `ret` (%rip =
    entry, %rsp = mem_size - 8, every other register as the guest gets it),
    put `jmp .` over the entry's first two bytes and detach. The guest spins
    on its entry until gdbserver's attach stops it there; then the saved
    bytes go back. Returns (entry, saved bytes)."""
    regs = _regs(libc, pid)
    entry = int.from_bytes(_read_guest(pid, regs.rsp, 8), "little")
    saved = _read_guest(pid, entry, len(JMP_SELF))
    write_guest(pid, entry, JMP_SELF)
    regs.rip = entry
    regs.rsp += 8
    _ptrace(libc, PTRACE_SETREGS, pid, None, ctypes.byref(regs))
    _ptrace(libc, PTRACE_DETACH, pid, None, 0)
    return entry, saved


def _read_guest(pid: int, addr: int, n: int) -> bytes:
    try:
        fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, n, addr)
        finally:
            os.close(fd)
    except OSError:
        return b""


def write_guest(pid: int, addr: int, data: bytes) -> None:
    """Write guest memory through /proc (it writes read-only text too)."""
    try:
        fd = os.open("/proc/%d/mem" % pid, os.O_RDWR | os.O_CLOEXEC)
        try:
            if os.pwrite(fd, data, addr) != len(data):
                raise OSError(5, "short write")
        finally:
            os.close(fd)
    except OSError as exc:
        os.kill(pid, signal.SIGKILL)
        raise SptError("--gdb: cannot write guest memory at %#x: %s"
                       % (addr, exc.strerror)) from None


def wait_attached(pid: int, proc, timeout: float = 60.0) -> bool:
    """gdbserver has attached once the guest is in a tracing stop with
    gdbserver as its tracer. False if gdbserver ended or took too long."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        fields = dict(line.split(":", 1) for line in _read_text("/proc/%d/status" % pid)
                      .splitlines() if ":" in line)
        if fields.get("TracerPid", "").strip() == str(proc.pid) \
                and fields.get("State", "").strip().startswith("t"):
            return True
        time.sleep(0.005)
    return False


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def relay(conn: socket.socket, server: socket.socket) -> None:
    """Copy bytes both ways between the debugger and gdbserver until either
    side closes (the guest's exit closes gdbserver's side)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(conn, selectors.EVENT_READ, server)
    sel.register(server, selectors.EVENT_READ, conn)
    try:
        while True:
            for key, _events in sel.select():
                try:
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
                except OSError:
                    return
    finally:
        sel.close()


def exit_like(status: int) -> None:
    """Leave as the guest did: its exit status, or death by its signal
    (without a core of this Python process)."""
    if os.WIFEXITED(status):
        sys.exit(os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status)
    sys.stdout.flush()
    sys.stderr.flush()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be handled anyway
        signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    sys.exit(128 + sig)


# --- what `spt doctor` asks ---------------------------------------------------

def ptrace_problem() -> str | None:
    """Can this process trace a child the way --gdb does (PTRACE_TRACEME,
    then a stop the parent sees)? None if so, else why not."""
    libc = _libc()
    pid = os.fork()
    if pid == 0:
        try:
            if libc.ptrace(PTRACE_TRACEME, 0, None, None) == -1:
                os._exit(10 + min(ctypes.get_errno(), 200))
            os.kill(os.getpid(), signal.SIGSTOP)
        finally:
            os._exit(0)
    try:
        _pid, status = os.waitpid(pid, 0)
        if os.WIFSTOPPED(status):
            return None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 0
        return "PTRACE_TRACEME failed: %s" % (os.strerror(code - 10) if code >= 10
                                             else "the child was not stopped")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass


def yama_scope() -> int | None:
    """kernel.yama.ptrace_scope, or None without Yama."""
    text = _read_text(YAMA_SCOPE).strip()
    return int(text) if text.isdigit() else None
