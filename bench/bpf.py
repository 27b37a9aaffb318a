"""BPF program length per device set.

Two independent readings:
  planned    `SPT_PLAN_DUMP=FILE solo5-spt ...`: the launcher writes the exact
             filter bytes of that launch (same code path, same fds) as hex;
             8 bytes per classic BPF instruction.
  installed  the filter the kernel holds for a running guest, read with
             ptrace(PTRACE_SECCOMP_GET_FILTER) (root): the count of
             instructions of filter 0, for any tender, ours or SPT_COMPARE.
             Only guests that keep running can be read: sleep (no devices),
             blockbench (one block) and net (one TAP).
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import time

from bench.results import Plot, Section, Series, Table
from bench.runner import BenchError, Child, Context, Netns, run, start, stop, wait_for_text

BPF_INSN_BYTES = 8
# Solo5's tender, as quoted by the issue (not measured here).
SOLO5_REFERENCE = {"none": 34, "one block": 49}

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_SECCOMP_GET_FILTER = 0x420C

GUEST_IP = "10.78.0.2/24"


def instructions_run(program: bytes, nr: int, args: tuple = (), arch: int | None = None
                     ) -> tuple[int, int]:
    """(action, instructions executed) of classic BPF `program` for one
    call `nr` with `args` on `arch` (the host's by default): the work the
    kernel's filter does for that call. Knows the instructions libseccomp
    emits for spt's rules (load word, jumps, return constant)."""
    from spt import arch as arch_mod

    audit_arch = arch_mod.host().AUDIT_ARCH if arch is None else arch
    words = [nr, audit_arch, 0, 0]  # nr, arch, instruction pointer (low, high)
    for value in (list(args) + [0] * 6)[:6]:
        words += [value & 0xFFFFFFFF, value >> 32]
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    pc = acc = count = 0
    while pc < len(insns):
        code, jt, jf, k = insns[pc]
        count += 1
        if code == 0x20:  # ld [k]
            acc, pc = words[k // 4], pc + 1
        elif code == 0x05:  # ja
            pc += 1 + k
        elif code == 0x06:  # ret k
            return k, count
        elif code in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if taken else jf)
        else:
            raise BenchError("BPF instruction 0x%02x not understood" % code)
    raise BenchError("BPF program runs off its end")


def filter_length_from_dump(path: str) -> tuple[int, int]:
    """(instructions, rules) from an SPT_PLAN_DUMP file."""
    try:
        with open(path) as f:
            doc = json.load(f)
        program = bytes.fromhex(doc["bpf"])
        rules = len(doc["rules"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchError("unreadable plan dump %s: %s" % (path, exc)) from None
    if not program or len(program) % BPF_INSN_BYTES:
        raise BenchError("plan dump %s: BPF of %d bytes is not whole instructions"
                         % (path, len(program)))
    return len(program) // BPF_INSN_BYTES, rules


def installed_filter_length(child: Child) -> int:
    """Instructions of the newest seccomp filter of a child started here:
    seize it, stop it, ask the kernel, let it go. The guest sees at most one
    interrupted yield (EINTR), which a yield loop tolerates."""
    pid = child.pid
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

    def ptrace(request: int, addr=None) -> int:
        result = libc.ptrace(request, pid, addr, None)
        if result < 0:
            errno = ctypes.get_errno()
            raise BenchError("ptrace(0x%x) on pid %d: %s" % (request, pid, os.strerror(errno)))
        return result

    ptrace(PTRACE_SEIZE)
    try:
        ptrace(PTRACE_INTERRUPT)
        _, status = os.waitpid(pid, 0)
        if not os.WIFSTOPPED(status):  # it ended, and that wait reaped it
            child.code = os.waitstatus_to_exitcode(status)
            raise BenchError("pid %d ended while being read (exit %d)" % (pid, child.code))
        return ptrace(PTRACE_SECCOMP_GET_FILTER, 0)
    finally:
        libc.ptrace(PTRACE_DETACH, pid, None, None)


def _wait_filtered(child: Child, timeout: float) -> None:
    """For a guest that prints nothing while it runs: it is running once the
    kernel shows its process under a seccomp filter (mode 2)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(child.pid, os.WNOHANG)
        if done:
            child.code = os.waitstatus_to_exitcode(status)
            raise BenchError("exited (%d) before running under its filter" % child.code)
        if _seccomp_status(child.pid).startswith("mode 2,"):
            return
        time.sleep(0.01)
    raise BenchError("not under a seccomp filter within %.0f s" % timeout)


def _seccomp_status(pid: int) -> str:
    with open("/proc/%d/status" % pid) as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return "mode %s, %s filter(s)" % (fields.get("Seccomp", "?").strip(),
                                     fields.get("Seccomp_filters", "?").strip())


def _device_sets(ctx: Context, disk: str) -> list[tuple[str, list[str] | None]]:
    """(name, argv after the tender) or None where a guest is not built."""
    guests = {name: ctx.guest(name) for name in ("hello", "block", "net", "syscall_dev")}
    block = "--block:storage=%s" % disk
    net = "--net:service0=sptb0"

    def argv(guest, *opts):
        return [*opts, guests[guest], "--ipv4=" + GUEST_IP] if guests[guest] else None

    return [("none", argv("hello")), ("one block", argv("block", block)),
            ("one net", argv("net", net)), ("block + net", argv("syscall_dev", block, net))]


def _planned(ctx: Context, ns: Netns, args: list[str]) -> tuple[int, int]:
    dump = os.path.join(ctx.tmp, "bpf-dump.json")
    if os.path.exists(dump):
        os.unlink(dump)
    proc = run(ns.argv(ctx.spt.argv(*args)), dict(ctx.env, SPT_PLAN_DUMP=dump), timeout=30)
    if proc.returncode != 0:
        raise BenchError("SPT_PLAN_DUMP launch failed: %s" % proc.stderr.strip()[-200:])
    return filter_length_from_dump(dump)


def _installed(ctx: Context, ns: Netns, tender, args: list[str], ready: str, tag: str):
    out = os.path.join(ctx.tmp, "bpf-%s.out" % tag)
    open(out, "w").close()
    child = start(ns.argv(tender.argv(*args)), ctx.env, out, out)
    try:
        if ready:
            wait_for_text(out, ready, child, timeout=15)
        else:
            _wait_filtered(child, timeout=15)
        time.sleep(0.05)
        mode = _seccomp_status(child.pid)
        return installed_filter_length(child), mode
    finally:
        stop(child)


def measure(ctx: Context) -> Section:
    section = Section("bpf", "Seccomp BPF program length per device set", METHOD)
    disk = os.path.join(ctx.tmp, "bpf-disk.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    rows, data = [], {}
    with Netns("bpf") as ns:
        ns.add_tap("sptb0", "10.78.0.1/24")
        ns.add_tap("sptb1", "10.78.1.1/24")
        sets = _device_sets(ctx, disk)
        running = {"none": ([ctx.guest("sleep"), "3600"], "sleep: yielding"),
                   "one net": (["--net:service0=sptb1", ctx.guest("net"),
                                "--ipv4=10.78.1.2/24"], "net: ready"),
                   # blockbench prints only when done: this total keeps it busy
                   "one block": (["--block:storage=%s" % disk, ctx.guest("blockbench"),
                                  "read", str(1 << 50)], None)}
        for name, args in sets:
            if args is None:
                rows.append([name, "not measured (guest not built)", "", "", "", ""])
                continue
            insns, rules = _planned(ctx, ns, args)
            entry = {"planned": insns, "rules": rules}
            installed = {}
            if name in running and None not in running[name][0]:
                run_args, ready = running[name]
                for tender in ctx.tenders():
                    try:
                        installed[tender.label] = _installed(
                            ctx, ns, tender, run_args, ready, "%s-%s" % (tender.label, name[:4]))
                    except BenchError as exc:
                        if tender is ctx.spt:
                            raise
                        installed[tender.label] = (None, "failed: %s" % exc)
            entry["installed"] = {k: v[0] for k, v in installed.items()}
            data[name] = entry
            spt_cell = ("%d (%s)" % installed["spt"] if "spt" in installed
                        else "not readable (guest exits at once)")
            if "compare" in installed:
                n, mode = installed["compare"]
                cmp_cell = "%d (%s)" % (n, mode) if n is not None else mode
            elif ctx.compare is None:
                cmp_cell = "not measured (SPT_COMPARE unset)"
            else:
                cmp_cell = "not readable (guest exits at once)"
            ref = SOLO5_REFERENCE.get(name)
            rows.append([name, str(rules), str(insns), spt_cell, cmp_cell,
                         "%d (%.2fx)" % (ref, insns / ref) if ref else "-"])
    section.tables.append(Table(
        ["devices", "rules", "planned insns (SPT_PLAN_DUMP)", "installed insns, spt",
         "installed insns, SPT_COMPARE", "Solo5 reference (ratio)"], rows))
    mismatched = [n for n, e in data.items()
                  if "spt" in e.get("installed", {}) and e["installed"]["spt"] != e["planned"]]
    section.notes.append("Planned and installed filter lengths %s."
                         % ("differ for: " + ", ".join(mismatched) if mismatched else "agree "
                            "wherever both were read"))
    names = [n for n in data]
    section.plots.append(Plot("bpf_length", "bar", "BPF instructions per device set", "",
                              "instructions",
                              [Series("spt", xs=list(range(len(names))),
                                      ys=[data[n]["planned"] for n in names]),
                               Series("Solo5 (reference)", xs=list(range(len(names))),
                                      ys=[SOLO5_REFERENCE.get(n, 0) for n in names])],
                              categories=names))
    section.data = data
    return section


METHOD = """\
For each device set the launcher is run with `SPT_PLAN_DUMP=FILE` (the same code path
as a launch, writing the rules and the exact BPF bytes instead of starting the guest):
instructions = bytes / 8. Guests: hello (none), block with `--block:storage=` a 1 MiB
file (one block), net with `--net:service0=` a TAP (one net), syscall_dev (both); the
TAPs live in a network namespace made for this figure. For guests that keep running,
the filter the kernel actually holds is read from the running process with
ptrace(PTRACE_SECCOMP_GET_FILTER), for spt and SPT_COMPARE alike: sleep (none),
blockbench busy reading (one block, the same device set as the block guest) and net
(one net). Solo5's figures (34 and 49) are the issue's reference, not measured here.
"""
