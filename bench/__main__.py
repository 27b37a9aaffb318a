"""python -m bench [--quick] [--out DIR] [--only FIGURE,...]

Environment:
  SPT_COMPARE=/path/to/solo5-spt  measure another tender (same argv) next to spt
  BENCH_DENSITY=N                 guests in the density figure (default 200)

Every figure is printed as it is measured; at the end the report is written
(benchmarks.md, benchmarks.json, img/*.png under --out, default docs/). A
figure that cannot be measured is reported as such, the others still run,
and the exit status is 1.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

from bench import bpf, density, io, launch, memory, report, sharing
from bench.results import Section
from bench.runner import (QUICK, ROOT, BenchError, Context, Sizes, compare_tender,
                          shebang_interpreter, spt_tender)

PROG = "python -m bench"
FIGURES = {
    "launch": launch.measure,
    "memory": memory.measure,
    "bpf": bpf.measure,
    "block": io.measure_block,
    "net": io.measure_net,
    "density": density.measure,
    "sharing": sharing.measure,
}
NEEDS_ROOT = {"bpf", "net"}  # network namespaces, TAPs, ptrace of the guests
# Variables of the launcher that would change what is measured.
CLEARED_ENV = ("SPT_TIMING", "SPT_PLAN_DUMP", "SPT_CACHE", "SPT_CACHE_DIR", "SPT_SHARE",
               "SPT_NAME", "SPT_STOP_ON_TERM", "NOTIFY_SOCKET", "CACHE_DIRECTORY")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="spt benchmarks (make bench)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (5 launches, 3 density guests, small I/O): a smoke run")
    parser.add_argument("--out", default=str(ROOT / "docs"),
                        help="directory for benchmarks.md, benchmarks.json and img/ "
                             "(default: docs/ of this checkout)")
    parser.add_argument("--only", default="",
                        help="comma-separated figures to run (%s)" % ",".join(FIGURES))
    return parser.parse_args(argv)


def baseline_sizes(args: argparse.Namespace) -> Sizes:
    """The sizes of the mode asked for, before any variable changes them."""
    return QUICK if args.quick else Sizes(density_window=2 * (os.cpu_count() or 1))


def sizes_from(args: argparse.Namespace, environ: dict) -> Sizes:
    sizes = baseline_sizes(args)
    value = environ.get("BENCH_DENSITY")
    if value:
        if not value.isdigit() or int(value) <= 0:
            raise BenchError("BENCH_DENSITY=%s is not a positive number of guests" % value)
        sizes = replace(sizes, density_n=int(value))
    return sizes


def selected(only: str) -> list[str]:
    if not only:
        return list(FIGURES)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise BenchError("unknown figure(s) %s (known: %s)"
                         % (", ".join(unknown), ", ".join(FIGURES)))
    return names


def bench_env(tmp: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env["SPT_CACHE_DIR"] = os.path.join(tmp, "cache")  # a cache of this run's own
    env["LC_ALL"] = "C"
    return env


def machine_facts(ctx: Context, sizes: Sizes, args: argparse.Namespace) -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
        with open("/proc/meminfo") as f:
            mem_kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True, timeout=10).stdout.strip()
    python = subprocess.run([ctx.interpreter, "-I", "-S", "-c",
                             "import sys; print(sys.version.split()[0])"],
                            capture_output=True, text=True, timeout=10).stdout.strip()
    return {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": "%s, %d cores, %.1f GiB RAM" % (cpu, os.cpu_count() or 0, mem_kb / (1 << 20)),
        "kernel": platform.release(),
        "load average at start": "%.2f %.2f %.2f" % os.getloadavg(),
        "spt": "%s (git %s)" % (ctx.spt.path, commit or "unknown"),
        "launcher interpreter": "%s (Python %s)" % (ctx.interpreter, python or "?"),
        "SPT_COMPARE": compare_version(ctx.compare.path) if ctx.compare else "unset",
        "mode": report.sizes_mode(sizes, baseline_sizes(args),
                                  "--quick" if args.quick else "default sizes",
                                  {"density_n": "BENCH_DENSITY=%s" % os.environ.get("BENCH_DENSITY")}),
        "sizes": ", ".join("%s=%s" % (k, v) for k, v in sizes.__dict__.items()),
    }


def compare_version(path: str) -> str:
    """SPT_COMPARE's path and what its `--version` says first (a Solo5
    tender: `solo5-spt tender, version V`)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        said = (out.stdout + out.stderr).strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        said = []
    return "%s (%s)" % (path, said[0]) if said else path


def _terminate(signum, frame):
    raise KeyboardInterrupt


def run_figures(ctx: Context, names: list[str]) -> tuple[list[Section], list[str]]:
    sections, failures = [], []
    for number, name in enumerate(names, 1):
        began = time.perf_counter()
        if name in NEEDS_ROOT and os.geteuid() != 0:
            section = Section(name, name, "", notes=["Not measured: needs root "
                                                     "(network namespaces, TAPs, ptrace)."])
            failures.append("%s: needs root" % name)
        else:
            print("-- [%d/%d] measuring %s ..." % (number, len(names), name), flush=True)
            try:
                section = FIGURES[name](ctx)
            except BenchError as exc:
                section = Section(name, name, "", notes=["Not measured: %s" % exc])
                failures.append("%s: %s" % (name, exc))
        section.seconds = time.perf_counter() - began
        section.load = os.getloadavg()[0]
        sections.append(section)
        print(report.text_section(section), flush=True)
        print("-- [%d/%d] %s: %.0f s" % (number, len(names), name, section.seconds), flush=True)
    return sections, failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    tmp = tempfile.mkdtemp(prefix="spt-bench-")
    try:
        sizes = sizes_from(args, os.environ)
        names = selected(args.only)
        spt = spt_tender()
        ctx = Context(sizes=sizes, spt=spt, compare=compare_tender(os.environ.get("SPT_COMPARE")),
                      interpreter=shebang_interpreter(spt.path), tmp=tmp, env=bench_env(tmp))
        meta = machine_facts(ctx, sizes, args)
        began = time.perf_counter()
        sections, failures = run_figures(ctx, names)
        meta["bench run time"] = "%.0f s" % (time.perf_counter() - began)
        for path in report.write(args.out, sections, meta):
            print("wrote %s" % path)
        for failure in failures:
            print("%s: not measured: %s" % (PROG, failure), file=sys.stderr)
        return 1 if failures else 0
    except BenchError as exc:
        print("%s: %s" % (PROG, exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("%s: interrupted; guests started by the bench were stopped" % PROG,
              file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
