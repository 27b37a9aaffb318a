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


POLICY_DIR = os.environ.get("SPT_POLICY_DIR") or _policy_dir()

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
# The grammar of a policy line. Patterns, not compiled objects: `re` is
# imported only when a policy is rendered (a cached launch never does).
_RULE = r"^(?:\[(?P<arches>[a-z0-9_, ]+)\]\s*)?(?P<call>[a-z0-9_]+)\s*(?::\s*(?P<conds>[^#]*?))?\s*(?:#\s*(?P<why>.*))?$"
_COND = r"^(?P<arg>[a-z_0-9]+)\s*(?P<op>==|!=|<=|>=|<|>)\s*(?P<expr>.+)$"
_TERM = r"^\s*(\{[a-z_]+\}|0x[0-9a-fA-F]+|\d+)\s*$"


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


def read_policy(name: str) -> str:
    path = os.path.join(POLICY_DIR, name + ".policy")
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
    import re

    from spt import arch as arch_mod

    arch = arch or arch_mod.name()

    rules = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = "%s.policy:%d" % (name, lineno)
        m = re.match(_RULE, line)
        if not m:
            raise PolicyError("%s: cannot parse %r" % (where, line))
        call = m["call"]
        if m["arches"]:
            arches = [a.strip() for a in m["arches"].split(",")]
            unknown = [a for a in arches if a not in arch_mod.SUPPORTED]
            if unknown:
                raise PolicyError("%s: unknown architecture %r" % (where, unknown[0]))
            if arch not in arches:
                continue
        conds = []
        for part in filter(None, (p.strip() for p in (m["conds"] or "").split("&&"))):
            cm = re.match(_COND, part)
            if not cm:
                raise PolicyError("%s: cannot parse condition %r" % (where, part))
            names = ARG_NAMES.get(call, ())
            arg = cm["arg"]
            if arg in names:
                index = names.index(arg)
            elif re.fullmatch(r"arg[0-5]", arg):
                index = int(arg[3])
            else:
                raise PolicyError("%s: %s has no argument %r" % (where, call, arg))
            conds.append(Condition(arg, index, cm["op"], _evaluate(cm["expr"], facts, where)))
        rules.append(Rule(call, tuple(conds), (m["why"] or "").strip(), where))
    return rules


def _evaluate(expr: str, facts: dict, where: str) -> int:
    """A number, a {placeholder}, or a sum/difference of them."""
    import re

    total, sign = 0, 1
    for token in re.split(r"\s*([+-])\s*", expr.strip()):
        if token in ("+", "-"):
            sign = 1 if token == "+" else -1
            continue
        if not re.match(_TERM, token):
            raise PolicyError("%s: cannot evaluate %r" % (where, expr))
        token = token.strip()
        if token.startswith("{"):
            key = token[1:-1]
            if key not in facts:
                raise PolicyError("%s: unknown placeholder {%s}" % (where, key))
            value = int(facts[key])
        else:
            value = int(token, 16 if token.startswith("0x") else 10)  # "010" is ten
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
    """The BPF program for a launch, compiled once per distinct input: the
    cache key is every policy text involved plus the facts rendered into it,
    so a hit is exactly what compiling would give (spt/cache.py)."""
    from spt import cache

    from spt import arch

    texts = policy_texts(attached)
    # The architecture too: its rules ([x86_64] lines) and numbers differ.
    key = "\0\0".join([arch.name()] + ["%s\0%s\0%r" % (dev.policy, texts[dev.policy],
                                                          sorted(dev.facts.items()))
                                         for dev in attached])
    bpf = cache.load("bpf", key, (__file__,))
    if isinstance(bpf, bytes) and bpf and len(bpf) % 8 == 0:
        return bpf
    bpf = compile_bpf(rules_for(attached, texts))
    cache.store("bpf", key, bpf, (__file__,))
    return bpf


def _filter(rules):
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
    return f


def _export(rules, method: str) -> bytes:
    f = _filter(rules)
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


def compile_bpf(rules) -> bytes:
    """The BPF program (struct sock_filter[]) the trampoline installs."""
    return _export(rules, "export_bpf")


def compile_pfc(rules) -> str:
    """libseccomp's pseudo-filter-code text for the same rules."""
    return _export(rules, "export_pfc").decode()
