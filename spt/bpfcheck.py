"""A proof that a seccomp BPF program allows no call its rules do not.

The launch cache keeps compiled filters (spt/cache.py), and anyone who can
write the cache could replace one with a filter that allows more. Before a
cached filter is installed, `allows_only(program, rules)` walks every path
through it (classic BPF jumps only forward, so the paths are finite) and
tracks what each path knows about the 32-bit words of `struct seccomp_data`
as sets of intervals. Every path that ends in anything but "kill the
process" must be an ALLOW whose architecture is the host's and whose system
call numbers and argument ranges all lie inside one rule. Anything the walk does
not understand (an instruction libseccomp does not emit for our rules, an
action other than ALLOW or KILL_PROCESS, a call number it has no name for)
makes the answer False: the caller then compiles the filter afresh.

It proves an upper bound only: a filter that allows *less* than its rules
passes (a guest would die on an allowed call, nothing more).
"""

from spt import arch

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ALLOW = 0x7FFF0000
# The architecture and the numbers of the calls spt's policies name come from
# the host's facts table (spt/arch/<arch>.py), never from the cache: a cached
# entry could otherwise rename `write` to `execve`. tests/test_arch.py and
# tests/test_review_cache.py check the table against libseccomp's own.
HOST = arch.host()
SYSCALL_NUMBERS = HOST.SYSCALLS

_WORD = 0xFFFFFFFF
_ALL = ((0, _WORD),)
_NR, _ARCH = 0, 4
_LD_W_ABS, _RET_K, _JA = 0x20, 0x06, 0x05
_JEQ_K, _JGT_K, _JGE_K, _JSET_K = 0x15, 0x25, 0x35, 0x45
_MAX_STEPS = 1 << 16  # far beyond any filter of ours; a bigger walk is "not proven"
_MAX_NUMBERS = 64  # call numbers one path may cover


def _within(ivs, lo: int, hi: int) -> tuple:
    return tuple((max(a, lo), min(b, hi)) for a, b in ivs if max(a, lo) <= min(b, hi))


def _without(ivs, k: int) -> tuple:
    out = []
    for a, b in ivs:
        if a <= k <= b:
            out += [(a, k - 1)] if a < k else []
            out += [(k + 1, b)] if k < b else []
        else:
            out.append((a, b))
    return tuple(out)


def _branches(op: int, k: int, ivs):
    """(taken, not taken) constraints of a conditional jump on A."""
    if op == _JEQ_K:
        return _within(ivs, k, k), _without(ivs, k)
    if op == _JGT_K:
        return _within(ivs, k + 1, _WORD), _within(ivs, 0, k)
    if op == _JGE_K:
        return _within(ivs, k, _WORD), _within(ivs, 0, k - 1)
    return ivs, ivs  # JSET: not tracked, so both sides keep all they had (a wider bound)


def allows_only(program: bytes, rules) -> bool:
    """True if every call `program` lets through is allowed by one of `rules`
    (spt.policy.Rule), on the host's architecture; False if not, or if that
    cannot be shown."""
    if not program or len(program) % 8 or len(program) > 4096 * 8:
        return False
    # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k (little-endian hosts only)
    insns = [(program[i] | program[i + 1] << 8, program[i + 2], program[i + 3],
              int.from_bytes(program[i + 4:i + 8], "little")) for i in range(0, len(program), 8)]
    paths = [(0, None, {})]  # (pc, offset of the word in A, {offset: intervals})
    steps = 0
    while paths:
        pc, a_off, known = paths.pop()
        while True:
            steps += 1
            if steps > _MAX_STEPS or pc >= len(insns):
                return False
            code, jt, jf, k = insns[pc]
            if code == _LD_W_ABS:
                if k % 4 or k >= 64:
                    return False
                a_off, pc = k, pc + 1
            elif code == _JA:
                pc += 1 + k
            elif code in (_JEQ_K, _JGT_K, _JGE_K, _JSET_K):
                if a_off is None:
                    return False  # A holds no field of seccomp_data
                taken, other = _branches(code, k, known.get(a_off, _ALL))
                if other:
                    paths.append((pc + 1 + jf, a_off, {**known, a_off: other}))
                if not taken:
                    break
                known = {**known, a_off: taken}
                pc += 1 + jt
            elif code == _RET_K:
                if k == SECCOMP_RET_KILL_PROCESS:
                    break
                if k != SECCOMP_RET_ALLOW or not _covered(known, rules):
                    return False
                break
            else:
                return False
    return True


def _covered(known: dict, rules) -> bool:
    """Does one rule allow everything this ALLOW path lets through?"""
    if known.get(_ARCH) != ((HOST.AUDIT_ARCH, HOST.AUDIT_ARCH),):
        return False
    numbers = known.get(_NR, _ALL)
    if sum(b - a + 1 for a, b in numbers) > _MAX_NUMBERS:
        return False
    for a, b in numbers:
        for nr in range(a, b + 1):
            if not any(SYSCALL_NUMBERS.get(rule.syscall) == nr and _inside(known, rule)
                       for rule in rules):
                return False
    return True


def _inside(known: dict, rule) -> bool:
    """Every argument value the path admits satisfies every condition."""
    for cond in rule.conditions:
        lo_words = known.get(16 + 8 * cond.index, _ALL)
        hi_words = known.get(20 + 8 * cond.index, _ALL)
        least = hi_words[0][0] << 32 | lo_words[0][0]
        most = hi_words[-1][1] << 32 | lo_words[-1][1]
        value = cond.value
        if cond.op == "==":
            ok = least == most == value
        elif cond.op == "!=":
            ok = not (_holds(hi_words, value >> 32) and _holds(lo_words, value & _WORD))
        elif cond.op == "<=":
            ok = most <= value
        elif cond.op == "<":
            ok = most < value
        elif cond.op == ">=":
            ok = least >= value
        else:
            ok = least > value
        if not ok:
            return False
    return True


def _holds(ivs, k: int) -> bool:
    return any(a <= k <= b for a, b in ivs)
