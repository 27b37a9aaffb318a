"""What every `spt` command shares: one-line errors, JSON output."""

from __future__ import annotations

import functools
import json
import sys

import typer

from spt.errors import SptError


def fail(message: str, code: int = 1) -> "typer.Exit":
    typer.echo("spt: %s" % message, err=True)
    return typer.Exit(code)


def one_line_errors(func):
    """Turn SptError (and OSError) into `spt: MESSAGE` and exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SptError as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            raise fail("%s%s" % (exc.filename + ": " if exc.filename else "",
                                 exc.strerror or exc)) from None

    return wrapper


def print_json(doc) -> None:
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
