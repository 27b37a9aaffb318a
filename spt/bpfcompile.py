"""Rules to a seccomp BPF program, compiled by libseccomp (pyseccomp).

What a launch runs when the launch cache holds no filter for its rules
(spt/policy.py, `bpf_for`), and what `spt policy`, `spt doctor` and the
bench compile to show and compare filters. The BPF is exported, never
loaded from Python: the trampoline installs it as its last system call
before the jump.
"""

import os

from spt.policy import PolicyError, _file_stamp


def toolchain() -> tuple:
    """Stamps of the files that compile a filter: pyseccomp and the
    libseccomp shared object this process has loaded (from /proc/self/maps:
    the file the dynamic loader really picked)."""
    import pyseccomp

    paths = [pyseccomp.__file__]
    try:
        with open("/proc/self/maps", "rb") as maps:
            paths += sorted({os.fsdecode(line.split(None, 5)[5].strip()) for line in maps
                             if b"/libseccomp.so" in line})
    except (OSError, IndexError):
        pass
    return tuple(_file_stamp(path) for path in paths)


def libseccomp_version() -> str:
    """libseccomp's own idea of its version (seccomp_version(3))."""
    import ctypes

    import pyseccomp

    class Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    function = pyseccomp._libseccomp.seccomp_version
    function.restype = ctypes.POINTER(Version)
    version = function().contents
    return "libseccomp %d.%d.%d" % (version.major, version.minor, version.micro)


def hot_calls(rules) -> list[str]:
    """The calls a guest makes once per I/O: those of the device policies
    (every policy but core.policy), in the order the rules name them."""
    calls: list[str] = []
    for rule in rules:
        if not rule.source.startswith("core.policy:") and rule.syscall not in calls:
            calls.append(rule.syscall)
    return calls


def _filter(rules, hot_first: bool = True):
    import pyseccomp as sc

    f = sc.SyscallFilter(sc.KILL_PROCESS)
    # Calls from another architecture (int $0x80 enters as i386) and x32
    # numbers (bit 30 set) die too; libseccomp checks both before any rule.
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    ops = {"==": sc.EQ, "!=": sc.NE, "<=": sc.LE, "<": sc.LT, ">=": sc.GE, ">": sc.GT}
    for rule in rules:
        args = [sc.Arg(c.index, ops[c.op], c.value) for c in rule.conditions]
        try:
            f.add_rule(sc.ALLOW, rule.syscall, *args)
        except (OSError, ValueError) as exc:
            raise PolicyError("%s: libseccomp refused %s: %s"
                              % (rule.source, rule.syscall, exc)) from None
    # Order only, never what is allowed: libseccomp tests calls one after the
    # other, those with the fewest argument checks first, which puts the I/O
    # calls (three checks each) last. A device's calls are made once per
    # sector or frame, the core's once per yield or not at all: test them
    # first (docs/allowlist.md, "Rule order").
    if hot_first:
        for rank, call in enumerate(hot_calls(rules)):
            f.syscall_priority(call, 255 - rank)
    return f


def _export(rules, method: str, hot_first: bool = True) -> bytes:
    f = _filter(rules, hot_first)
    fd = os.memfd_create("spt-filter", os.MFD_CLOEXEC)
    try:
        with os.fdopen(fd, "w+b", closefd=False) as out:
            getattr(f, method)(out)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def compile_bpf(rules, hot_first: bool = True) -> bytes:
    """The BPF program (struct sock_filter[]) the trampoline installs;
    `hot_first=False` gives libseccomp's own order (for the bench)."""
    return _export(rules, "export_bpf", hot_first)


def compile_pfc(rules) -> str:
    """libseccomp's pseudo-filter-code text for the same rules."""
    return _export(rules, "export_pfc").decode()
