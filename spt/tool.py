"""`spt`: the operator's tool (inspect, policy, doctor, manifest, unit, ...).

The launch itself stays in `solo5-spt`; this typer application is everything
around it. Commands live in `spt/commands/`, one module each, and register
themselves. What the user sees of the framework is spt's own: help shows
each option with what it takes (`--mem MIB`, `--root DIR`; a flag shows
nothing), `-h` is `--help` everywhere, every error is one line in spt's
words (`spt: ...`) and a non-zero status, and a reader that goes away
(`spt doctor --json | head`) ends spt as it ends `cat`: by SIGPIPE,
silently.
"""

from __future__ import annotations

import enum
import importlib
import os
import pkgutil
import signal
import sys

import typer
from typer.core import TyperArgument, TyperOption

from spt import __version__
from spt.commands._common import CLICK_ERRORS, CommandLineError, SptTyper

PROG = "spt"
COMPLETE_VAR = "_SPT_COMPLETE"
USAGE_STATUS = 2  # a command line spt cannot take (1: a command that failed)


class Shell(str, enum.Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


app = SptTyper(
    name=PROG,
    help="Inspect, check and operate Solo5 unikernels under the spt tender.",
    no_args_is_help=True,
    add_completion=False,  # spt's own options below take the shell as written
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo("spt %s (spt ABI version 2)" % __version__)
        raise typer.Exit()


def _show_completion(value: Shell | None) -> None:
    if value is not None:
        from typer.completion import get_completion_script

        typer.echo(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR,
                                         shell=value.value))
        raise typer.Exit()


def _install_completion(value: Shell | None) -> None:
    if value is not None:
        from typer.completion import install

        shell, path = install(shell=value.value, prog_name=PROG, complete_var=COMPLETE_VAR)
        typer.echo("%s completion for spt installed in %s; a new shell has it" % (shell, path))
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
    show_completion: Shell = typer.Option(
        None, "--show-completion", metavar="bash|zsh|fish", callback=_show_completion,
        is_eager=True, expose_value=False, help="Print the completion script for that shell."),
    install_completion: Shell = typer.Option(
        None, "--install-completion", metavar="bash|zsh|fish", callback=_install_completion,
        is_eager=True, expose_value=False,
        help="Install the completion script in that shell's start-up files."),
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


# --- help and usage errors in spt's words ---------------------------------------

def fill_metavars(command) -> None:
    """Every option that takes a value shows one (typer would show `<str>`):
    its declared metavar, else its name in capitals."""
    for param in command.params:
        if isinstance(param, TyperOption) and not param.is_flag and not param.metavar:
            param.metavar = param.name.upper()
    for sub in getattr(command, "commands", {}).values():
        fill_metavars(sub)


def _option_form(param) -> str:
    """`--mem MIB`, `--json`: the option as a user writes it."""
    name = max(param.opts, key=len)
    return name if param.is_flag else "%s %s" % (name, param.metavar)


def _choices(param) -> list[str] | None:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or not descriptor.is_choice or not descriptor.choices:
        return None
    return [str(getattr(c, "value", c)) for c in descriptor.choices]


def usage_message(exc) -> str:
    """typer's usage errors as one line in spt's words."""
    errors = CLICK_ERRORS
    param = getattr(exc, "param", None)
    if isinstance(exc, errors.NoSuchOption):
        hint = ""
        if exc.possibilities:
            hint = " (did you mean %s?)" % " or ".join(sorted(exc.possibilities))
        return "no option %s%s" % (exc.option_name, hint)
    if isinstance(exc, errors.BadOptionUsage):
        option = _option_named(exc.ctx, exc.option_name)
        if option is not None and option.is_flag:
            return "%s is a flag: it takes no value" % exc.option_name
        if option is not None:
            return "%s needs a value: %s" % (exc.option_name, _option_form(option))
    if isinstance(exc, errors.MissingParameter) and param is not None:
        if isinstance(param, TyperArgument):
            return "%s is missing" % (param.metavar or param.name.upper())
        return "%s is required" % _option_form(param)
    if isinstance(exc, errors.BadParameter) and param is not None:
        name = (max(param.opts, key=len) if isinstance(param, TyperOption)
                else param.metavar or param.name.upper())
        choices = _choices(param)
        if choices:
            return "%s takes one of %s" % (name, ", ".join(choices))
        return "%s: %s" % (name, _plain(exc.message))
    return _plain(exc.format_message())


def _option_named(ctx, name: str):
    if ctx is None:
        return None
    return next((p for p in ctx.command.get_params(ctx) if isinstance(p, TyperOption)
                 and name in p.opts + p.secondary_opts), None)


def _plain(text: str) -> str:
    """Framework phrasing, made one line in lower case."""
    text = " ".join(text.replace("Value error, ", "").split()).rstrip(".")
    return text[:1].lower() + text[1:]


# --- the executable -------------------------------------------------------------

def _reader_gone() -> None:
    """stdout's reader went away: end as coreutils do, killed by SIGPIPE
    (the shell reports 141), with nothing on stderr."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGPIPE})
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(128 + signal.SIGPIPE)  # only if SIGPIPE could not end the process


def _stdout_reader_is_gone() -> bool:
    """Is stdout a pipe (or socket) that nobody reads any more? The kernel
    says so in poll(2) as POLLERR."""
    import select

    poller = select.poll()
    try:
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (OSError, ValueError):
        return False
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def main(argv: list[str] | None = None) -> None:
    """The `spt` executable: one line for every usage error (`spt: ...
    (see 'spt CMD --help')`, exit status 2), as for every failed command
    (status 1)."""
    errors = CLICK_ERRORS
    command = typer.main.get_command(app)
    fill_metavars(command)
    if os.environ.get(COMPLETE_VAR):
        from typer.completion import completion_init

        completion_init()
    try:
        code = command.main(args=argv, prog_name=PROG, standalone_mode=False)
        sys.stdout.flush()
    except BrokenPipeError:
        _reader_gone()
    except SystemExit as exc:
        # typer's main turns a broken pipe in its own writes (help, the
        # completion script) into exit status 1, with stdout wrapped so that
        # nothing complains at exit; a guest's or the launcher's exit passes
        wrapped = type(sys.stdout).__name__ == "PacifyFlushWrapper"
        if exc.code == 1 and wrapped and _stdout_reader_is_gone():
            _reader_gone()
        raise
    except errors.NoArgsIsHelpError as exc:  # `spt`, `spt unit`: what is there
        typer.echo(exc.ctx.get_help())
        sys.exit(0)
    except (CommandLineError, errors.UsageError) as exc:
        path = exc.ctx.command_path if exc.ctx else PROG
        message = exc.message if isinstance(exc, CommandLineError) else usage_message(exc)
        print("spt: %s (see '%s --help')" % (message, path), file=sys.stderr)
        sys.exit(USAGE_STATUS)
    except errors.ClickException as exc:
        print("spt: %s" % _plain(exc.format_message()), file=sys.stderr)
        sys.exit(exc.exit_code)
    except (getattr(errors, "Abort", KeyboardInterrupt), KeyboardInterrupt):
        # (typer 0.29's vendored click has no Abort; a missing name here would
        # turn every SystemExit passing by, e.g. `spt unit exec`'s, into a traceback)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
