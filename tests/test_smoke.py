"""The first thing a user does: boot hello."""

from conftest import spt_run


def test_hello_prints_its_command_line_and_exits_zero(guest):
    proc = spt_run("--mem=8", guest("hello"), "one", "two")
    assert proc.returncode == 0, proc.stderr
    assert "cmdline: 'one two'" in proc.stdout
