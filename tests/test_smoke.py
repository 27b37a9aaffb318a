"""The first thing a user does: boot hello."""

from conftest import spt_run


def test_hello_prints_its_command_line_and_exits_zero(guest):
    proc = spt_run("--mem=8", guest("hello"), "one", "two")
    assert proc.returncode == 0, proc.stderr
    assert "cmdline: 'one two'" in proc.stdout


def test_ps_shows_the_guest_as_spt_and_its_kernel(guest, running):
    from conftest import read_line, run

    proc = running("--mem=8", guest("sleep"), "30")
    assert read_line(proc.stdout) == "sleep: yielding\n"
    shown = run(["ps", "-o", "comm=", "-p", str(proc.pid)]).stdout.strip()
    assert shown == "spt:sleep.spt"  # comm holds 15 bytes: "spt:" + 11 of the name
