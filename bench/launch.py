"""Launch: wall time of `solo5-spt hello.spt` from spawn to reaped exit.

Every round runs each series once, in the same order, so the series are
interleaved (A, B, C, A, B, C ...) and a burst of load from a neighbour
lands on all of them; ratios are medians of the per-round ratios.

Series:
  spt            the launcher as users run it (launch cache warm)
  spt cache off  SPT_CACHE=0: image checks and BPF compiled every time
  spt timed      SPT_TIMING=1 (stage breakdown on stderr), cache warm
  spt cold timed SPT_TIMING=1 and SPT_CACHE=0
  floor          the launcher's interpreter, `-I -S -c pass`
  floor, no exit the same, leaving by posix._exit: the interpreter's start
                 alone (a launch execs; it never tears the interpreter down)
  entry          the same interpreter, with the same flags, running what the
                 solo5-spt script runs before main() (its sys.path, then
                 `from spt.warmlaunch import main`), then posix._exit (no
                 interpreter teardown, as a launch execs)
  compare        SPT_COMPARE with the same argv, if set
"""

from __future__ import annotations

import os
import re

from bench import stats
from bench.results import Plot, Section, Series, Table
from bench.runner import BenchError, Context, run, timed

GUEST_ARG = "bench"
STAGES = ("imports", "image", "devices", "bpf", "plan")
TARGET = 1.5
STRETCH = 1.25
_TIMING_LINE = re.compile(r"^spt-timing: (.*)$", re.M)


def entry_code(script: str) -> str:
    """What the console script runs before main(), then posix._exit(0): its
    own lines up to `sys.exit(main())` (the sys.path it sets and the import
    of main); for a script not written that way (a wheel's sh preamble), the
    import alone."""
    try:
        with open(script, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    if lines and lines[0].startswith("#!") and "sys.exit(main())" in lines:
        body = lines[1:lines.index("sys.exit(main())")]
    else:
        body = ["from spt.warmlaunch import main"]
    return "\n".join(body + ["import posix", "posix._exit(0)"])


def parse_timing(stderr: str) -> dict[str, float]:
    """`spt-timing: imports=1.2 image=0.9 ...` -> {stage: ms}."""
    match = _TIMING_LINE.search(stderr)
    if not match:
        raise BenchError("SPT_TIMING=1 printed no spt-timing line: %r" % stderr[-200:])
    stages = {}
    for item in match.group(1).split():
        name, _, value = item.partition("=")
        try:
            stages[name] = float(value)
        except ValueError:
            raise BenchError("malformed spt-timing item %r" % item) from None
    missing = [s for s in STAGES if s not in stages]
    if missing:
        raise BenchError("spt-timing line lacks %s" % ", ".join(missing))
    return stages


def _check_guest_runs(ctx: Context, tender, hello: str) -> str | None:
    """One launch with output captured: the hello guest must say its command
    line and exit 0 (this also fills the launch cache). None if fine, else why."""
    proc = run(tender.argv(hello, GUEST_ARG), ctx.env, timeout=30)
    if proc.returncode != 0 or "cmdline: '%s'" % GUEST_ARG not in proc.stdout:
        output = (proc.stderr or proc.stdout).strip()[-200:] or "no output"
        return "exit %d, %s" % (proc.returncode, output)
    return None


def _series(ctx: Context, hello: str) -> dict[str, tuple[list[str], dict]]:
    """name -> (argv, environment)."""
    env = ctx.env
    cold = dict(env, SPT_CACHE="0")
    series = {
        "spt": (ctx.spt.argv(hello, GUEST_ARG), env),
        "spt cache off": (ctx.spt.argv(hello, GUEST_ARG), cold),
        "spt timed": (ctx.spt.argv(hello, GUEST_ARG), dict(env, SPT_TIMING="1")),
        "spt cold timed": (ctx.spt.argv(hello, GUEST_ARG), dict(cold, SPT_TIMING="1")),
        "floor": (ctx.floor_argv(), env),
        "floor, no exit": (ctx.floor_argv("import posix\nposix._exit(0)"), env),
        # posix._exit: a launch never tears the interpreter down (it execs),
        # so neither may its stand-in, or the teardown would count as start-up.
        "entry": (ctx.floor_argv(entry_code(ctx.spt.path)), env),
    }
    if ctx.compare:
        series["compare"] = (ctx.compare.argv(hello, GUEST_ARG), env)
    return series


def _rounds(ctx: Context, series: dict) -> tuple[dict[str, list[int]], dict[str, list[dict]]]:
    times = {name: [] for name in series}
    stages = {name: [] for name in series if name.endswith("timed")}
    stderr_path = os.path.join(ctx.tmp, "launch-stderr.txt")
    for _ in range(ctx.sizes.launch_runs):
        for name, (argv, env) in series.items():
            open(stderr_path, "w").close()
            ns, code = timed(argv, env, timeout=30, stderr=stderr_path)
            if code != 0:
                with open(stderr_path, errors="replace") as f:
                    raise BenchError("launch series %r exited %d: %s"
                                     % (name, code, f.read().strip()[-200:]))
            times[name].append(ns)
            if name in stages:
                with open(stderr_path, errors="replace") as f:
                    stages[name].append(parse_timing(f.read()))
    return times, stages


def breakdown(total_ns: list[int], stage_runs: list[dict], start_ns: list[int],
              entry_ns: list[int]) -> list[tuple[str, float]]:
    """[(stage, median ms)], summing (medians, so only roughly) to the
    median total: the interpreter's start (the floor without its teardown,
    which a launch never runs), the imports before main(), the launcher's
    own stages, and the rest (exec of the trampoline, jail, guest run,
    exit), which is each run's total minus everything measured."""
    start_ms = stats.median(start_ns) / 1e6
    entry_ms = stats.median(entry_ns) / 1e6
    rows = [("interpreter start (floor without teardown)", start_ms),
            ("imports before main()", max(entry_ms - start_ms, 0.0))]
    for stage in STAGES:
        rows.append(("launcher: " + stage, stats.median([run[stage] for run in stage_runs])))
    rest = [t / 1e6 - entry_ms - sum(run[s] for s in STAGES)
            for t, run in zip(total_ns, stage_runs)]
    rows.append(("trampoline + guest + exit", max(stats.median(rest), 0.0)))
    return rows


def _target_note(ratio: stats.Summary) -> str:
    verdict = "met" if ratio.median <= TARGET else "missed"
    ahead = " (also within the %.1fx stretch goal)" % STRETCH if ratio.median <= STRETCH else ""
    return ("Target: launch <= %.1fx the Python floor: %s at %.2fx%s."
            % (TARGET, verdict, ratio.median, ahead))


def measure(ctx: Context) -> Section:
    section = Section("launch", "Launch time (hello guest, exec to exit)", METHOD)
    hello = ctx.guest("hello", section)
    if hello is None:
        return section
    series = _series(ctx, hello)
    for tender in ctx.tenders():
        problem = _check_guest_runs(ctx, tender, hello)
        if problem and tender is ctx.spt:
            raise BenchError("solo5-spt cannot run the hello guest: %s" % problem)
        if problem:
            section.notes.append("SPT_COMPARE could not run the hello guest (%s): not compared."
                                 % problem)
            del series["compare"]
    times, stage_runs = _rounds(ctx, series)

    floor = times["floor"]
    shown = [("spt (launch cache warm)", "spt"), ("spt (SPT_CACHE=0)", "spt cache off")]
    if "compare" in times:
        shown.append(("SPT_COMPARE", "compare"))
    rows, data = [], {"runs": ctx.sizes.launch_runs, "ms": {}}
    for label, name in shown:
        s = stats.summarize(times[name])
        vs_floor = stats.ratio_summary(times[name], floor)
        if name == "compare":
            vs_compare = "-"
        elif "compare" in times:
            vs_compare = stats.fmt_ratio(stats.ratio_summary(times[name], times["compare"]))
        else:
            vs_compare = "not measured (SPT_COMPARE %s)" % ("unset" if ctx.compare is None
                                                            else "failed")
        rows.append([label, stats.fmt_value(s, "ms", 1e-6), stats.fmt_ratio(vs_floor), vs_compare])
        data["ms"][name] = [t / 1e6 for t in times[name]]
    rows.append(["Python floor (`-I -S -c pass`)",
                 stats.fmt_value(stats.summarize(floor), "ms", 1e-6), "1.00x", "-"])
    data["ms"]["floor"] = [t / 1e6 for t in floor]
    section.tables.append(Table(["launch", "wall time, median", "vs floor", "vs SPT_COMPARE"],
                                rows, "%d interleaved rounds." % ctx.sizes.launch_runs))

    warm_ratio = stats.ratio_summary(times["spt"], floor)
    section.notes.append(_target_note(warm_ratio))
    cost = stats.ratio_summary(times["spt timed"], times["spt"])
    section.notes.append("SPT_TIMING=1 against off (same cache state): %s; off, the switch is one "
                         "environment lookup." % stats.fmt_ratio(cost, 3))

    start = times["floor, no exit"]
    warm = breakdown(times["spt timed"], stage_runs["spt timed"], start, times["entry"])
    cold = breakdown(times["spt cold timed"], stage_runs["spt cold timed"], start, times["entry"])
    section.tables.append(Table(
        ["stage", "ms, cache warm", "ms, SPT_CACHE=0"],
        [[name, "%.2f" % w, "%.2f" % c] for (name, w), (_, c) in zip(warm, cold)]
        + [["total (median of the timed runs)", "%.2f" % (stats.median(times["spt timed"]) / 1e6),
            "%.2f" % (stats.median(times["spt cold timed"]) / 1e6)]],
        "Medians per stage; stages from SPT_TIMING=1 runs."))
    data["breakdown_ms"] = {"warm": dict(warm), "cold": dict(cold)}

    box = [Series(label, ys=[t / 1e6 for t in times[name]]) for label, name in shown]
    box.append(Series("Python floor", ys=[t / 1e6 for t in floor]))
    section.plots.append(Plot("launch_times", "box", "hello guest launch, exec to exit",
                              "", "ms", box))
    section.plots.append(Plot(
        "launch_breakdown", "stack", "Where a launch spends its time (medians)", "ms", "",
        [Series(name, ys=[w, c]) for (name, w), (_, c) in zip(warm, cold)],
        categories=["cache warm", "SPT_CACHE=0"]))
    section.data = data
    return section


METHOD = """\
Wall time from posix_spawn of `solo5-spt hello.spt bench` (default --mem, stdout to
/dev/null) to its reaped exit, against the Python floor: the interpreter named on the
launcher's `#!` line running `-I -S -c pass`. All series run interleaved, one of each
per round; ratios are medians of the per-round ratios, spreads are interquartile ranges.
The stage breakdown comes from `SPT_TIMING=1` (milliseconds per launcher stage, printed
just before the exec; a warm launch's stages are spt/warmlaunch.py's, and a launch it
hands to spt/launcher.py counts that attempt in its first stage); "interpreter start" is
the floor leaving by `posix._exit` (a launch execs, it never tears the interpreter
down); "imports before main()" is the same interpreter, with the same flags, running what
the console script runs before `main()` (its sys.path and the import of spt.warmlaunch)
minus that start; "trampoline + guest + exit" is each timed run's total minus everything
else, the jail's namespaces included. The launch cache lives in a
fresh directory for the run (SPT_CACHE_DIR), filled by one untimed launch first.
"""
