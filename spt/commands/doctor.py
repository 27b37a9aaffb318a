"""`spt doctor`: can this host run spt guests?

One check a line, each `ok`, `warn` (some launches fail: e.g. no TAPs) or
`FAIL` (no launch can succeed); the exit status is 1 if any check fails.
Each check is a small function over values read from the host, so a test can
feed it other values; `run_checks()` reads the host and calls them all.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from dataclasses import asdict, dataclass

import typer

from spt import abi
from spt.commands._common import one_line_errors, print_json

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIB = 1 << 20
GUEST_MEM_START = abi.GUEST_MEM_START  # spt-abi §3: guest memory begins here
MIN_KERNEL = (5, 9)  # close_range(2), which the trampoline uses to close fds
MIN_LIBSECCOMP = (2, 4, 0)  # SCMP_ACT_KILL_PROCESS, the filter's default action
# fds a launch holds at once, at its peak, which is a launch that compiles
# its filter (an empty launch cache, or SPT_CACHE=0): stdio, the kernel image,
# the epoll and timer placeholders, and libseccomp's loader (ctypes'
# find_library runs `ldconfig -p` through a pipe: five fds more for a
# moment); plus one a device. (A launch from a warm cache needs three fewer:
# the image store's file, the plan memfd, no loader.)
LAUNCH_FDS = 11
MAX_DEVICES = abi.MFT_MAX_ENTRIES - 1  # entry 0 is reserved
CAP_NET_ADMIN = 12
PR_GET_SECCOMP = 21
MAX_CACHE_ENTRIES = 256  # spt.cache.MAX_ENTRIES (not imported at load: doctor stays cheap)


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    value: object = None  # the number a script would want, where there is one


# --- the checks, over plain values -------------------------------------------

def check_kernel(release: str) -> Check:
    try:
        version = tuple(int(p) for p in release.split("-", 1)[0].split(".")[:2])
    except ValueError:
        return Check("kernel", WARN, "cannot read the version of Linux %s" % release, release)
    need = "%d.%d" % MIN_KERNEL
    if version < MIN_KERNEL:
        return Check("kernel", FAIL, "Linux %s: the trampoline needs close_range (%s or later)"
                     % (release, need), release)
    return Check("kernel", OK, "Linux %s (close_range needs %s)" % (release, need), release)


def check_seccomp(status_text: str | None, prctl_mode: int, actions: str | None) -> Check:
    """`status_text` is /proc/self/status, `prctl_mode` what PR_GET_SECCOMP
    returned (-1: failed), `actions` /proc/sys/kernel/seccomp/actions_avail."""
    fields = dict(line.split(":", 1) for line in (status_text or "").splitlines() if ":" in line)
    if "Seccomp" not in fields or prctl_mode < 0:
        return Check("seccomp", FAIL, "this kernel has no seccomp (no Seccomp field in "
                     "/proc/self/status, or PR_GET_SECCOMP failed)")
    if actions is None or "kill_process" not in actions.split():
        return Check("seccomp", FAIL, "filter mode with the kill_process action is not "
                     "available (/proc/sys/kernel/seccomp/actions_avail: %s)"
                     % (actions.strip() if actions else "missing"))
    filters = int(fields.get("Seccomp_filters", "0").strip() or 0)
    if prctl_mode or filters:
        return Check("seccomp", WARN, "filter mode available, but spt itself runs under %d "
                     "seccomp filter(s): guests inherit them, and they may refuse calls a "
                     "guest needs" % filters, filters)
    return Check("seccomp", OK, "filter mode with kill_process available; spt runs unfiltered", 0)


def check_libseccomp(version: tuple | None, compiled: int | str) -> Check:
    """`version` from seccomp_version() (None: not loadable); `compiled` the
    instruction count of the core allow-list, or why it did not compile."""
    if version is None:
        return Check("libseccomp", FAIL, "libseccomp.so.2 cannot be loaded")
    text = "%d.%d.%d" % version
    if tuple(version) < MIN_LIBSECCOMP:
        return Check("libseccomp", FAIL, "libseccomp %s is older than %d.%d.%d (no "
                     "KILL_PROCESS action)" % ((text,) + MIN_LIBSECCOMP), text)
    if isinstance(compiled, str):
        return Check("libseccomp", FAIL, "libseccomp %s cannot compile the core allow-list: %s"
                     % (text, compiled), text)
    return Check("libseccomp", OK, "libseccomp %s; the core allow-list compiles to %d BPF "
                 "instructions" % (text, compiled), text)


def check_python(versions: dict) -> Check:
    """`versions`: distribution -> its version, or the exception its import
    raised."""
    broken = sorted((name, v) for name, v in versions.items() if isinstance(v, Exception))
    if broken:
        return Check("python", FAIL, "cannot import " + ", ".join(
            "%s (%s)" % (name, str(exc) or type(exc).__name__) for name, exc in broken))
    return Check("python", OK, "Python %s; %s" % (
        sys.version.split()[0], ", ".join("%s %s" % kv for kv in sorted(versions.items()))))


@dataclass(frozen=True)
class TrampolineFacts:
    path: str
    exists: bool
    executable: bool = False
    static: bool = False  # ET_EXEC without PT_INTERP or PT_DYNAMIC
    base: int | None = None  # lowest PT_LOAD address
    keep_page: int | None = None  # spt_keep_start, the page that stays mapped
    stale: bool = False  # a source in native/ is newer than the binary
    error: str = ""
    machine: str | None = None  # e_machine, as pyelftools names it


def check_architecture(machine: str, trampoline_machine: str | None) -> Check:
    """The host's architecture is one spt has a room for (spt/arch/,
    native/<arch>/), and the trampoline was built for it."""
    from spt import arch

    if machine not in arch.SUPPORTED:
        return Check("architecture", FAIL, "%s: spt runs on %s only"
                     % (machine, ", ".join(arch.SUPPORTED)), machine)
    facts = arch.facts(machine)
    if trampoline_machine is not None and trampoline_machine != facts.ELF_MACHINE:
        return Check("architecture", FAIL, "%s host, but the trampoline is built for %s "
                     "(rebuild it: make native)" % (machine, trampoline_machine), machine)
    return Check("architecture", OK, "%s: runs %s kernels (%s, a %d-call allow-list)"
                 % (machine, machine, facts.ELF_MACHINE, len(facts.SYSCALLS)), machine)


def check_trampoline(t: TrampolineFacts, launcher_base: int) -> Check:
    if not t.exists:
        return Check("trampoline", FAIL, "%s is missing (build it: make native)" % t.path)
    if t.error:
        return Check("trampoline", FAIL, "%s: %s" % (t.path, t.error))
    if not t.executable:
        return Check("trampoline", FAIL, "%s is not executable" % t.path)
    if not t.static:
        return Check("trampoline", FAIL, "%s is not a static executable" % t.path)
    if t.base is None or t.base < launcher_base:
        return Check("trampoline", FAIL, "%s is linked at %s, below %#x where the launcher "
                     "ends guest memory (rebuild: make native)"
                     % (t.path, "?" if t.base is None else "%#x" % t.base, launcher_base))
    keep = "keep page %#x" % t.keep_page if t.keep_page is not None else "keep page unknown " \
           "(no symbol table)"
    if t.stale:
        return Check("trampoline", WARN, "%s is older than its sources in native/ (make "
                     "native); static, linked at %#x, %s" % (t.path, t.base, keep), t.keep_page)
    return Check("trampoline", OK, "%s: static, linked at %#x, %s" % (t.path, t.base, keep),
                 t.keep_page)


def largest_mem_mib(ceilings: list[int], rlimit_as: int, overhead: int) -> int:
    """The largest --mem the launcher accepts: guest memory must end at or
    below every ceiling (the trampoline's pages) and, with what the launch
    maps besides, fit RLIMIT_AS."""
    limit = min(ceilings)
    if rlimit_as != resource.RLIM_INFINITY:
        limit = min(limit, rlimit_as - overhead)
    return max(limit, 0) // MIB


def check_address_space(interpreter: tuple[str, int] | None, largest_mib: int,
                        needed_mib: int, why: str) -> Check:
    """`interpreter`: (path, load address) of this Python; `needed_mib` the
    smallest --mem a kit guest needs; `why` says what bounds `largest_mib`."""
    where = ("interpreter %s at %#x, replaced by the trampoline at exec, so it does not "
             "limit --mem; " % interpreter) if interpreter else ""
    detail = "%slargest --mem=%d (%s)" % (where, largest_mib, why)
    if largest_mib < needed_mib:
        return Check("address space", FAIL, detail, largest_mib)
    if largest_mib < 512:
        return Check("address space", WARN, detail + "; the default --mem=512 does not fit",
                     largest_mib)
    return Check("address space", OK, detail, largest_mib)


def check_mmap_min_addr(value: int | None) -> Check:
    if value is None:
        return Check("mmap_min_addr", WARN, "cannot read vm.mmap_min_addr")
    if value > GUEST_MEM_START:
        return Check("mmap_min_addr", FAIL, "vm.mmap_min_addr = %d (%#x): guest memory starts "
                     "at %#x, below it (sysctl vm.mmap_min_addr=65536)"
                     % (value, value, GUEST_MEM_START), value)
    return Check("mmap_min_addr", OK, "vm.mmap_min_addr = %d, at or below the guest memory "
                 "start %#x" % (value, GUEST_MEM_START), value)


def check_overcommit(mode: int | None) -> Check:
    if mode is None:
        return Check("overcommit", WARN, "cannot read vm.overcommit_memory")
    if mode == 2:
        return Check("overcommit", WARN, "vm.overcommit_memory = 2 (strict): each guest's "
                     "whole --mem counts against CommitLimit although it is mapped "
                     "MAP_NORESERVE", mode)
    return Check("overcommit", OK, "vm.overcommit_memory = %d: guest memory is committed "
                 "only where the guest touches it" % mode, mode)


def check_tun(problem: str | None) -> Check:
    """`problem`: why /dev/net/tun cannot be opened, or None."""
    if problem:
        return Check("tun", WARN, "/dev/net/tun: %s: net devices cannot be attached" % problem)
    return Check("tun", OK, "/dev/net/tun opens read-write")


def check_net_privileges(cap_eff: int | None, uid: int) -> Check:
    if cap_eff is not None and cap_eff >> CAP_NET_ADMIN & 1:
        return Check("net privileges", OK, "CAP_NET_ADMIN: --net:NAME=IFACE can attach any TAP")
    return Check("net privileges", WARN, "no CAP_NET_ADMIN: --net:NAME=IFACE attaches only "
                 "TAPs owned by uid %d; --net:NAME=@FD works with a TAP fd the caller opened"
                 % uid)


def check_cache(directory: str | None, problem: str | None, entries: int) -> Check:
    """The launch cache: where it is and whether launches can use it. Without
    it every launch checks the image and compiles the filter again."""
    if problem is not None:
        return Check("launch cache", WARN, "%s: %s; every launch checks the image and "
                     "compiles the filter again (tens of ms more)" % (directory or "off", problem),
                     directory)
    return Check("launch cache", OK, "%s (%d entries, at most %d kept)"
                 % (directory, entries, MAX_CACHE_ENTRIES), directory)


def check_open_files(soft: int, hard: int) -> Check:
    limit = "RLIMIT_NOFILE %s (hard %s)" % (_limit(soft), _limit(hard))
    if soft != resource.RLIM_INFINITY and soft < LAUNCH_FDS:
        return Check("open files", FAIL, "%s: a launch needs %d fds" % (limit, LAUNCH_FDS), soft)
    devices = MAX_DEVICES if soft == resource.RLIM_INFINITY else min(MAX_DEVICES,
                                                                      soft - LAUNCH_FDS)
    if devices < MAX_DEVICES:
        return Check("open files", WARN, "%s: room for %d device%s, not %d (ulimit -n %d)"
                     % (limit, devices, "" if devices == 1 else "s", MAX_DEVICES,
                        LAUNCH_FDS + MAX_DEVICES), soft)
    return Check("open files", OK, "%s: room for all %d devices" % (limit, MAX_DEVICES), soft)


def check_jail(euid: int, host_namespaces: bool, probe_error: str | None) -> Check:
    """`host_namespaces`: this process is in the host's PID and user
    namespaces; `probe_error`: why a child could not enter new mount, IPC,
    UTS and network namespaces (None: it could)."""
    if euid != 0:
        return Check("jail", OK, "uid %d: a launch keeps its uid and namespaces and gets the "
                     "jail's rlimits (the rest of the jail is for root launches)" % euid, "limits")
    if probe_error:
        return Check("jail", WARN, "a root launch cannot enter its own namespaces here "
                     "(unshare: %s): such launches are refused; --jail=off runs them without "
                     "the jail (docs/security.md)" % probe_error, "unavailable")
    if not host_namespaces:
        return Check("jail", WARN, "root, but not in the host's PID and user namespaces: a "
                     "root launch needs --user=UID[:GID] (a per-guest uid is not sound here) "
                     "or --jail=limits", "needs --user")
    return Check("jail", OK, "a root launch runs its guest as a uid and gid of its own in new "
                 "mount (empty root), IPC, UTS and network namespaces", "full")


CAP_SYS_PTRACE = 19


def check_debugging(gdbserver: str | None, gdb: str | None, scope: int | None,
                    ptrace_problem: str | None, cap_eff: int | None) -> Check:
    """Can `solo5-spt --gdb` work here? `scope` is kernel.yama.ptrace_scope
    (None: no Yama), `ptrace_problem` why a traced child could not be
    stopped (None: it could)."""
    if ptrace_problem:
        return Check("debugging", WARN, "solo5-spt --gdb cannot trace the guest: %s"
                     % ptrace_problem)
    if scope == 3:
        return Check("debugging", WARN, "kernel.yama.ptrace_scope = 3: no process may use "
                     "ptrace, so solo5-spt --gdb cannot hand the guest to gdbserver", scope)
    if scope == 2 and not (cap_eff is not None and cap_eff >> CAP_SYS_PTRACE & 1):
        return Check("debugging", WARN, "kernel.yama.ptrace_scope = 2 and no CAP_SYS_PTRACE: "
                     "gdbserver cannot attach to the guest (run solo5-spt --gdb as root)", scope)
    if gdbserver is None:
        return Check("debugging", WARN, "gdbserver is not installed (Debian package "
                     "gdbserver): solo5-spt --gdb cannot serve the GDB protocol")
    yama = ("no Yama" if scope is None else
            "yama ptrace_scope %d%s" % (scope, ", lifted for the launcher with PR_SET_PTRACER"
                                        if scope == 1 else ""))
    client = gdb or "not found (Debian package gdb)"
    return Check("debugging", OK, "solo5-spt --gdb works: ptrace permitted (%s), gdbserver "
                 "%s; the gdb client: %s" % (yama, gdbserver, client), gdbserver)


def check_cores(pattern: str | None, hard: int, root: bool) -> Check:
    """Where a crashing guest's core goes with --dumpcore: `pattern` is
    kernel.core_pattern, `hard` the hard RLIMIT_CORE."""
    from spt.debug import core_destination

    if pattern is None:
        return Check("cores", WARN, "cannot read kernel.core_pattern")
    if not pattern:
        return Check("cores", WARN, "kernel.core_pattern is empty: a crashing guest leaves "
                     "no core", pattern)
    if hard == 0 and not root:
        return Check("cores", WARN, "the hard RLIMIT_CORE is 0: --dumpcore cannot enable "
                     "cores", pattern)
    return Check("cores", OK, "with --dumpcore[=DIR], %s"
                 % core_destination(pattern, "DIR"), pattern)


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


# --- reading the host ---------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def prctl_seccomp_mode() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.restype = ctypes.c_int
    return libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0)


def libseccomp_version() -> tuple | None:
    class Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return None
    lib.seccomp_version.restype = ctypes.POINTER(Version)
    v = lib.seccomp_version().contents
    return (v.major, v.minor, v.micro)


def core_policy_instructions() -> int | str:
    """Compile core.policy with the fd numbers of a device-less launch."""
    from spt import bpfcompile, policy
    from spt.devices.core import CONSOLE_FD
    from spt.errors import SptError

    facts = {"console_fd": CONSOLE_FD, "epoll_fd": 4, "timer_fd": 5}
    try:
        rules = policy.render("core", policy.read_policy("core"), facts)
        return len(bpfcompile.compile_bpf(rules)) // 8
    except (SptError, ImportError, OSError, RuntimeError, ValueError) as exc:
        return str(exc) or type(exc).__name__


def python_modules() -> dict:
    from importlib import metadata

    versions = {}
    for dist, module in (("pyelftools", "elftools"), ("pyseccomp", "pyseccomp"),
                         ("python-prctl", "prctl")):
        try:
            __import__(module)
            versions[dist] = metadata.version(dist)
        except Exception as exc:  # a broken install is reported, whatever it raised
            versions[dist] = exc
    return versions


def trampoline_facts(path: str) -> TrampolineFacts:
    if not os.path.exists(path):
        return TrampolineFacts(path, exists=False)
    import struct

    from elftools.common.exceptions import ELFError
    from elftools.construct.core import ConstructError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            kinds = [seg["p_type"] for seg in elf.iter_segments()]
            loads = [seg["p_vaddr"] for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]
            keep = None
            symtab = elf.get_section_by_name(".symtab")
            if isinstance(symtab, SymbolTableSection):
                symbols = symtab.get_symbol_by_name("spt_keep_start")
                keep = symbols[0]["st_value"] if symbols else None
            static = (elf.header["e_type"] == "ET_EXEC" and "PT_INTERP" not in kinds
                      and "PT_DYNAMIC" not in kinds)
            machine = elf.header["e_machine"]
    except (OSError, ELFError, ConstructError, struct.error, ValueError) as exc:
        return TrampolineFacts(path, exists=True, error="not a readable ELF file (%s)" % exc)
    return TrampolineFacts(path, exists=True, executable=os.access(path, os.X_OK),
                           static=static, base=min(loads) if loads else None,
                           keep_page=keep, stale=_is_stale(path), machine=machine)


def _is_stale(binary: str) -> bool:
    """In a source tree, is any native/ source (shared, or of this host's
    architecture) newer than the binary?"""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(binary))))
    native = os.path.join(root, "native")
    if not os.path.isdir(native):
        return False
    built = os.stat(binary).st_mtime
    dirs = [native, os.path.join(native, os.uname().machine)]
    return any(os.stat(os.path.join(d, name)).st_mtime > built
               for d in dirs if os.path.isdir(d)
               for name in os.listdir(d) if name.endswith((".c", ".S", ".h")))


def interpreter_mapping() -> tuple[str, int] | None:
    """Where this Python's executable is mapped (the lowest address)."""
    exe = os.path.realpath(sys.executable)
    starts = []
    for line in (_read("/proc/self/maps") or "").splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5] == exe:
            starts.append(int(fields[0].split("-")[0], 16))
    return (exe, min(starts)) if starts else None


def tun_problem() -> str | None:
    import stat

    try:
        if not stat.S_ISCHR(os.stat("/dev/net/tun").st_mode):
            return "not a character device"
        os.close(os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def jail_probe() -> str | None:
    """Can a child of this process enter what a root launch's jail enters?"""
    flags = 0x00020000 | 0x08000000 | 0x04000000 | 0x40000000  # NEWNS, NEWIPC, NEWUTS, NEWNET
    libc = ctypes.CDLL(None, use_errno=True)
    pid = os.fork()
    if pid == 0:  # the child only tries, and reports the errno as its status
        code = 0 if libc.unshare(flags) == 0 else (ctypes.get_errno() or 255)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return None if code == 0 else os.strerror(code) if code > 0 else "killed by signal %d" % -code


def in_host_namespaces() -> bool:
    from spt import jail

    try:
        return (os.stat("/proc/self/ns/pid").st_ino == jail.PROC_PID_INIT_INO
                and os.stat("/proc/self/ns/user").st_ino == jail.PROC_USER_INIT_INO)
    except OSError:
        return False


def cap_eff(status_text: str | None) -> int | None:
    for line in (status_text or "").splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    return None


def address_space_check(trampoline: TrampolineFacts) -> Check:
    from spt import launcher
    from spt.devices.core import OVERHEAD_BYTES, min_mem_mib

    ceilings = [launcher.TRAMPOLINE_BASE]
    why = "guest memory ends below the trampoline at %#x" % launcher.TRAMPOLINE_BASE
    if trampoline.base is not None and trampoline.base < launcher.TRAMPOLINE_BASE:
        ceilings.append(trampoline.base)
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    largest = largest_mem_mib(ceilings, soft, OVERHEAD_BYTES)
    if soft != resource.RLIM_INFINITY and largest < min(ceilings) // MIB:
        why = "RLIMIT_AS %d MiB, less %d MiB the launch maps besides" % (
            soft // MIB, OVERHEAD_BYTES // MIB)
    # The smallest image ends one page above 1 MiB; with the scratch area
    # that is 2 MiB, the least any guest can ask for.
    needed = min_mem_mib(abi.GUEST_MIN_ADDR + abi.PAGE_SIZE)
    return check_address_space(interpreter_mapping(), largest, needed, why)


def run_checks() -> list[Check]:
    from spt import launcher

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The limit is judged as a launch from this shell would meet it; the
    # doctor's own checks (libseccomp's loader runs ldconfig) then use the
    # hard limit, so a low soft limit shows up once, not as three failures.
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    status = _read("/proc/self/status")
    trampoline = trampoline_facts(launcher.TRAMPOLINE)
    return [
        check_architecture(os.uname().machine, trampoline.machine),
        check_kernel(os.uname().release),
        check_seccomp(status, prctl_seccomp_mode(),
                      _read("/proc/sys/kernel/seccomp/actions_avail")),
        check_libseccomp(libseccomp_version(), core_policy_instructions()),
        check_python(python_modules()),
        check_trampoline(trampoline, launcher.TRAMPOLINE_BASE),
        address_space_check(trampoline),
        check_mmap_min_addr(_read_int("/proc/sys/vm/mmap_min_addr")),
        check_overcommit(_read_int("/proc/sys/vm/overcommit_memory")),
        check_tun(tun_problem()),
        check_net_privileges(cap_eff(status), os.getuid()),
        check_open_files(soft, hard),
        cache_check(),
        check_jail(os.geteuid(), in_host_namespaces(),
                   jail_probe() if os.geteuid() == 0 else None),
        debugging_check(status),
        check_cores(_read_core_pattern(), resource.getrlimit(resource.RLIMIT_CORE)[1],
                    os.geteuid() == 0),
    ]


def cache_check() -> Check:
    from spt import cache

    directory = cache.cache_dir()
    try:
        entries = sum(cache._ours(name) for name in os.listdir(directory)) if directory else 0
    except OSError:
        entries = 0
    return check_cache(directory, cache.problem(directory), entries)


def debugging_check(status: str | None) -> Check:
    import shutil

    from spt import debug

    return check_debugging(debug.gdbserver_path(), shutil.which("gdb"), debug.yama_scope(),
                           debug.ptrace_problem(), cap_eff(status))


def _read_core_pattern() -> str | None:
    text = _read("/proc/sys/kernel/core_pattern")
    return text.rstrip("\n") if text is not None else None


def summary(checks: list[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in (OK, WARN, FAIL)}
    verdict = ("this host cannot run spt guests" if counts[FAIL] else
               "this host can run spt guests" + (" (see the warnings)" if counts[WARN] else ""))
    return "%d ok, %d warn, %d FAIL: %s" % (counts[OK], counts[WARN], counts[FAIL], verdict)


def register(app: typer.Typer) -> None:
    @app.command()
    @one_line_errors
    def doctor(
        as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    ) -> None:
        """Check that this host can run spt guests.

        One line a check: ok, warn (some launches fail, e.g. no TAPs) or FAIL
        (no launch can succeed). Exit status 1 if any check fails."""
        checks = run_checks()
        failed = any(c.status == FAIL for c in checks)
        if as_json:
            print_json({"ok": not failed, "checks": [asdict(c) for c in checks]})
        else:
            width = max(len(c.name) for c in checks)
            for c in checks:
                typer.echo("%-4s  %-*s  %s" % (c.status, width, c.name, c.detail))
            typer.echo(summary(checks))
        if failed:
            raise typer.Exit(1)
