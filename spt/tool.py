"""`spt`: the operator's tool (inspect, policy, doctor, manifest, unit, ...).

The launch itself stays in `solo5-spt`; this typer application is everything
around it. Commands live in `spt/commands/`, one module each, and register
themselves; errors are one line on stderr and a non-zero status.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from spt import __version__

app = typer.Typer(
    name="spt",
    help="Inspect, check and operate Solo5 unikernels under the spt tender.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo("spt %s (spt ABI version 2)" % __version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """spt: a seccomp-sandboxed process tender for Solo5 unikernels."""


def _register_commands() -> None:
    import spt.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module("spt.commands." + info.name)
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main() -> None:
    """The `spt` executable: typer's app, with usage errors as one line
    (`spt: ...`, exit status 2) instead of a framed box."""
    import sys

    # typer vendors click; its exception classes are reached through BadParameter's module.
    exceptions = sys.modules[typer.BadParameter.__module__]
    try:
        code = app(standalone_mode=False)
    except exceptions.UsageError as exc:
        hint = " (see '%s --help')" % exc.ctx.command_path if exc.ctx else ""
        print("spt: %s%s" % (exc.format_message(), hint), file=sys.stderr)
        sys.exit(exc.exit_code)
    except exceptions.ClickException as exc:
        print("spt: %s" % exc.format_message(), file=sys.stderr)
        sys.exit(exc.exit_code)
    except (getattr(exceptions, "Abort", KeyboardInterrupt), KeyboardInterrupt):
        # (typer 0.29's vendored click has no Abort; a missing name here would
        # turn every SystemExit passing by, e.g. `spt unit exec`'s, into a traceback)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)  # the reader went away (`spt ... | head`): nothing left to say
    sys.exit(code if isinstance(code, int) else 0)
