"""`spt debug [LAUNCH OPTIONS] KERNEL [ARGS]`: solo5-spt --gdb and gdb in one terminal.

The two steps of docs/debugging.md in one command: solo5-spt --gdb on a
free localhost port (in a session of its own, so a Ctrl-C typed in gdb
interrupts the guest and does not end the launch), then gdb in the
foreground connected to it with KERNEL's symbols. The exit status is the
guest's, as solo5-spt's.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from typing import List, Optional

import typer

from spt.commands._common import fail, one_line_errors
from spt.commands.policy import inherited_fds, launcher_command
from spt.errors import SptError

CONNECT_TIMEOUT = 120  # seconds gdb keeps retrying while the launch prepares


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kernel_of(launch: List[str]) -> str:
    """KERNEL as solo5-spt's own parser finds it (its refusals are its own)."""
    from spt import launcher

    for arg in launch:
        if arg == "--":
            break
        if arg.partition("=")[0] in ("--gdb", "--gdb-port"):
            raise SptError("spt debug runs solo5-spt --gdb itself: give --gdb-port to spt debug")
    try:
        return launcher.parse_argv(list(launch)).kernel
    except (launcher.Usage, launcher.Version):
        raise SptError("spt debug: give the launch options, then KERNEL") from None


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"ignore_unknown_options": True})
    @one_line_errors
    def debug(
        launch: List[str] = typer.Argument(
            ..., metavar="[LAUNCH OPTIONS] KERNEL [ARGS]",
            help="What you would give solo5-spt: --mem=N, --block:NAME=PATH, ..., KERNEL, "
                 "the guest's arguments."),
        gdb_port: Optional[int] = typer.Option(
            None, "--gdb-port", min=1, max=65535, metavar="PORT",
            help="The port (default: a free one)."),
    ) -> None:
        """Run a guest under gdb: solo5-spt --gdb, then gdb attached to it.

        The guest stops before its first instruction; gdb starts with the
        unikernel's symbols. Exit status: the guest's."""
        kernel = kernel_of(launch)
        gdb = shutil.which("gdb")
        if gdb is None:
            raise fail("gdb is not installed (Debian package gdb)")
        port = gdb_port or free_port()
        guest = subprocess.Popen(launcher_command() + ["--gdb", "--gdb-port=%d" % port]
                                 + list(launch), stdin=subprocess.DEVNULL,
                                 pass_fds=inherited_fds(launch), start_new_session=True)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is gdb's
        try:
            subprocess.run([gdb, "-q", "-ex", "set tcp connect-timeout %d" % CONNECT_TIMEOUT,
                            "-ex", "target remote localhost:%d" % port, kernel])
            status = guest.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
            if guest.poll() is None:
                guest.kill()
                guest.wait()
        raise typer.Exit(status if status >= 0 else 128 - status)
