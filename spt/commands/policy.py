"""`spt policy [LAUNCH OPTIONS] KERNEL`: the allow-list a launch would install.

The policy shown must be the policy enforced, so this command computes
nothing itself: it runs `solo5-spt` with the same arguments and
`SPT_PLAN_DUMP` set, and the launcher goes through the whole launch path
(image checks, device attach with the same fd numbers, policy rendering,
libseccomp compilation) and writes what it would hand the trampoline instead
of starting the guest. The rules printed, the `--bpf` bytes and the `--pfc`
text all come from that dump, and every view first checks that the rules
compile to the dump's BPF bytes; a refusal is the launcher's own line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import List, Optional

import typer

from spt.commands._common import fail, one_line_errors, print_json
from spt.errors import SptError

LAUNCHER_TIMEOUT = 60  # seconds; a dump takes well under one
BPF_INSTRUCTION_SIZE = 8  # struct sock_filter


class LauncherRefused(Exception):
    """solo5-spt refused the launch: its line goes out unchanged."""

    def __init__(self, line: str, status: int):
        super().__init__(line)
        self.line, self.status = line, status


def launcher_command() -> list[str]:
    """The solo5-spt installed next to this interpreter (the one a launch
    from this environment runs); the module itself if there is none."""
    path = os.path.join(os.path.dirname(sys.executable), "solo5-spt")
    if os.access(path, os.X_OK):
        return [path]
    return [sys.executable, "-m", "spt.launcher"]


def inherited_fds(launch_args: list[str]) -> tuple[int, ...]:
    """Open fds the launch options name (`--net:NAME=@FD`), found by the
    launcher's own parser: solo5-spt must find them at the same numbers, as
    in the real launch. Arguments it refuses, and fds that are not open, are
    left for solo5-spt to refuse in its own words."""
    from spt import launcher

    try:
        fds = launcher.inherited_fds(launcher.parse_argv(list(launch_args)))
    except (SptError, launcher.Usage, launcher.Version):
        return ()
    open_fds = []
    for fd in sorted(fd for fd in fds if fd > 2):
        try:
            os.fstat(fd)
        except OSError:
            continue
        open_fds.append(fd)
    return tuple(open_fds)


def dump_plan(launch_args: list[str]) -> tuple[dict, list[str]]:
    """Run solo5-spt with SPT_PLAN_DUMP; return its dump and any warnings it
    printed (e.g. for --x-exec-heap)."""
    with tempfile.TemporaryDirectory(prefix="spt-policy-") as tmp:
        path = os.path.join(tmp, "plan.json")
        env = dict(os.environ, SPT_PLAN_DUMP=path)
        try:
            proc = subprocess.run(launcher_command() + list(launch_args), env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, pass_fds=inherited_fds(launch_args),
                                  timeout=LAUNCHER_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise SptError("solo5-spt did not finish within %d s" % LAUNCHER_TIMEOUT) from None
        messages = proc.stderr.decode(errors="replace").splitlines()
        if proc.returncode < 0:
            raise SptError("solo5-spt died of signal %d" % -proc.returncode)
        if proc.returncode != 0:
            raise LauncherRefused(messages[0] if messages else
                                  "solo5-spt: exited with status %d" % proc.returncode,
                                  proc.returncode)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            raise SptError("solo5-spt described no launch (is a KERNEL given?)") from None
        except ValueError as exc:
            raise SptError("solo5-spt wrote an unreadable plan dump: %s" % exc) from None
    return doc, messages


def rules_from(doc: dict) -> list:
    """The dump's rules as `spt.policy.Rule` objects again."""
    from spt.policy import Condition, Rule

    try:
        return [Rule(r["syscall"], tuple(Condition(**c) for c in r["conditions"]),
                     r["reason"], r["source"]) for r in doc["rules"]]
    except (KeyError, TypeError) as exc:
        raise SptError("solo5-spt wrote a plan dump without valid rules (%s)" % exc) from None


def bpf_bytes(doc: dict) -> bytes:
    try:
        program = bytes.fromhex(doc["bpf"])
    except (KeyError, TypeError, ValueError):
        raise SptError("solo5-spt wrote a plan dump without a BPF program") from None
    if not program or len(program) % BPF_INSTRUCTION_SIZE:
        raise SptError("solo5-spt wrote a BPF program of %d bytes" % len(program))
    return program


def launch_title(launch_args: list[str]) -> str | None:
    """`spt:KERNEL` in full: the plan's name is cut to the 15 bytes of the
    process name (comm), the report's need not be."""
    from spt import launcher

    try:
        return launcher.process_title(launcher.parse_argv(list(launch_args)).kernel)
    except (SptError, launcher.Usage, launcher.Version):
        return None


def describe(doc: dict, title: str | None = None) -> dict:
    rules = rules_from(doc)
    return {
        "name": title or doc.get("plan", {}).get("name"),
        "default": "kill the process (SIGSYS)",
        "rules": [dict(r, words=rule.words().split(None, 1)[1]) for r, rule
                  in zip(doc["rules"], rules)],
        "syscalls": sorted({rule.syscall for rule in rules}),
        "bpf_instructions": len(bpf_bytes(doc)) // BPF_INSTRUCTION_SIZE,
        "bpf": doc["bpf"],
        "plan": doc.get("plan", {}),
    }


def render_text(doc: dict, title: str | None = None) -> str:
    rules = rules_from(doc)
    plan = doc.get("plan", {})
    words = [rule.words() for rule in rules]
    width = max(map(len, words), default=0)
    lines = [
        "# %s: %d rules over %d system calls, %d BPF instructions"
        % (title or plan.get("name", "?"), len(rules), len({r.syscall for r in rules}),
           len(bpf_bytes(doc)) // BPF_INSTRUCTION_SIZE),
        "# guest memory %d MiB; the guest keeps fds %s"
        % (plan.get("mem_size", 0) >> 20, " ".join(map(str, plan.get("keep_fds", [])))),
        "# any other call, and any call from another architecture or the x32 ABI,",
        "# kills the guest (SIGSYS)",
    ]
    for text, rule in zip(words, rules):
        lines.append("%-*s   # %s (%s)" % (width, text, rule.reason, rule.source))
    return "\n".join(lines)


def check_enforced(doc: dict) -> None:
    """The dump's rules compile to the very bytes the launch installs. The
    launcher proves a cached filter allows no more than its rules (spt/
    bpfcheck.py); one that allows less (a cache entry spt did not write)
    passes that proof, and is caught here, before any view shows rules."""
    from spt.bpfcompile import compile_bpf

    if compile_bpf(rules_from(doc)) != bpf_bytes(doc):
        from spt.cache import cache_dir

        raise SptError("the filter solo5-spt would install is not the one its rules compile "
                       "to (a launch cache entry in %s that spt did not write?); not showing "
                       "rules it does not enforce" % (cache_dir() or "no cache"))


def pfc_text(doc: dict) -> str:
    """libseccomp's text form of the dump's rules (check_enforced has
    compared them with the very bytes the launcher reported)."""
    from spt.bpfcompile import compile_pfc

    return compile_pfc(rules_from(doc))


def write_bpf(target: str, program: bytes) -> None:
    if target == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(program)
        sys.stdout.buffer.flush()
        return
    from spt.fileutil import write_atomic

    write_atomic(target, program)  # an OSError names `target`: one_line_errors prints it


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"ignore_unknown_options": True})
    @one_line_errors
    def policy(
        launch: List[str] = typer.Argument(
            ..., metavar="[LAUNCH OPTIONS] KERNEL",
            help="What you would give solo5-spt: --mem=N, --block:NAME=PATH, "
                 "--net:NAME=IFACE|@FD, ..., then KERNEL."),
        bpf: Optional[str] = typer.Option(
            None, "--bpf", metavar="FILE",
            help="Write the exact BPF program solo5-spt installs (struct sock_filter[]) "
                 "to FILE, or to stdout with '-'."),
        pfc: bool = typer.Option(False, "--pfc", help="Print libseccomp's text form instead."),
        as_json: bool = typer.Option(False, "--json", help="Print the rules as JSON instead."),
    ) -> None:
        """Show the system-call allow-list solo5-spt installs for a launch.

        Give the arguments you would give solo5-spt. One rule a line, its
        argument conditions in plain words. solo5-spt itself computes it,
        down to the device fd numbers: the devices are attached for real
        (block files opened and locked, TAPs opened) and released at once."""
        if pfc and as_json:
            raise fail("--pfc and --json are two views; choose one")
        if bpf == "-" and (pfc or as_json):
            raise fail("--bpf - writes the binary program to stdout; it cannot be combined "
                       "with --pfc or --json")
        try:
            doc, messages = dump_plan(launch)
        except LauncherRefused as refused:
            typer.echo(refused.line, err=True)
            raise typer.Exit(refused.status) from None
        for message in messages:
            typer.echo(message, err=True)
        check_enforced(doc)
        if bpf is not None:
            program = bpf_bytes(doc)
            write_bpf(bpf, program)
            if bpf == "-":
                return
            if not (pfc or as_json):
                typer.echo("wrote %d BPF instructions (%d bytes) to %s"
                           % (len(program) // BPF_INSTRUCTION_SIZE, len(program), bpf))
                return
        if pfc:
            typer.echo(pfc_text(doc), nl=False)
        elif as_json:
            print_json(describe(doc, launch_title(launch)))
        else:
            typer.echo(render_text(doc, launch_title(launch)))
