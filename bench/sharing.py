"""Image sharing: idle guests of a realistic image, its pages mapped from
the image store (spt/imagestore.py) or copied into every guest.

The `big` guest (1.25 MiB of text, 384 KiB of rodata, all of it read once,
then idle in yield) is ramped to N guests twice, interleaved with nothing
else: with the store (the default) and with SPT_SHARE=0 (each guest copies
its image, as Solo5's tender does); SPT_COMPARE's tender, if set, copies
too. The tiny `sleep` guest is ramped the same way for the other end of the
scale. A launch of `big exit` (read the image, exit) is timed both ways to
show that mapping costs a launch nothing against copying.
"""

from __future__ import annotations

from dataclasses import replace

from bench import stats
from bench.density import ramp
from bench.memory import smallest_mem
from bench.results import Section, Table
from bench.runner import BenchError, Context, timed

N = 20
PSS_TARGET = 0.5  # PSS per guest, shared against copied
BIG_READY = "big: sum="
SLEEP_READY = "sleep: yielding"


def _ramp_row(label: str, result: dict, n: int) -> tuple[list[str], float, float]:
    last = result["samples"][-1]
    pss = last["pss_kb"] / n
    drop = last["mem_available_drop_kb"] / n
    return [label, "%d" % n, "%.0f" % pss, "%+.0f" % drop], pss, drop


def _launch_times(ctx: Context, argv: list[str], env_copy: dict, runs: int) -> dict:
    times = {"shared": [], "copied": []}
    for _ in range(runs):  # interleaved, one of each per round
        for key, env in (("shared", ctx.env), ("copied", env_copy)):
            ns, code = timed(argv, env)
            if code != 0:
                raise BenchError("big exit ended with status %d" % code)
            times[key].append(ns)
    return times


def measure(ctx: Context) -> Section:
    section = Section("sharing", "Image sharing: guests of one realistic image", METHOD)
    big = ctx.guest("big", section)
    sleep = ctx.guest("sleep", section)
    if big is None or sleep is None:
        return section
    n = min(N, max(ctx.sizes.density_n, 2))
    copy_env = dict(ctx.env, SPT_SHARE="0")
    mem = "--mem=%d" % smallest_mem(ctx, big)
    tiny_mem = "--mem=%d" % smallest_mem(ctx, sleep)
    configs = [
        ("spt, big image shared", ctx, ctx.spt.argv(mem, big), BIG_READY, "shared"),
        ("spt, big image copied (SPT_SHARE=0)", replace(ctx, env=copy_env),
         ctx.spt.argv(mem, big), BIG_READY, "copied"),
        ("spt, tiny image (sleep)", ctx, ctx.spt.argv(tiny_mem, sleep, "3600"), SLEEP_READY,
         "tiny"),
    ]
    if ctx.compare:
        configs.append(("SPT_COMPARE, big image", ctx, ctx.compare.argv(mem, big), BIG_READY,
                        "compare"))
    rows, figures = [], {}
    for label, run_ctx, argv, ready, key in configs:
        print("  sharing: %d x %s" % (n, label), flush=True)
        try:
            result = ramp(run_ctx, argv, n, ctx.sizes.density_window, ready)
        except BenchError as exc:
            if key == "compare":
                rows.append([label, "failed: %s" % exc, "", ""])
                continue
            raise
        row, pss, drop = _ramp_row(label, result, n)
        rows.append(row)
        figures[key] = {"pss_kb": pss, "mem_available_drop_kb": drop, "stop": result["stop"]}
    section.tables.append(Table(
        ["guests", "N", "PSS per guest kB", "MemAvailable drop per guest kB"], rows,
        "Idle guests after each had read its whole image once."))
    ratio = figures["shared"]["pss_kb"] / figures["copied"]["pss_kb"]
    section.notes.append("Target: PSS per guest of the big image shared <= %.1fx copied: %s "
                         "(%.2fx: %.0f kB against %.0f kB)."
                         % (PSS_TARGET, "met" if ratio <= PSS_TARGET else "missed", ratio,
                            figures["shared"]["pss_kb"], figures["copied"]["pss_kb"]))
    if "compare" in figures:
        section.notes.append("Against SPT_COMPARE: %.2fx its PSS per guest."
                             % (figures["shared"]["pss_kb"] / figures["compare"]["pss_kb"]))
    else:
        section.notes.append("SPT_COMPARE: not measured (%s)."
                             % ("unset" if ctx.compare is None else "failed"))

    print("  sharing: launch of `big exit`, shared and copied", flush=True)
    times = _launch_times(ctx, ctx.spt.argv(mem, big, "exit"), copy_env,
                          max(5, ctx.sizes.launch_runs // 2))
    launch_ratio = stats.ratio_summary(times["shared"], times["copied"])
    section.tables.append(Table(
        ["launch of big exit", "wall time, median", "vs copied"],
        [["shared (mapped from the store)",
          stats.fmt_value(stats.summarize(times["shared"]), "ms", 1e-6),
          stats.fmt_ratio(launch_ratio)],
         ["copied (SPT_SHARE=0)", stats.fmt_value(stats.summarize(times["copied"]), "ms", 1e-6),
          "1.00x"]],
        "%d interleaved rounds, launch to exit." % len(times["shared"])))
    section.notes.append("Target: the launch of a large image no slower than copying it: %s "
                         "(%s)." % ("met" if launch_ratio.median <= 1.0 else "missed",
                                    stats.fmt_ratio(launch_ratio)))
    section.data = {"n": n, "figures": figures,
                    "launch_ms": {k: [t / 1e6 for t in v] for k, v in times.items()}}
    return section


METHOD = """\
N = 20 idle `big` guests (1.25 MiB of text and 384 KiB of rodata, each read once, then
blocked in yield) are started as the density figure starts guests, once with the image
store (every guest maps its image's pages from one immutable file: pages it does not
write are shared) and once with SPT_SHARE=0 (every guest copies its image, as Solo5's
tender does); then N tiny `sleep` guests. With every guest up, the PSS of all of them
(/proc/PID/smaps_rollup) is summed and MemAvailable compared with before the ramp; each
figure is per guest. A launch of `big exit` (read the image once, exit) is timed with
and without the store, interleaved.
"""
