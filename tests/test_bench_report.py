"""The bench report states its run truthfully, and the README quotes it."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace

from bench.__main__ import baseline_sizes, sizes_from
from bench.report import sizes_mode
from bench.runner import QUICK, Sizes
from conftest import ROOT


def mode_of(quick: bool, environ: dict) -> str:
    args = argparse.Namespace(quick=quick)
    sizes = sizes_from(args, environ)
    return sizes_mode(sizes, baseline_sizes(args), "--quick" if quick else "default sizes",
                      {"density_n": "BENCH_DENSITY=%s" % environ.get("BENCH_DENSITY")})


def test_default_sizes_are_called_default_only_when_they_are():
    assert mode_of(False, {}) == "default sizes"
    assert mode_of(True, {}) == "--quick"
    assert mode_of(False, {"BENCH_DENSITY": "2000"}) == \
        "default sizes, except density_n=2000 (BENCH_DENSITY=2000)"
    assert mode_of(True, {"BENCH_DENSITY": "7"}) == "--quick, except density_n=7 (BENCH_DENSITY=7)"


def test_every_size_that_differs_is_named():
    sizes = replace(QUICK, launch_runs=9, io_reps=4)
    assert sizes_mode(sizes, QUICK, "--quick", {}) == "--quick, except launch_runs=9, io_reps=4"


def doc_rows() -> dict[str, str]:
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    return dict(re.findall(r"^\| (date \(UTC\)|machine|mode|sizes) \| (.*) \|$", text, re.M))


def test_the_committed_report_states_its_sizes_truthfully():
    rows = doc_rows()
    cores = int(re.search(r"(\d+) cores", rows["machine"]).group(1))
    sizes = Sizes(**{k: type(getattr(Sizes, k))(v) for k, v in
                     (item.split("=") for item in rows["sizes"].split(", "))})
    quick = rows["mode"].startswith("--quick")
    baseline = QUICK if quick else Sizes(density_window=2 * cores)
    expected = sizes_mode(sizes, baseline, "--quick" if quick else "default sizes",
                          {"density_n": "BENCH_DENSITY=%d" % sizes.density_n})
    assert rows["mode"] == expected, (rows["mode"], expected)


def test_readme_quotes_the_reports_launch_ratio_and_idle_memory():
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    readme = (ROOT / "README.md").read_text()
    ratio = re.search(r"launch <= [\d.]+x the Python floor: \w+ at ([\d.]+)x", doc).group(1)
    assert "%sx the time of `python -I -S -c pass`" % ratio in readme, ratio
    rss = re.search(r"VmRSS <= [\d.]+ MB: \w+ \(largest (\d+) kB\)", doc).group(1)
    assert "idle guest's VmRSS is %s kB" % rss in readme, rss
