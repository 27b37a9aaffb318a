"""`spt-oci kill [--all] ID [SIGNAL]`: signal the guest (default SIGTERM).

The guest is the container's only process, so --all signals the same one.
SIGTERM, SIGINT and SIGHUP end it at once (the trampoline's stop handler);
SIGKILL always does. A container that is not running gets "container not
running", the words containerd turns into "process already finished"."""

from __future__ import annotations

import os
import signal

from spt.oci import cli
from spt.oci.common import load_or_delegate
from spt.oci.errors import OciError
from spt.oci.state import status


def parse_signal(text: str) -> int:
    if text.isdigit():
        number = int(text)
        if 0 < number < signal.NSIG:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        number = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if isinstance(number, signal.Signals):
            return int(number)
    raise OciError("kill: %r is not a signal" % text)


def run(g, argv: list[str]) -> int:
    _, positionals = cli.parse(argv, {"all", "a"}, set(), what="kill")
    if len(positionals) not in (1, 2):
        raise OciError("kill: expected ID [SIGNAL], got %d operand(s)" % len(positionals))
    container_id = positionals[0]
    sig = parse_signal(positionals[1]) if len(positionals) == 2 else signal.SIGTERM
    _, state = load_or_delegate(g, container_id)
    if state is None:
        raise OciError("container %s does not exist" % container_id)
    if status(state) == "stopped":
        raise OciError("container not running")
    try:
        os.kill(state.pid, sig)
    except ProcessLookupError:
        raise OciError("container not running") from None
    return 0
