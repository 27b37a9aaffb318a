"""What every `spt` command shares: one-line errors, JSON output, and the
typer classes that make help and usage errors spt's own."""

from __future__ import annotations

import functools
import json
import sys

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from spt.errors import SptError


def fail(message: str, code: int = 1) -> "typer.Exit":
    typer.echo("spt: %s" % message, err=True)
    return typer.Exit(code)


def one_line_errors(func):
    """Turn SptError (and OSError) into `spt: MESSAGE` and exit 1. A closed
    stdout is not an error of the command: `spt.tool.main` ends quietly."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SptError as exc:
            raise fail(str(exc)) from None
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise fail("%s%s" % (exc.filename + ": " if exc.filename else "",
                                 exc.strerror or exc)) from None

    return wrapper


def print_json(doc) -> None:
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


# --- help and usage errors ------------------------------------------------------

# typer 0.29 vendors click; its exception classes are reached through BadParameter's module.
CLICK_ERRORS = sys.modules[typer.BadParameter.__module__]


class CommandLineError(Exception):
    """A command line spt cannot take: `spt.tool.main` prints one line and
    exits 2."""

    def __init__(self, ctx, message: str):
        super().__init__(message)
        self.ctx, self.message = ctx, message


def _argument_name(param) -> str:
    name = param.metavar or param.name.upper()
    if param.nargs != 1 and not param.metavar:
        name += "..."
    return name if param.required else "[%s]" % name


class _SptHelp:
    """The usage line names arguments as declared (`KERNEL`, `[NAME]`, where
    typer 0.29 writes `{KERNEL}`), and the help lists them without typer's
    type labels (`KERNEL <str>`); options show their metavar, flags nothing."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except CLICK_ERRORS.UsageError as exc:
            if exc.ctx is None:  # the option parser raises without one
                exc.ctx = ctx
            raise

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.options_metavar else []
        pieces += [_argument_name(p) for p in self.get_params(ctx)
                   if isinstance(p, TyperArgument)]
        if isinstance(self, TyperGroup):
            pieces.append(self.subcommand_metavar)
        return pieces

    def format_options(self, ctx, formatter):
        params = self.get_params(ctx)
        arguments = [(p.metavar or p.name.upper(), p.help or "") for p in params
                     if isinstance(p, TyperArgument) and not p.hidden]
        options = [p.get_help_record(ctx) for p in params if not isinstance(p, TyperArgument)]
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        if any(options):
            with formatter.section("Options"):
                formatter.write_dl([record for record in options if record])
        if isinstance(self, TyperGroup):
            self.format_commands(ctx, formatter)


class SptCommand(_SptHelp, TyperCommand):
    def parse_args(self, ctx, args):
        given, allowed = list(args), ctx.allow_extra_args
        ctx.allow_extra_args = True
        try:
            rest = super().parse_args(ctx, args)
        finally:
            ctx.allow_extra_args = allowed
        if rest and not allowed and not ctx.resilient_parsing:
            raise CommandLineError(ctx, _extra_argument(self, ctx, given, rest[0]))
        return rest


class SptGroup(_SptHelp, TyperGroup):
    def resolve_command(self, ctx, args):
        name = args[0]
        if self.get_command(ctx, name) is None and not ctx.resilient_parsing:
            if name.startswith("-"):
                self.parse_args(ctx, args)  # an unknown option: the parser names it
            raise CommandLineError(ctx, "no command %r (commands: %s)"
                                   % (name, ", ".join(self.list_commands(ctx))))
        return super().resolve_command(ctx, args)


def _extra_argument(command, ctx, args: list[str], extra: str) -> str:
    message = "unexpected argument %r" % extra
    at = args.index(extra) if extra in args else -1
    if at > 0 and any(isinstance(p, TyperOption) and p.is_flag and args[at - 1] in p.opts
                      for p in command.get_params(ctx)):
        message += " (%s is a flag: it takes no value)" % args[at - 1]
    return message


class SptTyper(typer.Typer):
    """typer.Typer whose groups and commands are spt's classes, with plain
    help (no rich panels): every command module builds on this."""

    def __init__(self, **kwargs):
        kwargs.setdefault("cls", SptGroup)
        kwargs.setdefault("rich_markup_mode", None)
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)

    def command(self, *args, **kwargs):
        kwargs.setdefault("cls", SptCommand)
        return super().command(*args, **kwargs)
