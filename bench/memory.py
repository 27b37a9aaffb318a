"""Idle guest memory: what a guest blocked in yield costs the host.

The `sleep` guest prints "sleep: yielding" and blocks in solo5_yield; once
it has printed, its VmRSS (/proc/PID/status), PSS (/proc/PID/smaps_rollup)
and mappings (/proc/PID/maps) are read. A mapping is the guest's if it lies
inside guest memory, [0x10000, mem); [vsyscall] is the kernel's, in every
process, and not counted as the tender's.
"""

from __future__ import annotations

import os
import time

from bench import stats
from bench.results import Plot, Section, Series, Table
from bench.runner import BenchError, Context, run, start, stop, wait_for_text

GUEST_MEM_START = 0x10000
DEFAULT_MEM_MIB = 512
READY = "sleep: yielding"
RSS_TARGET_KB = 1700  # Solo5's tender on this machine, as the issue states it
NON_GUEST_TARGET = 1


def smallest_mem(ctx: Context, guest: str) -> int:
    """The smallest --mem (MiB) the launcher accepts for this guest, asked of
    the launcher itself (SPT_PLAN_DUMP: every check, no guest started)."""
    dump = os.path.join(ctx.tmp, "mem-probe.json")
    for mib in range(1, 65):
        proc = run(ctx.spt.argv("--mem=%d" % mib, guest), dict(ctx.env, SPT_PLAN_DUMP=dump),
                   timeout=30)
        if proc.returncode == 0:
            return mib
    raise BenchError("the launcher refused %s at every --mem up to 64" % guest)


def read_memory(pid: int, mem_bytes: int) -> dict:
    """RSS/PSS in kB, the number of mappings and of those outside guest
    memory (mem_bytes 0: no guest, every mapping counts)."""
    with open("/proc/%d/status" % pid) as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    with open("/proc/%d/smaps_rollup" % pid) as f:
        rollup = dict(line.split(":", 1) for line in f if ":" in line and not line[0].isdigit())
    with open("/proc/%d/maps" % pid) as f:
        maps = [line.split() for line in f if line.strip()]
    outside = []
    for fields in maps:
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        name = fields[5] if len(fields) > 5 else "[anon]"
        if name == "[vsyscall]":
            continue
        if not (mem_bytes and lo >= GUEST_MEM_START and hi <= mem_bytes):
            outside.append(name)
    return {
        "rss_kb": int(status["VmRSS"].split()[0]),
        "pss_kb": int(rollup["Pss"].split()[0]),
        "mappings": len(maps),
        "non_guest": len(outside),
        "non_guest_names": outside,
    }


def _idle_sample(ctx: Context, argv: list[str], mem_bytes: int, tag: str) -> dict:
    out = os.path.join(ctx.tmp, "memory-%s.out" % tag)
    open(out, "w").close()
    child = start(argv, ctx.env, out, out)
    try:
        wait_for_text(out, READY, child, timeout=15)
        time.sleep(0.2)  # let the print's write and the yield settle
        return read_memory(child.pid, mem_bytes)
    finally:
        stop(child)


def floor_idle_argv(ctx: Context) -> list[str]:
    """The interpreter alone, idle: what any tender that stays in Python
    holds at the very least."""
    code = ("import sys, time; sys.stdout.write(%r); sys.stdout.flush(); time.sleep(3600)"
            % (READY + "\n"))
    return ctx.floor_argv(code)


def measure(ctx: Context) -> Section:
    section = Section("memory", "Idle guest memory", METHOD)
    guest = ctx.guest("sleep", section)
    if guest is None:
        return section
    small = smallest_mem(ctx, guest)
    configs = []  # (label, key, argv, guest memory bytes)
    for tender in ctx.tenders():
        for mib in sorted({small, DEFAULT_MEM_MIB}):
            configs.append(("%s --mem=%d" % (tender.label, mib), "%s-%d" % (tender.label, mib),
                            tender.argv("--mem=%d" % mib, guest, "3600"), mib << 20))
    configs.append(("Python floor (idle interpreter)", "floor", floor_idle_argv(ctx), 0))

    samples = {key: [] for _, key, _, _ in configs}
    failed = {}
    for i in range(ctx.sizes.memory_runs):  # interleaved: one of each per round
        for label, key, argv, mem_bytes in configs:
            if key in failed:
                continue
            try:
                samples[key].append(_idle_sample(ctx, argv, mem_bytes, "%s-%d" % (key, i)))
            except BenchError as exc:
                if key.startswith("spt") or key == "floor":
                    raise BenchError("%s: %s" % (label, exc)) from None
                failed[key] = str(exc)

    def med(key, field):
        return stats.median([s[field] for s in samples[key]])

    floor_rss, floor_pss = med("floor", "rss_kb"), med("floor", "pss_kb")
    rows = []
    for label, key, _, _ in configs:
        if key in failed:
            rows.append([label, "failed: %s" % failed[key], "", "", "", "", ""])
            continue
        rss, pss = med(key, "rss_kb"), med(key, "pss_kb")
        compare_key = "compare-" + key.split("-", 1)[1] if key.startswith("spt-") else None
        if compare_key and compare_key in samples and samples[compare_key]:
            vs = "RSS %.2fx, PSS %.2fx" % (rss / med(compare_key, "rss_kb"),
                                            pss / med(compare_key, "pss_kb"))
        elif key.startswith("spt-"):
            vs = "not measured (SPT_COMPARE unset)" if ctx.compare is None else "not measured"
        else:
            vs = "-"
        rows.append([label, "%d" % rss, "%d" % pss, "%d" % med(key, "mappings"),
                     "%d" % med(key, "non_guest"),
                     "RSS %.3fx, PSS %.3fx" % (rss / floor_rss, pss / floor_pss), vs])
    section.tables.append(Table(
        ["process", "VmRSS kB", "PSS kB", "mappings", "non-guest mappings", "vs floor",
         "vs SPT_COMPARE"], rows,
        "Medians of %d idle process(es) each." % ctx.sizes.memory_runs))

    spt_keys = [key for _, key, _, _ in configs if key.startswith("spt-")]
    worst_rss = max(med(k, "rss_kb") for k in spt_keys)
    worst_outside = max(med(k, "non_guest") for k in spt_keys)
    names = sorted({os.path.basename(n) for k in spt_keys for s in samples[k]
                    for n in s["non_guest_names"]})
    section.notes.append("Target: VmRSS <= %.1f MB: %s (largest %d kB)."
                         % (RSS_TARGET_KB / 1000, "met" if worst_rss <= RSS_TARGET_KB
                            else "missed", worst_rss))
    section.notes.append("Target: %d non-guest mapping: %s (%d: %s; [vsyscall] not counted)."
                         % (NON_GUEST_TARGET, "met" if worst_outside <= NON_GUEST_TARGET
                            else "missed", worst_outside, ", ".join(names) or "none"))
    section.notes.append("Smallest --mem the launcher accepts for the sleep guest: %d MiB." % small)
    labels = [label for label, key, _, _ in configs if key not in failed]
    keys = [key for _, key, _, _ in configs if key not in failed]
    section.plots.append(Plot(
        "memory_idle", "bar", "Idle process memory (log scale)", "", "kB",
        [Series("VmRSS", xs=list(range(len(keys))), ys=[med(k, "rss_kb") for k in keys]),
         Series("PSS", xs=list(range(len(keys))), ys=[med(k, "pss_kb") for k in keys])],
        categories=labels, log_y=True))
    section.data = {"smallest_mem_mib": small, "samples": samples, "failed": failed}
    return section


METHOD = """\
The `sleep` guest (blocks in solo5_yield) is started with the smallest --mem the
launcher accepts for it and with the default 512 MiB; once it has printed "sleep:
yielding" (and 0.2 s more), VmRSS is read from /proc/PID/status, PSS from
/proc/PID/smaps_rollup and the mappings from /proc/PID/maps. A mapping inside guest
memory [0x10000, mem) is the guest's; every other one except [vsyscall] counts as
"non-guest". The Python floor is the launcher's interpreter idling in
`-I -S -c "...time.sleep(3600)"`: what a tender that stays resident in Python holds at
least. Processes are started one at a time, interleaved, and stopped with SIGTERM.
"""
