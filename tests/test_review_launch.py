"""Security review (issue 13), the launch side: each test pins one hole that
is now closed (docs/security.md, "Security review (issue 13)")."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import SOLO5_SPT, assert_refused, run


# --- 12. the trampoline's words for EEXIST ---------------------------------------

TRAMPOLINE_BASE_PAGE_2 = 0x700000002000  # guest memory reaching into the trampoline's image


def test_guest_memory_over_a_mapping_in_place_says_so_in_the_kernels_words(guest):
    # The launcher never plans guest memory over the trampoline; a plan that
    # does (built here by hand) makes mmap(MAP_FIXED_NOREPLACE) fail with EEXIST.
    script = textwrap.dedent("""
        import sys
        from spt import launcher, image
        opts = launcher.parse_argv(["--mem=8", sys.argv[1]])
        plan, _ = launcher.build_plan(opts, image.open_kernel(sys.argv[1]))
        launcher.exec_trampoline(plan._replace(mem_size=int(sys.argv[2])))
    """)
    proc = run([sys.executable, "-c", script, guest("hello"), str(TRAMPOLINE_BASE_PAGE_2)])
    line = assert_refused(proc)
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "overlaps a mapping already in place" in line and "MAP_FIXED_NOREPLACE" in line
    assert line.endswith(": File exists"), line
