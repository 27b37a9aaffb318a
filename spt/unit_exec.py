"""What spt@NAME.service runs: `python -m spt.unit_exec NAME`.

Reads /etc/spt/NAME.conf and becomes the launcher in this same process (no
fork, no second interpreter), named spt:NAME. It imports only the
configuration parser and the launcher, and the parser needs nothing the
launcher does not load anyway (no dataclasses, typing or re; shlex only for
an `args` value with quotes or backslashes): this module and the parser add
about 1 ms of imports to the launcher's. The unit's start still costs a few
milliseconds more than `solo5-spt`'s, for `python -I -m` (site and runpy,
which solo5-spt, a `python -S` script, skips). `spt unit exec NAME` (the typer
tool, a few hundred milliseconds more to import) runs the same function.

A configuration it refuses ends in one line on stderr and exit status 78
(EX_CONFIG), which the unit does not restart for; everything after that is
the launcher's (its refusals exit 1, a started guest exits as it exits).
"""

from __future__ import annotations

import os
import sys

from spt import unitconf
from spt.errors import SptError


def run(name: str, root: str = "/") -> None:
    """Read the configuration of instance `name` and launch it; never returns."""
    from spt import launcher

    try:
        config = unitconf.read(name, unitconf.check_root(root))
    except SptError as exc:
        print("spt: %s" % exc, file=sys.stderr)
        sys.exit(unitconf.EX_CONFIG)
    os.environ["SPT_NAME"] = name
    # The unit's own sandbox is the rest of the jail: the guest gets the
    # jail's rlimits (docs/security.md).
    launcher.main(["--jail=limits", *unitconf.to_argv(config, root)])
    sys.exit(0)  # main() exits or execs, or returns after SPT_PLAN_DUMP wrote the plan


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m spt.unit_exec NAME", file=sys.stderr)
        sys.exit(unitconf.EX_CONFIG)
    run(argv[0])


if __name__ == "__main__":
    main()
