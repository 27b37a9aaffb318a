"""Guest I/O: block throughput and network round trips.

Block: the `blockbench` guest moves TOTAL bytes through its block device one
sector per pread64/pwrite64, wrapping at the device's end, and prints the
loop's own monotonic time (launch excluded). References doing the same
sequence of system calls on the same file:
  host C      bench/blockref.c, compiled here: no tender, no filter
  host C + filter
              the same loop under the very filter of that launch, once
              under the same rules in libseccomp's own order, and once under
              a filter allowing everything (no BPF runs): what seccomp costs,
              apart from anything the tender or the guest adds
  Python      the launcher's interpreter running the same loop with
              os.pread/os.pwrite (the Python floor)
  SPT_COMPARE the same guest under the other tender, if set.

Net: the `netbench` guest answers ICMP echo and echoes UDP port 7 on a TAP
in a namespace made for this figure. From that namespace, `ping -f`
(ICMP, one request in flight) and a small Python UDP client (one datagram
in flight, bench/udp_client.py) count round trips per second. The Python
floor there is a Python UDP echo (recvfrom/sendto) in a peer namespace
behind a veth pair, whose kernel answers the pings.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import struct
import subprocess

from bench import stats
from bench.bpf import instructions_run
from bench.results import Plot, Section, Series, Table
from bench.runner import (BenchError, Child, Context, Netns, last_line, run, start, stop,
                          wait_for_text)

SECTOR_SIZES = (4096, 32768)  # 64 KiB is not a sector size: the manifest holds a u16
COMPARE_TARGET = 0.98
RUNNERS = (("spt", "spt guest"), ("compare", "SPT_COMPARE guest"),
           ("host C", "host C loop (no tender)"),
           ("host C filtered", "host C loop + spt's filter"),
           ("host C filtered, libseccomp order", "host C loop + the rules in libseccomp's order"),
           ("host C allow-all", "host C loop + a filter allowing every call"),
           ("Python", "Python loop (floor)"))
# `ret ALLOW`: the kernel's action cache (5.11+) knows it allows every call
# whatever the arguments and skips the program, so this runner measures
# what seccomp costs per call before any BPF runs.
ALLOW_ALL = struct.pack("<HBBI", 0x06, 0, 0, 0x7FFF0000)
# The filter's two shapes, measured side by side: the one spt installs (the
# devices' calls tested first) and the same rules in libseccomp's own order.
FILTER_SHAPES = (("host C filtered", "spt: device calls first", True),
                 ("host C filtered, libseccomp order", "libseccomp's order (before)", False))
_RESULT = re.compile(r"(\w+): bytes=(\d+) ns=(\d+)")

PY_BLOCK_LOOP = """\
import os, sys, time
path, size, mode, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
fd = os.open(path, os.O_RDWR)
capacity = os.fstat(fd).st_size
buf = b"\\xa5" * size
done = offset = 0
start = time.perf_counter_ns()
while done < total:
    n = os.pwrite(fd, buf, offset) if mode == "write" else len(os.pread(fd, size, offset))
    if n != size:
        sys.exit("pyref: short transfer")
    done += size
    offset += size
    if offset + size > capacity:
        offset = 0
print("pyref: bytes=%d ns=%d" % (done, time.perf_counter_ns() - start))
"""

PY_UDP_ECHO = """\
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7))
print("echo: ready", flush=True)
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(data, peer)
"""


def parse_rate(output: str) -> tuple[int, int]:
    """(bytes, ns) from a `NAME: bytes=N ns=T` line."""
    match = _RESULT.search(output)
    if not match or int(match.group(3)) <= 0:
        raise BenchError("no `bytes=N ns=T` result in: %s" % last_line(output))
    return int(match.group(2)), int(match.group(3))


def _block_dir(ctx: Context) -> tuple[str, str]:
    """Where the device file lives: tmpfs if there is one (the page cache
    alone, no writeback to disturb the figures), else the bench's temp dir."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        with open("/proc/mounts") as f:
            if any(line.split()[1] == shm and line.split()[2] == "tmpfs" for line in f):
                return os.path.join(shm, os.path.basename(ctx.tmp)), "tmpfs (/dev/shm)"
    return ctx.tmp, "the bench's temp directory"


def _build_blockref(ctx: Context) -> str | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    exe = os.path.join(ctx.tmp, "blockref")
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blockref.c")
    proc = run([cc, "-O2", "-o", exe, source], ctx.env, timeout=120)
    if proc.returncode != 0:
        raise BenchError("cannot build bench/blockref.c: %s" % last_line(proc.stderr))
    return exe


def measure_block(ctx: Context) -> Section:
    section = Section("block", "Guest block I/O", BLOCK_METHOD)
    guest = ctx.guest("blockbench", section)
    if guest is None:
        return section
    blockref = _build_blockref(ctx)
    directory, where = _block_dir(ctx)
    os.makedirs(directory, exist_ok=True)
    disk = os.path.join(directory, "blockbench.img")
    total = ctx.sizes.block_bytes
    try:
        _fill(disk, ctx.sizes.block_file_bytes)
        filters = _launch_filters(ctx, guest, disk) if blockref else {}
        results, compare_failure = _block_rounds(ctx, guest, blockref, disk, total, filters)
    finally:
        if os.path.exists(disk):
            os.unlink(disk)
        if directory != ctx.tmp:
            shutil.rmtree(directory, ignore_errors=True)

    missing = {"compare": "not measured (SPT_COMPARE unset)" if ctx.compare is None
               else "failed: %s" % compare_failure,
               "host C": "not measured (no C compiler)",
               "host C filtered": "not measured (no C compiler)",
               "host C filtered, libseccomp order": "not measured (no C compiler)",
               "host C allow-all": "not measured (no C compiler)"}
    rows, plot_series, categories, data = [], {}, [], {}
    for (sector, mode), runs in results.items():
        categories.append("%s %d KiB" % (mode, sector // 1024))
        rate, cpu_rate = _rates(runs["spt"]), _cpu_rates(runs["spt"])
        workload = "%s, %d KiB sectors" % (mode, sector // 1024)
        for name, label in RUNNERS:
            if name not in runs:
                rows.append([workload, label, missing.get(name, "not measured"), "", "", ""])
                continue
            other, cpu_other = _rates(runs[name]), _cpu_rates(runs[name])
            rows.append([workload, label, stats.fmt_value(stats.summarize(other), digits=0),
                         "-" if name == "spt"
                         else stats.fmt_ratio(stats.ratio_summary(rate, other)),
                         stats.fmt_value(stats.summarize(cpu_other), digits=0),
                         "-" if name == "spt"
                         else stats.fmt_ratio(stats.ratio_summary(cpu_rate, cpu_other))])
        data["%s-%d" % (mode, sector)] = {k: [list(x) for x in v] for k, v in runs.items()}
        for name, samples in runs.items():
            plot_series.setdefault(name, []).append(stats.median(_rates(samples)))
    section.tables.append(Table(
        ["workload", "runner", "MiB/s", "spt vs this", "MiB per CPU s", "spt vs this (CPU)"],
        rows, "%d MiB per run over a %d MiB device file on %s, %d interleaved round(s); "
              "ratios are spt / reference (above 1: spt faster). MiB/s by the loop's own "
              "clock; MiB per CPU second by the CPU time the run used (its children's "
              "rusage) less that of the same run moving 0 bytes (launch and exit), which a "
              "busy machine disturbs far less."
              % (total >> 20, ctx.sizes.block_file_bytes >> 20, where, ctx.sizes.io_reps)))
    if ctx.compare is None:
        section.notes.append("Target: >= %.2f of the C tender's rate: not measured "
                             "(SPT_COMPARE unset)." % COMPARE_TARGET)
    elif all("compare" in r for r in results.values()):
        worst = min(stats.median(stats.paired_ratios(_rates(r["spt"]), _rates(r["compare"])))
                    for r in results.values())
        worst_cpu = min(stats.median(stats.paired_ratios(_cpu_rates(r["spt"]),
                                                         _cpu_rates(r["compare"])))
                        for r in results.values())
        section.notes.append("Target: >= %.2f of the C tender's rate: %s (lowest %.3f by the "
                             "loop's clock, %.3f by CPU time)."
                             % (COMPARE_TARGET, "met" if worst >= COMPARE_TARGET else "missed",
                                worst, worst_cpu))
    section.notes += _seccomp_notes(results)
    if filters:
        section.tables.append(_filter_table(filters[SECTOR_SIZES[0]]))
    section.notes.append("64 KiB transfers cannot be measured: the manifest holds the sector size "
                         "as a 16-bit number, so 32 KiB is the largest power of two.")
    section.plots.append(Plot("block_io", "bar", "Sequential block I/O (medians)", "", "MiB/s",
                              [Series(name, xs=list(range(len(categories))), ys=ys)
                               for name, ys in plot_series.items()], categories=categories))
    data["filters"] = {sector: {label: {"instructions": len(program) // 8,
                                        "run": _hot_path_lengths(program, f["calls"])}
                                for label, program in f["programs"].items()}
                       for sector, f in filters.items()}
    section.data = data
    return section


def _launch_filters(ctx: Context, guest: str, disk: str) -> dict:
    """Per sector size: the filter spt installs for the blockbench launch
    (SPT_PLAN_DUMP: the launcher's own code path, so the very bytes) and
    the same rules compiled in libseccomp's own order, as files for
    blockref, with the block fd they name and the hot calls' arguments."""
    from spt.commands.policy import bpf_bytes, rules_from
    from spt.errors import SptError
    from spt.bpfcompile import compile_bpf

    filters = {}
    for sector in SECTOR_SIZES:
        dump = os.path.join(ctx.tmp, "block-plan-%d.json" % sector)
        proc = run(ctx.spt.argv("--block:storage=%s" % disk,
                                "--block-sector-size:storage=%d" % sector, "--mem=8", guest,
                                "read", "0"), dict(ctx.env, SPT_PLAN_DUMP=dump), timeout=60)
        try:
            with open(dump) as f:
                doc = json.load(f)
            installed, rules = bpf_bytes(doc), rules_from(doc)
            fd = next(c.value for r in rules if r.syscall == "pread64"
                      for c in r.conditions if c.arg == "fd")
            console = next(c.value for r in rules if r.syscall == "write"
                           and r.source.startswith("core.") for c in r.conditions)
        except (OSError, ValueError, StopIteration, SptError) as exc:
            raise BenchError("no filter for the block launch (exit %d: %s): %s"
                             % (proc.returncode, last_line(proc.stderr), exc)) from None
        programs = {}
        for key, label, hot_first in FILTER_SHAPES:
            program = compile_bpf(rules, hot_first=hot_first)
            if hot_first and program != installed:
                raise BenchError("the filter the launcher installs is not spt.policy's own "
                                 "compile of its rules")
            path = os.path.join(ctx.tmp, "block-%d-%s.bpf" % (sector, "hot" if hot_first
                                                              else "libseccomp"))
            with open(path, "wb") as f:
                f.write(program)
            programs[label] = program
            filters.setdefault(sector, {}).setdefault("paths", {})[key] = path
        path = os.path.join(ctx.tmp, "block-allow-all.bpf")
        with open(path, "wb") as f:
            f.write(ALLOW_ALL)
        filters[sector]["paths"]["host C allow-all"] = path
        # The calls' arguments as the guest makes them (buffers are not checked)
        filters[sector].update(fd=fd, programs=programs, calls={
            "pread64": (fd, 0, sector, 0), "pwrite64": (fd, 0, sector, 0),
            "write (console)": (console, 0, 16), "clock_gettime": (1, 0)})
    return filters


def _hot_path_lengths(program: bytes, calls: dict) -> dict:
    """BPF instructions the kernel runs for each allowed call of `calls`."""
    from spt import arch

    numbers = arch.host().SYSCALLS
    out = {}
    for name, args in calls.items():
        action, count = instructions_run(program, numbers[name.split()[0]], args)
        if action != 0x7FFF0000:
            raise BenchError("the filter does not allow %s%r" % (name, args))
        out[name] = count
    return out


def _filter_table(f: dict) -> Table:
    rows = []
    for _key, label, _hot in FILTER_SHAPES:
        program = f["programs"][label]
        run_lengths = _hot_path_lengths(program, f["calls"])
        rows.append([label, str(len(program) // 8)] + [str(n) for n in run_lengths.values()])
    return Table(["filter (one block, 4 KiB sectors)", "BPF instructions"]
                 + ["run per %s" % name for name in f["calls"]], rows,
                 "Instructions run: the path through the program for an allowed call with "
                 "these arguments (counted by bench/bpf.py's interpreter).")


def _seccomp_notes(results: dict) -> list[str]:
    """Where the gap to the unfiltered host loop goes, per workload."""
    def paired(runs, a, b):  # by CPU time: the loop's clock is too noisy for a few %
        return stats.median(stats.paired_ratios(_cpu_rates(runs[a]), _cpu_rates(runs[b])))

    parts = {"entry": [], "filter": [], "tender": [], "order": []}
    for (sector, mode), runs in results.items():
        if not {"host C", "host C filtered", "host C filtered, libseccomp order",
                "host C allow-all"} <= set(runs):
            return []
        tag = "%s %d KiB" % (mode, sector // 1024)
        parts["entry"].append("%s %.3f" % (tag, paired(runs, "host C allow-all", "host C")))
        parts["filter"].append("%s %.3f" % (tag, paired(runs, "host C filtered", "host C")))
        parts["tender"].append("%s %.3f" % (tag, paired(runs, "spt", "host C filtered")))
        parts["order"].append("%s %.3f" % (tag, paired(runs, "host C filtered",
                                                       "host C filtered, libseccomp order")))
    return ["Seccomp's own cost (host C + spt's filter / host C, median of paired ratios "
            "by CPU time): "
            + ", ".join(parts["filter"]) + "; of which entering seccomp at all, with no BPF "
            "run (host C + allow-all / host C): " + ", ".join(parts["entry"]) + ".",
            "What the tender and guest add beyond the filter (spt / host C + spt's filter): "
            + ", ".join(parts["tender"]) + ".",
            "Rule order (host C + spt's filter / host C + libseccomp's order): "
            + ", ".join(parts["order"]) + "."]


def _fill(path: str, size: int) -> None:
    """A device file with every block allocated, so that no run pays for
    the file system allocating pages on first write."""
    chunk = b"\xa5" * (1 << 20)
    with open(path, "wb") as f:
        for offset in range(0, size, len(chunk)):
            f.write(chunk[:min(len(chunk), size - offset)])


def _rates(samples: list[tuple]) -> list[float]:
    """MiB/s of (bytes, ns, ...) samples, by the loop's own clock."""
    return [s[0] / s[1] * 1e9 / (1 << 20) for s in samples]


def _cpu_rates(samples: list[tuple]) -> list[float]:
    """MiB per CPU second of (bytes, ns, cpu_ns, idle_cpu_ns) samples: the
    run's CPU time less that of the same run moving nothing."""
    return [s[0] / max(s[2] - s[3], 1) * 1e9 / (1 << 20) for s in samples]


def _children_cpu_ns() -> int:
    """User + system time of every child reaped so far (the runs are
    sequential, so a difference around one run is that run's)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


def _timed_run(argv: list[str], env: dict) -> tuple[subprocess.CompletedProcess, int]:
    before = _children_cpu_ns()
    proc = run(argv, env, timeout=600)
    return proc, _children_cpu_ns() - before


def _block_rounds(ctx: Context, guest: str, blockref: str | None, disk: str,
                  total: int, filters: dict) -> tuple[dict, str]:
    """{(sector, mode): {runner: [(bytes, ns)]}} and why SPT_COMPARE failed
    (it is then left out of every later workload; any other failure ends
    the figure)."""
    results, compare_failure = {}, ""
    for sector in SECTOR_SIZES:
        for mode in ("write", "read"):
            commands = {name: (argv(total), argv(0)) for name, argv in
                        _block_commands(ctx, guest, blockref, disk, sector, mode,
                                        filters).items()}
            if compare_failure:
                del commands["compare"]
            runs = {name: [] for name in commands}
            for _ in range(ctx.sizes.io_reps):
                for name, (argv, idle_argv) in list(commands.items()):
                    try:
                        idle, idle_cpu = _timed_run(idle_argv, ctx.env)
                        proc, cpu = _timed_run(argv, ctx.env)
                        for p in (idle, proc):
                            if p.returncode != 0:
                                raise BenchError("block %s %d with %s: exit %d: %s" % (
                                    mode, sector, name, p.returncode,
                                    last_line(p.stdout + p.stderr)))
                        runs[name].append(parse_rate(proc.stdout) + (cpu, idle_cpu))
                    except BenchError as exc:
                        if name != "compare":
                            raise
                        compare_failure = str(exc)
                        del commands[name], runs[name]
            results[(sector, mode)] = runs
    return results, compare_failure


def _block_commands(ctx: Context, guest: str, blockref: str | None, disk: str, sector: int,
                    mode: str, filters: dict) -> dict:
    """{runner: argv of a run moving TOTAL bytes, as a function of TOTAL}."""
    commands = {tender.label: (lambda n, t=tender: t.argv(
        "--block:storage=%s" % disk, "--block-sector-size:storage=%d" % sector, "--mem=8",
        guest, mode, str(n))) for tender in ctx.tenders()}
    if blockref:
        commands["host C"] = lambda n: [blockref, disk, str(sector), mode, str(n)]
        for key, path in filters[sector]["paths"].items():
            commands[key] = lambda n, p=path: [blockref, disk, str(sector), mode, str(n), p,
                                               str(filters[sector]["fd"])]
    commands["Python"] = lambda n: ctx.floor_argv(PY_BLOCK_LOOP) + [disk, str(sector), mode,
                                                                    str(n)]
    return commands


# --- network ------------------------------------------------------------------

NET_LABELS = {"spt": "spt guest", "compare": "SPT_COMPARE guest",
              "Python": "Python floor (peer ns over veth)"}
_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received.*time (\d+)ms")
_PING_RTT = re.compile(r"= [\d.]+/([\d.]+)/")


def parse_ping(output: str) -> tuple[float, float]:
    """(replies per second, mean round trip in ms) from `ping -q` output."""
    summary = _PING_SUMMARY.search(output)
    rtt = _PING_RTT.search(output)
    if not summary or not rtt:
        raise BenchError("unexpected ping output: %s" % last_line(output))
    received, ms = int(summary.group(2)), int(summary.group(3))
    if received == 0:
        raise BenchError("no ping replies")
    return received / max(ms, 1) * 1000, float(rtt.group(1))


def parse_udp(output: str) -> tuple[float, float, int]:
    """(round trips per second, median round trip in us, lost) from the
    client's `udp: trips=N seconds=S median_us=U lost=L` line."""
    match = re.search(r"udp: trips=(\d+) seconds=([\d.]+) median_us=([\d.]+) lost=(\d+)", output)
    if not match or int(match.group(1)) == 0:
        raise BenchError("UDP client: %s" % last_line(output))
    return int(match.group(1)) / float(match.group(2)), float(match.group(3)), int(match.group(4))


def measure_net(ctx: Context) -> Section:
    section = Section("net", "Guest network round trips", NET_METHOD)
    guest = ctx.guest("netbench", section)
    if guest is None:
        return section
    ping = shutil.which("ping")
    client = os.path.join(os.path.dirname(os.path.abspath(__file__)), "udp_client.py")
    with Netns("net") as ns, Netns("peer") as peer:
        children: list[Child] = []
        try:
            targets = {}
            for i, tender in enumerate(ctx.tenders()):
                tap = "sptb%d" % i
                ns.add_tap(tap, "10.79.%d.1/24" % i)
                out = os.path.join(ctx.tmp, "net-%s.out" % tender.label)
                open(out, "w").close()
                child = start(ns.argv(tender.argv("--mem=8", "--net:service0=%s" % tap, guest,
                                                  "--ipv4=10.79.%d.2/24" % i)), ctx.env, out, out)
                children.append(child)
                try:
                    wait_for_text(out, "net: ready", child, timeout=15)
                except BenchError as exc:
                    if tender is ctx.spt:
                        raise BenchError("netbench under spt: %s" % exc) from None
                    section.notes.append("SPT_COMPARE could not run netbench: %s" % exc)
                    continue
                targets[tender.label] = "10.79.%d.2" % i
            targets["Python"] = _start_peer_echo(ctx, ns, peer, children)
            results = _net_rounds(ctx, ns, targets, ping, client)
        finally:  # before the namespaces go: nothing of ours outlives them
            for child in children:
                stop(child)

    rows, data = [], {}
    spt_udp = [r[0] for r in results["spt"]["udp"]]
    spt_icmp = [r[0] for r in results["spt"]["icmp"]]
    for name in targets:
        udp = [r[0] for r in results[name]["udp"]]
        row = [NET_LABELS.get(name, name), stats.fmt_value(stats.summarize(udp), "/s", digits=0),
               "-" if name == "spt" else stats.fmt_ratio(stats.ratio_summary(spt_udp, udp)),
               "%.0f" % stats.median([r[1] for r in results[name]["udp"]])]
        icmp = [r[0] for r in results[name]["icmp"]]
        if icmp:
            row += [stats.fmt_value(stats.summarize(icmp), "/s", digits=0),
                    "-" if name == "spt" else stats.fmt_ratio(stats.ratio_summary(spt_icmp, icmp))]
        else:
            row += ["not measured (no ping)", ""]
        rows.append(row)
        data[name] = results[name]
    if "compare" not in targets:
        rows.insert(1, [NET_LABELS["compare"], "not measured (SPT_COMPARE unset)"
                        if ctx.compare is None else "not measured", "", "", "", ""])
    section.tables.append(Table(
        ["echo answered by", "UDP round trips", "spt vs this", "UDP median RTT us",
         "ICMP round trips (ping -f)", "spt vs this"], rows,
        "%d interleaved round(s); each UDP run %.1f s, each ping run %d requests."
        % (ctx.sizes.io_reps, ctx.sizes.net_seconds, ctx.sizes.ping_count)))
    if ctx.compare is None:
        section.notes.append("Target: >= %.2f of the C tender's rate: not measured "
                             "(SPT_COMPARE unset)." % COMPARE_TARGET)
    elif "compare" in targets:
        worst = stats.median(stats.paired_ratios([r[0] for r in results["spt"]["udp"]],
                                                 [r[0] for r in results["compare"]["udp"]]))
        section.notes.append("Target: >= %.2f of the C tender's rate: %s (UDP %.3f)."
                             % (COMPARE_TARGET, "met" if worst >= COMPARE_TARGET else "missed",
                                worst))
    names = list(targets)
    section.plots.append(Plot(
        "net_round_trips", "bar", "Round trips per second (medians)", "", "round trips/s",
        [Series("UDP (Python client)", xs=list(range(len(names))),
                ys=[stats.median([r[0] for r in results[n]["udp"]]) for n in names])]
        + ([Series("ICMP (ping -f)", xs=list(range(len(names))),
                   ys=[stats.median([r[0] for r in results[n]["icmp"]]) for n in names])]
           if ping else []),
        categories=[NET_LABELS[n] for n in names]))
    section.data = data
    return section


def _start_peer_echo(ctx: Context, ns: Netns, peer: Netns, children: list[Child]) -> str:
    """A veth pair from the measuring namespace to the peer, and the Python
    UDP echo there; returns the peer's address."""
    ns.ip("link", "add", "sptbv0", "type", "veth", "peer", "name", "sptbv1",
          "netns", peer.name)
    ns.ip("addr", "add", "10.79.9.1/24", "dev", "sptbv0")
    ns.ip("link", "set", "sptbv0", "up")
    peer.ip("addr", "add", "10.79.9.2/24", "dev", "sptbv1")
    peer.ip("link", "set", "sptbv1", "up")
    out = os.path.join(ctx.tmp, "net-echo.out")
    open(out, "w").close()
    child = start(peer.argv(ctx.floor_argv(PY_UDP_ECHO)), ctx.env, out, out)
    children.append(child)
    wait_for_text(out, "echo: ready", child, timeout=15)
    return "10.79.9.2"


def _net_rounds(ctx: Context, ns: Netns, targets: dict, ping: str | None, client: str) -> dict:
    results = {name: {"udp": [], "icmp": []} for name in targets}
    for name, address in targets.items():  # warm up: ARP, caches
        run(ns.argv([ctx.interpreter, "-I", "-S", client, address, "7", "0.2"]), ctx.env, 30)
    for _ in range(ctx.sizes.io_reps):
        for name, address in targets.items():
            proc = run(ns.argv([ctx.interpreter, "-I", "-S", client, address, "7",
                                str(ctx.sizes.net_seconds)]), ctx.env,
                       timeout=ctx.sizes.net_seconds + 30)
            if proc.returncode != 0:
                raise BenchError("UDP client against %s: %s" % (name, last_line(proc.stderr)))
            results[name]["udp"].append(parse_udp(proc.stdout))
            if ping:
                proc = run(ns.argv([ping, "-f", "-q", "-c", str(ctx.sizes.ping_count), "-W", "1",
                                    address]), ctx.env, timeout=120)
                results[name]["icmp"].append(parse_ping(proc.stdout))
    return results


BLOCK_METHOD = """\
The `blockbench` guest (`write|read TOTAL_BYTES`) transfers TOTAL bytes one sector per
pwrite64/pread64 call, sequentially, wrapping at the end of its device, and prints the
loop's own monotonic time, so launch time is not in the rate. It runs with
`--block-sector-size` 4096 and 32768 (64 KiB cannot be a sector size). References, with
the same calls on the same file and the same sizes, each from a page-aligned buffer like
the guest's: a small host C program (bench/blockref.c, compiled by the bench: no tender,
no seccomp filter); the same program under the very filter of that launch (the bytes
`SPT_PLAN_DUMP` reports, its block fd at the same number), and once more under the same
rules compiled in libseccomp's own order (the filter before the device calls were put
first), and under a one-instruction filter allowing every call (the kernel's action cache
lets such calls through without running any BPF: what entering seccomp costs by itself).
These show what seccomp costs and what the rule order changes, apart from anything the
tender or the guest adds. Then the same loop in Python
(os.pwrite/os.pread, the Python floor) and, if set, SPT_COMPARE running the same guest.
All run interleaved per round, each also once moving 0 bytes, so that a run's CPU time
less that of its idle twin is the loop's: the CPU-time columns and the notes on where the
gap goes use it, since on a shared machine the loop's clock also counts the time it
waited for a CPU. The filter table counts, with bench/bpf.py's interpreter,
the BPF instructions the kernel runs for each allowed call of the guest. Since issue 16
the filter tests the device calls first (docs/allowlist.md, "Rule order"); the runner
in libseccomp's order keeps the figure from before that change measurable next to it.
Guest memory plays no part in the rate: the guest touches its buffer before the clock
starts and its loop takes no page faults (0 minor faults, read from /proc while it
ran); huge pages for guest memory were measured on the host loop (no gain for a buffer
of one sector) and left off, since an idle guest's first stack page would become 2 MiB.
"""

NET_METHOD = """\
The `netbench` guest answers ICMP echo and echoes UDP on port 7 over a TAP in a network
namespace made for this figure (deleted after it). From that namespace a small Python
client (bench/udp_client.py) sends one 64-byte datagram at a time and waits for its
echo, for a fixed time, counting round trips; `ping -f -q -c N` does the same for ICMP
in C. The Python floor is a Python UDP echo server (recvfrom/sendto) in a peer
namespace behind a veth pair, whose kernel answers the pings: a different path (veth
and kernel sockets, no TAP), shown for scale. The client being Python bounds every UDP
figure; ping is the sharper comparison. If SPT_COMPARE is set, the same guest runs
under it on a second TAP, measured interleaved with spt.
"""
