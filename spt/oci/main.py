"""spt-oci's entry point: global flags, the command, one-line refusals.

    spt-oci [--root DIR] [--log FILE] [--log-format text|json]
            [--systemd-cgroup] [--cgroup-manager cgroupfs|systemd|disabled]
            COMMAND [FLAGS] ID [ARGS]
"""

from __future__ import annotations

import sys
from collections import namedtuple

from spt.oci import cli
from spt.oci.errors import OciError, report

USAGE = """\
usage: spt-oci [GLOBAL FLAGS] COMMAND [FLAGS] ID [ARGS]

An OCI runtime (runc's command line) for Solo5 spt unikernels; containers
that are not unikernels are handed to the host's runc or crun.

Commands: create, start, state, kill, delete, ps, pause, resume, exec,
features; spt-oci --version.
Global flags: --root DIR (default /run/spt-oci), --log FILE,
--log-format text|json, --systemd-cgroup, --cgroup-manager MANAGER, --debug.
See docs/oci.md.
"""

Globals = namedtuple("Globals", "root log log_format systemd manager argv")
GLOBAL_BOOLEANS = {"systemd-cgroup", "debug", "help", "h", "version", "v"}
GLOBAL_VALUED = {"root", "log", "log-format", "cgroup-manager", "criu", "rootless"}


def _command(name: str):
    from spt.oci import (create, delete, exec as exec_cmd, features, kill, pause, ps, start,
                         status)

    return {"create": create.run, "start": start.run, "state": status.run, "kill": kill.run,
            "delete": delete.run, "ps": ps.run, "pause": pause.pause, "resume": pause.resume,
            "exec": exec_cmd.run, "features": features.run}.get(name)


def run(argv: list[str], g_out: list) -> int:
    flags, rest = cli.parse(argv, GLOBAL_BOOLEANS, GLOBAL_VALUED, what="spt-oci",
                            stop_at_positional=True)
    g = Globals(root=flags.get("root"), log=flags.get("log"),
                log_format=flags.get("log-format", "text"),
                systemd=bool(flags.get("systemd-cgroup")), manager=flags.get("cgroup-manager"),
                argv=list(argv))
    g_out.append(g)
    if g.log_format not in ("text", "json"):
        raise OciError("--log-format %r: expected text or json" % g.log_format)
    if flags.get("version") or flags.get("v"):
        from spt.oci import features

        return features.version()
    if flags.get("help") or flags.get("h"):
        print(USAGE, end="")
        return 0
    if not rest:
        raise OciError("no command given (see spt-oci --help)")
    command = _command(rest[0])
    if command is None:
        raise OciError("unknown command %r (see spt-oci --help)" % rest[0])
    return command(g, rest[1:])


def main(argv: list[str] | None = None) -> None:
    """The one broad catch: every failure is one line (and one JSON object
    in --log) and exit status 1."""
    from spt.errors import SptError

    argv = sys.argv[1:] if argv is None else argv
    g_out: list = []
    try:
        code = run(argv, g_out)
    except (OciError, SptError) as exc:
        message, code = str(exc), 1
    except KeyboardInterrupt:
        message, code = "interrupted", 130
    except Exception as exc:  # noqa: BLE001 - never a traceback
        message, code = "internal error: %s: %s" % (type(exc).__name__, exc), 1
    else:
        message = None
    if message is not None:
        g = g_out[0] if g_out else None
        report(message, g.log if g else None, g.log_format if g else "text")
    sys.exit(code)
