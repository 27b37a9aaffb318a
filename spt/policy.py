"""The allow-list: policy data in `policies/`, rendered with the attached
devices' facts into rules, and the BPF program a launch installs: compiled
by libseccomp (spt/bpfcompile.py) or, remembered by the launch cache, proven
to allow no more than the rules (spt/bpfcheck.py).

The BPF is exported, never loaded from Python: the trampoline installs it
as its last system call before the jump. `spt policy` prints the same
rendered rules and the same bytes, through the same functions, so the policy
shown is the policy enforced.
"""

import posix  # not os: the launch path's modules do without it (spt/lean.py)

from spt import SptError, lean
from spt.lean import Record

def _policy_dir() -> str:
    """`policies/` of the source tree, or the copy an installed package
    carries (setup.py puts it in spt/policies)."""
    here = lean.dirname(__file__)  # absolute: imported from absolute sys.path entries
    source_tree = lean.join(lean.dirname(here), "policies")
    try:
        in_source_tree = lean.stat.S_ISDIR(posix.stat(source_tree).st_mode)
    except OSError:
        in_source_tree = False
    return source_tree if in_source_tree else lean.join(here, "policies")


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
# Character sets as strings, for str.strip: a word is made of a set's
# characters alone when stripping them leaves nothing.
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_PLACEHOLDER_CHARS = "abcdefghijklmnopqrstuvwxyz_"
_HEX_DIGITS = "0123456789abcdefABCDEF"
_ARG_INDEX_NAMES = ("arg0", "arg1", "arg2", "arg3", "arg4", "arg5")


class PolicyError(SptError):
    """A policy file does not parse or names an unknown placeholder."""


class Condition(Record, fields="arg index op value"):
    """`arg` (the argument's name; `index` its position) `op` `value`."""

    __slots__ = ()

    def words(self) -> str:
        return "%s %s %d" % (self.arg, OPERATORS[self.op], self.value)


class Rule(Record, fields="syscall conditions reason source"):
    """Allow `syscall` when every condition holds; `source` is "core.policy:12"."""

    __slots__ = ()

    def words(self) -> str:
        """The rule in plain words, as `spt policy` prints it."""
        when = " and ".join(c.words() for c in self.conditions) or "always"
        return "%-16s %s" % (self.syscall, when)


def read_policy(name: str, directory: str = POLICY_DIR) -> str:
    path = lean.join(directory, name + ".policy")
    try:
        return lean.read_file(path).decode("utf-8")
    except OSError as exc:
        raise PolicyError("policy %s: %s" % (path, exc.strerror)) from None
    except UnicodeDecodeError as exc:
        raise PolicyError("policy %s: not UTF-8 (%s)" % (path, exc.reason)) from None


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
    return bool(word) and not word.strip(_NAME_CHARS)


def _split_condition(part: str):
    """(arg, op, expr) of `ARG OP EXPR`, or (None, None, None)."""
    end = len(part) - len(part.lstrip(_NAME_CHARS))
    arg, rest = part[:end], part[end:].lstrip()
    op = rest[:2] if rest[:2] in ("==", "!=", "<=", ">=") else rest[:1] if rest[:1] in "<>" else ""
    expr = rest[len(op):].strip()
    if not arg or not op or not expr:
        return None, None, None
    return arg, op, expr


def _evaluate(expr: str, facts: dict, where: str) -> int:
    """A number, a {placeholder}, or a sum/difference of them."""
    # terms and the signs between them, in order ("\0" is in no term)
    tokens = [t.strip() for t in
              expr.strip().replace("+", "\0+\0").replace("-", "\0-\0").split("\0")]
    total, sign = 0, 1
    for token in tokens:
        if token in ("+", "-"):
            sign = 1 if token == "+" else -1
            continue
        if (token.startswith("{") and token.endswith("}") and len(token) > 2
                and not token[1:-1].strip(_PLACEHOLDER_CHARS)):
            key = token[1:-1]
            if key not in facts:
                raise PolicyError("%s: unknown placeholder {%s}" % (where, key))
            value = int(facts[key])
        elif token.startswith("0x") and len(token) > 2 and not token[2:].strip(_HEX_DIGITS):
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
    from spt import bpfcompile

    bpf = bpfcompile.compile_bpf(rules)
    if provable:
        cache.store("bpf", key, (bpf, bpfcompile.toolchain(), bpfcompile.libseccomp_version()),
                    code)
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
        st = posix.stat(path)
    except OSError:
        return (path,)
    return (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
