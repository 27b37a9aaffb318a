"""The allow-list: policy data in `policies/`, rendered with the attached
devices' facts and compiled by libseccomp (pyseccomp) into a BPF program.

The BPF is exported, never loaded from Python: the trampoline installs it
as its last system call before the jump. `spt policy` prints the same
rendered rules and the same bytes, through the same functions, so the policy
shown is the policy enforced.
"""

from __future__ import annotations

import os
from collections import namedtuple

from spt.errors import SptError

def _policy_dir() -> str:
    """`policies/` of the source tree, or the copy an installed package
    carries (setup.py puts it in spt/policies)."""
    here = os.path.dirname(os.path.abspath(__file__))
    source_tree = os.path.join(os.path.dirname(here), "policies")
    return source_tree if os.path.isdir(source_tree) else os.path.join(here, "policies")


# Only where the package is installed: no environment variable chooses the
# allow-list of a launch (a root launch would install whatever it names).
# Tests that need other policy text pass `directory` or text explicitly.
POLICY_DIR = _policy_dir()

# Argument names as the kernel's prototypes spell them; a policy names an
# argument, the renderer turns it into its index.
ARG_NAMES = {
    "read": ("fd", "buf", "count"),
    "write": ("fd", "buf", "count"),
    "pread64": ("fd", "buf", "count", "offset"),
    "pwrite64": ("fd", "buf", "count", "offset"),
    "epoll_pwait": ("epfd", "events", "maxevents", "timeout", "sigmask", "sigsetsize"),
    "timerfd_settime": ("fd", "flags", "new_value", "old_value"),
    "clock_gettime": ("clockid", "tp"),
    "arch_prctl": ("code", "addr"),
    "exit_group": ("status",),
}

OPERATORS = {"==": "is", "!=": "is not", "<=": "is at most", "<": "is below",
             ">=": "is at least", ">": "is above"}
# The grammar of a policy line, parsed with str methods (no `re`: a cached
# launch renders the rules to verify its cached filter, and importing `re`
# would cost more than the rest of that launch):
#   line := ["[" ARCH ("," ARCH)* "]"] CALL [":" COND ("&&" COND)*] ["#" WHY]
#   CALL, ARG := [a-z0-9_]+     ARCH := x86_64 | aarch64 (a rule of those only)
#   COND := ARG OP EXPR     OP := == != <= >= < >     EXPR := TERM (("+"|"-") TERM)*
#   TERM := {placeholder} | 0x<hex digits> | <decimal digits>
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_ARG_INDEX_NAMES = ("arg0", "arg1", "arg2", "arg3", "arg4", "arg5")


class PolicyError(SptError):
    """A policy file does not parse or names an unknown placeholder."""


class Condition(namedtuple("Condition", "arg index op value")):
    """`arg` (the argument's name; `index` its position) `op` `value`."""

    __slots__ = ()

    def words(self) -> str:
        return "%s %s %d" % (self.arg, OPERATORS[self.op], self.value)


class Rule(namedtuple("Rule", "syscall conditions reason source")):
    """Allow `syscall` when every condition holds; `source` is "core.policy:12"."""

    __slots__ = ()

    def words(self) -> str:
        """The rule in plain words, as `spt policy` prints it."""
        when = " and ".join(c.words() for c in self.conditions) or "always"
        return "%-16s %s" % (self.syscall, when)


def read_policy(name: str, directory: str = POLICY_DIR) -> str:
    path = os.path.join(directory, name + ".policy")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise PolicyError("policy %s: %s" % (path, exc.strerror)) from None


def render(name: str, text: str, facts: dict, arch: str | None = None) -> list[Rule]:
    """Parse policy `text` (from policies/`name`.policy), filling
    {placeholders} from `facts`. A line that starts with `[ARCH, ...]` is a
    rule of those architectures only; `arch` is the one to render for (the
    host's by default)."""
    from spt import arch as arch_mod

    arch = arch or arch_mod.name()

    rules = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = "%s.policy:%d" % (name, lineno)
        if line.startswith("["):
            tag, bracket, line = line[1:].partition("]")
            arches = [a.strip() for a in tag.split(",")]
            unknown = [a for a in arches if a not in arch_mod.SUPPORTED]
            if not bracket or unknown:
                raise PolicyError("%s: unknown architecture %r" % (where, unknown[0] if unknown
                                                                   else tag))
            if arch not in arches:
                continue
            line = line.strip()
        head, _hash, why = line.partition("#")
        call, colon, conds_text = head.partition(":")
        call = call.rstrip()
        if not _is_name(call):
            raise PolicyError("%s: cannot parse %r" % (where, line))
        conds = []
        parts = (p.strip() for p in conds_text.split("&&")) if colon else ()
        for part in filter(None, parts):
            arg, op, expr = _split_condition(part)
            if op is None:
                raise PolicyError("%s: cannot parse condition %r" % (where, part))
            names = ARG_NAMES.get(call, ())
            if arg in names:
                index = names.index(arg)
            elif arg in _ARG_INDEX_NAMES:
                index = int(arg[3])
            else:
                raise PolicyError("%s: %s has no argument %r" % (where, call, arg))
            conds.append(Condition(arg, index, op, _evaluate(expr, facts, where)))
        rules.append(Rule(call, tuple(conds), why.strip(), where))
    return rules


def _is_name(word: str) -> bool:
    return bool(word) and all(c in _NAME_CHARS for c in word)


def _split_condition(part: str):
    """(arg, op, expr) of `ARG OP EXPR`, or (None, None, None)."""
    end = 0
    while end < len(part) and part[end] in _NAME_CHARS:
        end += 1
    arg, rest = part[:end], part[end:].lstrip()
    op = rest[:2] if rest[:2] in ("==", "!=", "<=", ">=") else rest[:1] if rest[:1] in "<>" else ""
    expr = rest[len(op):].strip()
    if not arg or not op or not expr:
        return None, None, None
    return arg, op, expr


def _evaluate(expr: str, facts: dict, where: str) -> int:
    """A number, a {placeholder}, or a sum/difference of them."""
    tokens, term = [], []
    for c in expr.strip():
        if c in "+-":
            tokens += ["".join(term).strip(), c]
            term = []
        else:
            term.append(c)
    tokens.append("".join(term).strip())
    total, sign = 0, 1
    for token in tokens:
        if token in ("+", "-"):
            sign = 1 if token == "+" else -1
            continue
        if token.startswith("{") and token.endswith("}") and len(token) > 2 and all(
                c in _NAME_CHARS and not c.isdigit() for c in token[1:-1]):
            key = token[1:-1]
            if key not in facts:
                raise PolicyError("%s: unknown placeholder {%s}" % (where, key))
            value = int(facts[key])
        elif token.startswith("0x") and len(token) > 2 and all(c in _HEX_DIGITS for c in token[2:]):
            value = int(token, 16)
        elif token.isdecimal():
            value = int(token)  # "010" is ten
        else:
            raise PolicyError("%s: cannot evaluate %r" % (where, expr))
        total += sign * value
    if total < 0:
        raise PolicyError("%s: %r is negative" % (where, expr))
    return total


def policy_texts(attached) -> dict[str, str]:
    """The policy file of every kind among `attached`, read once each."""
    texts: dict[str, str] = {}
    for dev in attached:
        if dev.policy not in texts:
            texts[dev.policy] = read_policy(dev.policy)
    return texts


def rules_for(attached, texts: dict[str, str] | None = None) -> list[Rule]:
    """All rules for a launch: each attached record's fragment, rendered."""
    texts = policy_texts(attached) if texts is None else texts
    return [rule for dev in attached for rule in render(dev.policy, texts[dev.policy], dev.facts)]


def bpf_for(attached) -> bytes:
    """The BPF program for a launch, compiled once per distinct input.

    The cache key is every policy text involved plus the facts rendered into
    it and the code that compiles; the entry also names the pyseccomp and
    libseccomp files that compiled it, which must be unchanged. A cached
    program is installed only if `spt.bpfcheck` proves it allows nothing
    the rules do not: whoever can write the cache cannot widen the filter
    (spt/cache.py says who that is)."""
    from spt import bpfcheck, cache

    texts = policy_texts(attached)
    key = cache_key(attached, texts)
    code = (__file__, bpfcheck.__file__)
    rules = rules_for(attached, texts)
    provable = all(rule.syscall in bpfcheck.SYSCALL_NUMBERS for rule in rules)
    entry = cache.load("bpf", key, code) if provable else None
    if entry is not None:
        bpf = _cached_program(entry, rules, bpfcheck)
        if bpf is not None:
            return bpf
    bpf = compile_bpf(rules)
    if provable:
        cache.store("bpf", key, (bpf, toolchain(), libseccomp_version()), code)
    return bpf


def cache_key(attached, texts: dict[str, str]) -> str:
    """What a launch's filter is computed from: the architecture (its rules
    and numbers differ), each policy text and the facts rendered into it
    (the code and toolchain are added by bpf_for)."""
    from spt import arch

    return "\0\0".join([arch.name()] + ["%s\0%s\0%r" % (dev.policy, texts[dev.policy],
                                                          sorted(dev.facts.items()))
                                         for dev in attached])


def _cached_program(entry, rules, bpfcheck) -> bytes | None:
    """The program of a cache entry if its toolchain is the one installed
    and it allows no more than `rules`; None otherwise (said on stderr when
    the entry is well-formed and current but allows more: it was written by
    someone other than spt)."""
    import sys

    try:
        bpf, stamps, _version = entry  # the version is for people reading the entry
        current = stamps and all(_file_stamp(stamp[0]) == tuple(stamp) for stamp in stamps)
    except (TypeError, ValueError, IndexError):
        return None
    if not current or not isinstance(bpf, bytes):
        return None
    if bpfcheck.allows_only(bpf, rules):
        return bpf
    print("solo5-spt: warning: a cached filter allows more than its policy; not installed, "
          "compiled afresh (who writes the launch cache? see docs/security.md)", file=sys.stderr)
    return None


def _file_stamp(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return (path,)
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


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
            raise PolicyError("%s: libseccomp refused %s: %s" % (rule.source, rule.syscall, exc)) from None
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
