"""`spt`'s command-line surface: help, usage errors, a closed stdout.

Every command is reached by walking the tool's own command tree, so a
command added later is held to the same rules: `-h` is `--help`, help shows
what each option takes and no framework type labels, every usage error is
one line in spt's words with status 2, and a reader that goes away ends spt
as it ends `cat` (SIGPIPE, nothing on stderr).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import SPT, run

# What typer/click/pydantic would say; none of it may reach a user.
FRAMEWORK_WORDS = ("Value error", "Invalid value", "Got unexpected", "Missing argument",
                   "Missing option", "No such option", "No such command", "does not take a value",
                   "requires an argument", "Error:", "Traceback", "Try '")


# FILE, DEV=PATH, abi|manifest: what an option's value looks like in help
METAVAR = re.compile(r"[A-Z][A-Z_=.]*|[a-z]+(\|[a-z]+)+")


def spt(*args, **kwargs):
    return run([SPT, *map(str, args)], **kwargs)


def command_paths() -> list[list[str]]:
    """Every command and group of the tool, as argv prefixes."""
    import typer

    from spt.tool import app

    paths = []

    def walk(command, path):
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return paths


COMMANDS = command_paths()
# `spt entrypoint` and `spt unit exec` pass their command line on (to the
# launcher); entrypoint prints its own usage, which the launcher's options follow.
OWN_PARSERS = (["entrypoint"],)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "spt")
def test_dash_h_is_dash_dash_help(path):
    long, short = spt(*path, "--help"), spt(*path, "-h")
    assert long.returncode == 0 and short.returncode == 0, (long.stderr, short.stderr)
    assert short.stdout == long.stdout and long.stdout.strip()
    assert short.stderr == long.stderr == ""


@pytest.mark.parametrize("path", [p for p in COMMANDS if p not in OWN_PARSERS],
                         ids=lambda p: " ".join(p) or "spt")
def test_help_shows_what_options_take_and_no_type_labels(path):
    import typer
    from typer.core import TyperOption

    from spt.tool import app

    text = spt(*path, "--help").stdout
    assert "Usage: spt" in text
    assert not re.search(r"<[a-z][a-z_\[\]|]*>", text), text  # <bool>, <str>, <list[str]>
    assert not re.search(r"\{[A-Z]", text), text  # {KERNEL}
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    for param in command.params:
        if not isinstance(param, TyperOption) or param.hidden:
            continue
        lines = [line.split(None, 2) for line in text.splitlines()
                 if line.strip().startswith(param.opts[0] + " ") or
                 line.strip() == param.opts[0]]
        assert lines, (param.opts, text)
        words = lines[0]
        if param.is_flag:  # a flag shows nothing after its name: its help follows
            assert len(words) == 1 or not METAVAR.fullmatch(words[1]), (param.opts, words)
        else:  # an option shows what it takes, as declared
            assert words[1] == param.metavar, (param.opts, words)


def test_options_name_what_they_take():
    text = spt("unit", "install", "-h").stdout
    for form in ("--kernel PATH", "--mem MIB", "--root DIR", "--block DEV=PATH", "--arg ARG",
                 "--net DEV=IFACE"):
        assert form in text, (form, text)
    assert "Usage: spt unit install [OPTIONS] NAME\n" in text
    assert "Usage: spt inspect [OPTIONS] KERNEL\n" in spt("inspect", "-h").stdout
    assert "--query abi|manifest" in spt("inspect", "-h").stdout
    doctor = spt("doctor", "-h").stdout
    assert re.search(r"^  --json +Print", doctor, re.M), doctor


def assert_usage_error(proc, *contains: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("spt: "), proc.stderr
    assert proc.stdout == ""
    for word in FRAMEWORK_WORDS:
        assert word not in lines[0], (word, lines[0])
    for fragment in contains:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


BAD_COMMAND_LINES = [
    (["inspect", "--query", "foo", "x"], "--query takes one of abi, manifest"),
    (["inspect"], "KERNEL is missing"),
    (["inspect", "a", "b"], "unexpected argument 'b'"),
    (["inspect", "--json=1", "x"], "--json is a flag: it takes no value"),
    (["doctor", "--json", "true"], "unexpected argument 'true' (--json is a flag"),
    (["doctor", "--bogus"], "no option --bogus"),
    (["doctor", "--jsn"], "did you mean --json?"),
    (["bogus"], "no command 'bogus' (commands: "),
    (["unit", "bogus"], "no command 'bogus'"),
    (["--bogus"], "no option --bogus"),
    (["--version=3"], "--version is a flag"),
    (["--show-completion"], "--show-completion needs a value"),
    (["--show-completion", "sh"], "--show-completion takes one of bash, zsh, fish"),
    (["unit", "install", "x"], "--kernel PATH is required"),
    (["unit", "install", "x", "--kernel"], "--kernel needs a value: --kernel PATH"),
    (["unit", "check", "--root"], "--root needs a value: --root DIR"),
    (["unit", "show"], "NAME is missing"),
    (["unit", "install", "a", "b", "--kernel", "/k"], "unexpected argument 'b'"),
    (["manifest", "gen", "a"], "OUT.c is missing"),
    (["manifest", "check", "a", "b"], "unexpected argument 'b'"),
    (["policy"], "KERNEL is missing"),
    (["policy", "--bpf"], "--bpf needs a value: --bpf FILE"),
]


@pytest.mark.parametrize("argv,fragment", BAD_COMMAND_LINES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_usage_errors_are_one_line_in_spts_words(argv, fragment):
    line = assert_usage_error(spt(*argv), fragment)
    assert line.endswith("(see '%s --help')" % " ".join(["spt"] + [
        a for a in argv[:2] if not a.startswith("-") and a in ("inspect", "doctor", "unit",
                                                              "manifest", "policy", "install",
                                                              "check", "show", "gen")]))


@pytest.mark.parametrize("path", [[], ["unit"], ["manifest"]], ids=lambda p: " ".join(p) or "spt")
def test_a_group_alone_shows_its_help(path):
    proc = spt(*path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == spt(*path, "--help").stdout and proc.stderr == ""


# --- a closed stdout ------------------------------------------------------------

def run_into_closed_pipe(argv):
    """Run with stdout a pipe whose reader is already gone: the first write
    fails with EPIPE, by construction."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [
    ["doctor", "--json"], ["doctor"], ["inspect", "--json", "@hello"], ["inspect", "@hello"],
    ["inspect", "--query", "abi", "@hello"], ["policy", "--bpf", "-", "--mem=8", "@hello"],
    ["policy", "--mem=8", "@hello"], ["manifest", "check", "@manifest"], ["-h"],
    ["doctor", "-h"], ["--show-completion", "bash"], ["--version"],
], ids=" ".join)
def test_a_closed_stdout_ends_spt_by_sigpipe_silently(args, guest):
    from conftest import ROOT

    values = {"@hello": guest("hello"), "@manifest": str(ROOT / "guests/hello/manifest.json")}
    proc = run_into_closed_pipe([SPT, *(values.get(a, a) for a in args)])
    assert proc.stderr == ""
    assert proc.returncode == -signal.SIGPIPE, proc.returncode


def test_the_docs_pipeline_prints_nothing_but_the_head(guest):
    """`spt doctor --json | head -12` and `spt inspect --json K | head -c1`:
    whether the pipe closes before spt is done or not, stderr stays empty and
    the status is coreutils' (0, or 141 for SIGPIPE)."""
    script = ('set -o pipefail; "$0" doctor --json | head -12 >/dev/null; echo "doctor $?"; '
              '"$0" inspect --json "$1" | head -c1 >/dev/null; echo "inspect $?"')
    for _ in range(3):
        proc = run(["bash", "-c", script, SPT, guest("hello")])
        assert proc.stderr == "", proc.stderr
        statuses = dict(line.split() for line in proc.stdout.splitlines())
        assert set(statuses.values()) <= {"0", "141"}, statuses


# --- completion -------------------------------------------------------------------

@pytest.mark.parametrize("shell,marker", [("bash", "complete -o default -F _spt_completion spt"),
                                          ("zsh", "#compdef spt"),
                                          ("fish", "complete --command spt")])
def test_show_completion_honours_its_argument_under_any_parent_shell(shell, marker):
    """`make test-fast` runs pytest under /bin/sh: the parent shell must not
    matter, the argument decides."""
    proc = run(["/bin/sh", "-c", '"$0" --show-completion "$1"; status=$?; exit $status',
                SPT, shell])
    assert proc.returncode == 0, proc.stderr
    assert marker in proc.stdout, proc.stdout[:300]


def test_install_completion_writes_for_the_shell_named(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    proc = run(["/bin/sh", "-c", '"$0" --install-completion bash; status=$?; exit $status', SPT],
               env=env)
    assert proc.returncode == 0, proc.stderr
    assert "bash completion for spt installed in" in proc.stdout
    assert "_spt_completion" in (tmp_path / ".bash_completions" / "spt.sh").read_text()


def test_completion_offers_the_shells():
    env = dict(os.environ, _SPT_COMPLETE="complete_bash", COMP_WORDS="spt --show-completion ",
               COMP_CWORD="2")
    proc = run([SPT], env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["bash", "zsh", "fish"]


# --- spt policy names the kernel in full -------------------------------------------

def test_policy_names_the_kernel_in_full(guest, tmp_path):
    kernel = tmp_path / "test_hello_with_a_long_name.spt"
    shutil.copy(guest("hello"), kernel)
    text = spt("policy", "--mem=8", kernel)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("# spt:test_hello_with_a_long_name.spt: "), text.stdout[:80]
    doc = spt("policy", "--json", "--mem=8", kernel)
    import json

    parsed = json.loads(doc.stdout)
    assert parsed["name"] == "spt:test_hello_with_a_long_name.spt"
    assert parsed["plan"]["name"] == "spt:test_hello_"  # comm's 15 bytes, as ps shows it
