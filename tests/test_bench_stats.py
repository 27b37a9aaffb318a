"""The benchmark package: its statistics, its parsers of tool output, its
report, and one tiny end-to-end run of `python -m bench --quick`."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bench import stats
from bench.bpf import filter_length_from_dump
from bench.density import checkpoints
from bench.io import parse_ping, parse_rate, parse_udp
from bench.launch import breakdown, entry_code, parse_timing
from bench.report import md_table, render_markdown
from bench.results import Section, Table
from bench.runner import BenchError

ROOT = Path(__file__).resolve().parent.parent


# --- stats --------------------------------------------------------------------

def test_median_of_odd_and_even_counts():
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert stats.median([7]) == 7


def test_quartiles_interpolate_between_ranks():
    assert stats.quartiles([1, 2, 3, 4, 5]) == (2, 4)
    assert stats.quartiles([1, 2, 3, 4]) == (1.75, 3.25)


def test_summary_holds_median_spread_and_extremes():
    s = stats.summarize([10, 50, 20, 40, 30])
    assert (s.n, s.median, s.q1, s.q3, s.low, s.high) == (5, 30, 20, 40, 10, 50)
    assert s.iqr == 20


def test_paired_ratios_divide_pair_by_pair():
    assert stats.paired_ratios([2, 9, 4], [1, 3, 4]) == [2, 3, 1]
    assert stats.ratio_summary([2, 9, 4], [1, 3, 4]).median == 2


def test_bad_samples_are_refused():
    with pytest.raises(ValueError):
        stats.median([])
    with pytest.raises(ValueError):
        stats.summarize([1.0, float("nan")])
    with pytest.raises(ValueError):
        stats.ratio(1, 0)
    with pytest.raises(ValueError):
        stats.paired_ratios([1, 2], [1])
    with pytest.raises(ValueError):
        stats.paired_ratios([], [])


def test_formatting_shows_median_iqr_and_n():
    s = stats.summarize([1e6, 2e6, 3e6])
    assert stats.fmt_value(s, "ms", 1e-6) == "2.00 ms (IQR 1.50-2.50, n=3)"
    assert stats.fmt_value(stats.summarize([5]), "kB", digits=0) == "5 kB (n=1)"
    assert stats.fmt_ratio(stats.summarize([2, 4, 6])) == "4.00x (IQR 3.00-5.00)"


# --- parsers of tool output ---------------------------------------------------

def test_timing_line_is_parsed_and_must_be_complete():
    line = "noise\nspt-timing: imports=1.5 image=0.25 devices=0 bpf=2 plan=1\n"
    assert parse_timing(line) == {"imports": 1.5, "image": 0.25, "devices": 0, "bpf": 2,
                                  "plan": 1}
    with pytest.raises(BenchError):
        parse_timing("spt-timing: imports=1 image=1")
    with pytest.raises(BenchError):
        parse_timing("nothing here")
    with pytest.raises(BenchError):
        parse_timing("spt-timing: imports=x image=1 devices=1 bpf=1 plan=1")


def test_breakdown_rest_is_total_minus_everything_measured():
    stage = {"imports": 3, "image": 1, "devices": 0, "bpf": 1, "plan": 1}
    rows = dict(breakdown([30e6], [stage], start_ns=[8e6], entry_ns=[20e6]))
    assert rows["interpreter start (floor without teardown)"] == 8
    assert rows["imports before main()"] == 12
    assert rows["trampoline + guest + exit"] == 4  # 30 - 20 - 6


def test_the_entry_series_runs_the_console_scripts_own_preamble(tmp_path):
    script = tmp_path / "solo5-spt"
    script.write_text("#!/x/python -IS\n# a comment\nimport sys\nsys.path += ['/a']\n"
                      "from spt.warmlaunch import main\nsys.exit(main())\n")
    assert entry_code(str(script)) == ("# a comment\nimport sys\nsys.path += ['/a']\n"
                                       "from spt.warmlaunch import main\nimport posix\n"
                                       "posix._exit(0)")
    script.write_text("#!/bin/sh\nexec python -I -S \"$0\"\n")
    assert entry_code(str(script)).startswith("from spt.warmlaunch import main\n")


def test_rate_lines_of_guest_and_references():
    assert parse_rate("x\nblockbench: bytes=4096 ns=1000\n") == (4096, 1000)
    assert parse_rate("blockref: bytes=1 ns=2") == (1, 2)
    with pytest.raises(BenchError):
        parse_rate("blockbench: I/O failed ret=-14")
    with pytest.raises(BenchError):
        parse_rate("blockbench: bytes=4096 ns=0")


def test_ping_summary_gives_rate_and_mean_rtt():
    out = ("--- 10.79.0.2 ping statistics ---\n"
           "20000 packets transmitted, 20000 received, 0% packet loss, time 100ms\n"
           "rtt min/avg/max/mdev = 0.003/0.004/0.086/0.002 ms, ipg/ewma 0.005/0.006 ms\n")
    assert parse_ping(out) == (200000.0, 0.004)
    with pytest.raises(BenchError):
        parse_ping("ping: connect: Network is unreachable")


def test_udp_client_line():
    assert parse_udp("udp: trips=1000 seconds=0.500 median_us=5.5 lost=2") == (2000.0, 5.5, 2)
    with pytest.raises(BenchError):
        parse_udp("udp: trips=0 seconds=0.500 median_us=0.0 lost=9")


def test_plan_dump_length_is_bytes_over_eight(tmp_path):
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps({"bpf": "00" * 8 * 34, "rules": [{}] * 7}))
    assert filter_length_from_dump(str(dump)) == (34, 7)
    dump.write_text(json.dumps({"bpf": "00" * 12, "rules": []}))
    with pytest.raises(BenchError):
        filter_length_from_dump(str(dump))
    dump.write_text("{not json")
    with pytest.raises(BenchError):
        filter_length_from_dump(str(dump))


def test_density_checkpoints_end_at_n_without_repeats():
    assert checkpoints(3) == [1, 2, 3]
    marks = checkpoints(200)
    assert marks[-1] == 200 and len(marks) == 10 and marks == sorted(set(marks))


# --- report -------------------------------------------------------------------

def test_markdown_tables_escape_pipes_and_pad_rows():
    text = md_table(Table(["a", "b"], [["x|y"]], "caption"))
    assert text.splitlines()[2] == "| x\\|y |  |"
    assert text.endswith("caption")


def test_report_collects_targets_and_says_what_was_not_measured():
    section = Section("launch", "Launch", "How.", tables=[Table(["h"], [["v"]])],
                      notes=["Target: x <= 2: met.", "SPT_COMPARE: not measured."])
    md = render_markdown([section], {"date": "today"}, {})
    assert "## Targets" in md and "| Launch | x <= 2: met. |" in md
    assert "## Launch" in md and "- SPT_COMPARE: not measured." in md


# --- end to end ---------------------------------------------------------------

def _bench(tmp_path, *args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT,
                          env=dict(os.environ, **(env or {})), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def test_quick_run_writes_a_complete_report(tmp_path):
    out = tmp_path / "report"
    proc = _bench(tmp_path, "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = (out / "benchmarks.md").read_text()
    for title in ("## Launch time", "## Idle guest memory", "## Seccomp BPF program length",
                  "## Guest block I/O", "## Guest network round trips", "## Density"):
        assert title in md, title
    assert "Not measured" not in md
    assert "not measured (SPT_COMPARE unset)" in md
    images = sorted(p.name for p in (out / "img").iterdir())
    assert "launch_times.png" in images and "density_pss.png" in images
    assert all((out / "img" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in images)
    raw = json.loads((out / "benchmarks.json").read_text())
    for devices in ("none", "one block", "one net"):  # the kernel holds what was planned
        bpf = raw["figures"]["bpf"][devices]
        assert bpf["planned"] > 0 and bpf["installed"]["spt"] == bpf["planned"], devices
    assert raw["figures"]["density"]["spt --mem=2"]["stop"]["left"] == 0
    filters = raw["figures"]["block"]["filters"]["4096"]  # the rule order, before and after
    assert (filters["spt: device calls first"]["run"]["pread64"]
            < filters["libseccomp's order (before)"]["run"]["pread64"])
    block = raw["figures"]["block"]["read-4096"]
    for runner in ("spt", "host C", "host C filtered", "host C filtered, libseccomp order",
                   "host C allow-all"):
        ((moved, ns, cpu_ns, idle_cpu_ns),) = block[runner]  # one round: bytes, clock, CPU
        assert moved == 4 << 20 and ns > 0 and cpu_ns > 0 and idle_cpu_ns > 0, runner
    assert not list(tmp_path.glob("report/.bench-*"))  # no temporary files left


def test_compare_path_runs_the_other_tender_interleaved(tmp_path):
    """No Solo5 here: our own launcher stands in for SPT_COMPARE (same argv)."""
    out = tmp_path / "report"
    solo5_spt = str(Path(sys.executable).parent / "solo5-spt")
    proc = _bench(tmp_path, "--quick", "--only", "launch,memory", "--out", str(out),
                  env={"SPT_COMPARE": solo5_spt})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = (out / "benchmarks.md").read_text()
    assert "SPT_COMPARE unset" not in md
    assert "| compare --mem=2 | " in md
    figures = json.loads((out / "benchmarks.json").read_text())["figures"]
    assert len(figures["launch"]["ms"]["compare"]) == len(figures["launch"]["ms"]["spt"]) == 5
    assert figures["memory"]["samples"]["compare-2"][0]["non_guest"] == 1


def test_compare_path_measures_block_io_next_to_spt(tmp_path):
    out = tmp_path / "report"
    solo5_spt = str(Path(sys.executable).parent / "solo5-spt")
    proc = _bench(tmp_path, "--quick", "--only", "block", "--out", str(out),
                  env={"SPT_COMPARE": solo5_spt})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((out / "benchmarks.json").read_text())["figures"]
    for workload in ("write-4096", "read-4096", "write-32768", "read-32768"):
        assert len(figures["block"][workload]["compare"]) == 1, workload
    assert re.search(r"Target: >= 0\.98 of the C tender's rate: (met|missed) \(lowest [\d.]+ by the "
                     r"loop's clock, [\d.]+ by CPU time\)",
                     (out / "benchmarks.md").read_text())


def test_blockref_under_a_filter_is_really_filtered(tmp_path):
    """The host loop's filtered runs are filtered: the program is installed
    (a transfer the rules do not allow kills it) and the device sits at the
    fd the rules name."""
    exe, disk, prog = tmp_path / "blockref", tmp_path / "disk.img", tmp_path / "f.bpf"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(ROOT / "bench" / "blockref.c")],
                   check=True, timeout=120)
    disk.write_bytes(b"\0" * 8192)
    allow_4096_on_fd_4 = b"".join(
        struct.pack("<HBBI", *insn) for insn in [
            (0x20, 0, 0, 0), (0x15, 0, 1, 231), (0x06, 0, 0, 0x7FFF0000),  # exit_group
            (0x15, 0, 1, 1), (0x06, 0, 0, 0x7FFF0000),  # write
            (0x15, 0, 5, 17), (0x20, 0, 0, 16), (0x15, 0, 3, 4),  # pread64 on fd 4
            (0x20, 0, 0, 32), (0x15, 0, 1, 4096), (0x06, 0, 0, 0x7FFF0000),  # of 4096 bytes
            (0x06, 0, 0, 0x80000000)])
    prog.write_bytes(allow_4096_on_fd_4)

    def blockref(*args):
        return subprocess.run([str(exe), str(disk), *map(str, args)], capture_output=True,
                              text=True, timeout=60)

    ok = blockref(4096, "read", 8192, prog, 4)
    assert ok.returncode == 0 and ok.stdout.startswith("blockref: bytes=8192 "), ok
    assert blockref(4096, "read", 8192).returncode == 0
    assert blockref(2048, "read", 8192, prog, 4).returncode == -31  # SIGSYS: count
    assert blockref(4096, "read", 8192, prog, 5).returncode == -31  # SIGSYS: fd
    assert blockref(4096, "write", 8192, prog, 4).returncode == -31  # SIGSYS: call
    missing = blockref(4096, "read", 8192, tmp_path / "none.bpf", 4)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing


@pytest.mark.parametrize("args, env, fragment", [
    (["--only", "nonsense"], {}, "unknown figure"),
    (["--quick"], {"BENCH_DENSITY": "many"}, "BENCH_DENSITY=many"),
    (["--quick"], {"SPT_COMPARE": "/nonexistent/solo5-spt"}, "SPT_COMPARE=/nonexistent"),
])
def test_bad_settings_end_in_one_line(tmp_path, args, env, fragment):
    proc = _bench(tmp_path, *args, "--out", str(tmp_path / "out"), env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr
    assert proc.stderr.startswith("python -m bench: ")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
