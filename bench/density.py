"""Density: N idle guests on this machine, started, measured, stopped.

N `sleep` guests are launched with a bounded number of launches in flight
(the window: 2 per core, so Python's start-up work queues on the cores
instead of thrashing them) until each has printed "sleep: yielding". All
guests share one pipe for their console, so the bench holds two fds however
many guests run; the k-th "sleep: yielding" line is the k-th guest up. At
checkpoints launching pauses until every launched guest is up, and then the
PSS of every guest is summed (the pause for reading is not counted as start
time). At the end every guest gets SIGTERM and is reaped; any still running
after the deadline gets SIGKILL, and the bench checks that no child is left.
"""

from __future__ import annotations

import os
import select
import signal
import time

from bench.memory import DEFAULT_MEM_MIB, READY, floor_idle_argv, smallest_mem
from bench.results import Plot, Section, Series, Table
from bench.runner import BenchError, Context, spawn

TARGET_N = 2000
TARGET_SECONDS = 60.0
FLOOR_MAX = 200  # idle interpreters hold megabytes each: the floor stops here


def checkpoints(n: int, points: int = 10) -> list[int]:
    """Guest counts at which to measure: about `points` of them, ending at n."""
    return sorted({max(1, round(n * k / points)) for k in range(1, points + 1)})


def _mem_available_kb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise BenchError("no MemAvailable in /proc/meminfo")


def _pss_kb(pid: int) -> int:
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise BenchError("no Pss for pid %d" % pid)


class _Console:
    """The read end of the guests' shared console pipe, split into lines."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pending = b""

    def lines(self, timeout: float) -> list[str]:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        chunk = os.read(self.fd, 65536)
        if not chunk:
            raise BenchError("every guest console closed")
        *whole, self.pending = (self.pending + chunk).split(b"\n")
        return [line.decode(errors="replace") for line in whole]


def _check_children(pids: set[int]) -> None:
    """A guest that exits while the ramp runs is a failed launch."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in pids:
            pids.discard(pid)
            raise BenchError("guest pid %d exited (%d) during the ramp"
                             % (pid, os.waitstatus_to_exitcode(status)))


def ramp(ctx: Context, argv: list[str], n: int, window: int, ready: str = READY) -> dict:
    """Start n guests, each up when it prints a line starting with `ready`;
    returns the ready times, the checkpoint samples and how the stop went."""
    read_fd, write_fd = os.pipe()
    console = _Console(read_fd)
    pids: list[int] = []
    running: set[int] = set()
    ready_at: list[float] = []
    samples = []
    marks = checkpoints(n)
    mem_before = _mem_available_kb()
    deadline = time.monotonic() + max(120.0, n * 2.0)
    start = time.perf_counter()
    paused = 0.0
    try:
        while len(ready_at) < n:
            measured = samples[-1]["n"] if samples else 0
            target = min(m for m in marks if m > measured)
            while len(pids) < target and len(pids) - len(ready_at) < window:
                pid = spawn(argv, ctx.env, write_fd, write_fd)
                pids.append(pid)
                running.add(pid)
            for line in console.lines(0.5):
                if line.strip().startswith(ready):
                    ready_at.append(time.perf_counter() - start - paused)
                elif line.strip():
                    raise BenchError("a guest launch said: %s" % line.strip())
            _check_children(running)
            if time.monotonic() > deadline:
                raise BenchError("only %d of %d guests up before the deadline"
                                 % (len(ready_at), n))
            if len(ready_at) == target:
                pause = time.perf_counter()
                samples.append({
                    "n": target, "seconds": ready_at[-1],
                    "pss_kb": sum(_pss_kb(pid) for pid in pids),
                    "mem_available_drop_kb": mem_before - _mem_available_kb(),
                })
                paused += time.perf_counter() - pause
        result = {"n": n, "ready_s": ready_at, "samples": samples}
    finally:  # a guest reaped by _check_children is not ours to signal any more
        result_stop = stop_all([pid for pid in pids if pid in running])
        os.close(read_fd)
        os.close(write_fd)
    result["stop"] = result_stop
    return result


def stop_all(pids: list[int], timeout: float = 30.0) -> dict:
    """SIGTERM every guest started here, reap each; SIGKILL what is still
    there at the deadline. Then no child of the bench may remain."""
    begin = time.perf_counter()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout + len(pids) * 0.01
    codes, killed = {}, 0
    for pid in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                codes[pid] = -signal.SIGKILL
                killed += 1
                break
            time.sleep(0.005)
    left = _children_left()
    return {"guests": len(pids), "by_sigterm": sum(1 for c in codes.values()
                                                   if c == -signal.SIGTERM),
            "sigkilled": killed, "seconds": time.perf_counter() - begin, "left": left}


def _children_left() -> int:
    """Processes whose parent is the bench: none may remain after a stop."""
    me, count = str(os.getpid()), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/status" % entry) as f:
                for line in f:
                    if line.startswith("PPid:"):
                        count += line.split()[1] == me
                        break
        except OSError:
            continue
    return count


def measure(ctx: Context) -> Section:
    section = Section("density", "Density: idle guests on one machine", METHOD)
    guest = ctx.guest("sleep", section)
    if guest is None:
        return section
    n, window = ctx.sizes.density_n, ctx.sizes.density_window
    small = smallest_mem(ctx, guest)
    configs = [("%s --mem=%d" % (tender.label, mib), tender,
                tender.argv("--mem=%d" % mib, guest, "3600"), n)
               for tender in ctx.tenders() for mib in (small, DEFAULT_MEM_MIB)]
    configs.append(("Python floor (idle interpreters)", None, floor_idle_argv(ctx),
                    min(n, FLOOR_MAX)))
    rows, data, start_series, pss_series = [], {}, [], []
    for label, tender, argv, count in configs:
        print("   density: %s, %d guests ..." % (label, count), flush=True)
        try:
            result = ramp(ctx, argv, count, window)
        except BenchError as exc:
            if tender is None or tender is ctx.spt:
                raise BenchError("%s: %s" % (label, exc)) from None
            rows.append([label, "failed: %s" % exc] + [""] * 7)
            continue
        data[label] = {k: v for k, v in result.items() if k != "ready_s"}  # the curve: samples
        last = result["samples"][-1]
        stop = result["stop"]
        rows.append([
            label, "%d" % count, "%.2f" % last["seconds"], "%.1f" % (count / last["seconds"]),
            "%.1f" % (last["pss_kb"] / count), "%.1f" % (last["pss_kb"] / 1024),
            "%+.0f" % (last["mem_available_drop_kb"] / count),
            "%d SIGTERM, %d SIGKILL, %.2f s" % (stop["by_sigterm"], stop["sigkilled"],
                                                stop["seconds"]),
            "%d" % stop["left"]])
        xs = [s["n"] for s in result["samples"]]
        start_series.append(Series(label, xs=xs, ys=[s["seconds"] for s in result["samples"]]))
        pss_series.append(Series(label, xs=xs, ys=[s["pss_kb"] / s["n"] for s in
                                                   result["samples"]]))
    section.tables.append(Table(
        ["processes", "N", "all up, s", "up per s", "PSS per guest kB", "PSS total MiB",
         "MemAvailable drop per guest kB", "stop", "children left"], rows,
        "Idle sleep guests (the floor: idle interpreters, at most %d), %d launches in "
        "flight at most." % (FLOOR_MAX, window)))
    main = data.get("spt --mem=%d" % small)
    floor = data.get("Python floor (idle interpreters)")
    if main and floor:
        def rate(r):
            return r["n"] / r["samples"][-1]["seconds"]

        def pss(r):
            return r["samples"][-1]["pss_kb"] / r["n"]

        section.notes.append(
            "spt --mem=%d against the Python floor: %.2fx the start rate, %.4fx the PSS per "
            "process." % (small, rate(main) / rate(floor), pss(main) / pss(floor)))
    if main:
        seconds = main["samples"][-1]["seconds"]
        clean = main["stop"]["left"] == 0 and main["stop"]["sigkilled"] == 0
        if n >= TARGET_N:
            section.notes.append(
                "Target: %d idle guests started within %.0f s, then stopped cleanly: %s "
                "(%.1f s, stop %s)." % (TARGET_N, TARGET_SECONDS,
                                        "met" if seconds <= TARGET_SECONDS and clean else "missed",
                                        seconds, "clean" if clean else "not clean"))
        else:
            section.notes.append(
                "Target: %d idle guests within %.0f s: not measured at N=%d (run with "
                "BENCH_DENSITY=%d); at this N's rate %d would take about %.0f s."
                % (TARGET_N, TARGET_SECONDS, n, TARGET_N, TARGET_N, seconds / n * TARGET_N))
    section.notes.append("SPT_COMPARE: %s." % ("ramped the same way" if ctx.compare
                                               else "not measured (SPT_COMPARE unset)"))
    section.notes.append("MemAvailable is system-wide: it also moves with anything else "
                         "running on the machine, and includes the kernel's own cost per "
                         "guest (task, page tables), which PSS does not.")
    section.plots.append(Plot("density_start", "line", "Time until N processes are up",
                              "processes", "seconds", start_series))
    section.plots.append(Plot("density_pss", "line", "PSS per idle process against N (log scale)",
                              "processes", "kB per process", pss_series, log_y=True))
    section.data = data
    return section


METHOD = """\
N `sleep` guests (blocked in yield; N = 200 by default, `BENCH_DENSITY=N` to change it)
are started with at most 2 launches per core in flight, for the smallest --mem the
launcher accepts and for the default 512 MiB; the Python floor is the same ramp of idle
interpreters (`-I -S`, sleeping; at most 200 of them). A guest is up when it has printed
"sleep: yielding" on the console pipe all guests share. "all up" is the time from the
first spawn to the N-th such line. At about ten checkpoints launching pauses until all
launched guests are up; then the PSS of every guest (/proc/PID/smaps_rollup) is summed
and MemAvailable compared with before the ramp (reading time is not counted as start
time). Finally every guest gets SIGTERM and is reaped (SIGKILL after a deadline), and
the bench checks that no child process of its own is left.
"""
