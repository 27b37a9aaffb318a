"""`spt-oci pause ID` / `resume ID`: stop and continue the guest.

SIGSTOP and SIGCONT: the guest can neither catch nor block them, and a
PID 1 receives them from its parent namespace like SIGKILL. The state shows
"paused" while the process is stopped."""

from __future__ import annotations

import os
import signal

from spt.oci import cli
from spt.oci.common import load_or_delegate
from spt.oci.errors import OciError
from spt.oci.state import status


def _signal(g, argv: list[str], what: str, expected: str, sig: int) -> int:
    _, positionals = cli.parse(argv, set(), set(), what=what)
    (container_id,) = cli.one_id(positionals, what)
    _, state = load_or_delegate(g, container_id)
    if state is None:
        raise OciError("container %s does not exist" % container_id)
    now = status(state)
    if now != expected:
        raise OciError("cannot %s container %s: it is %s, not %s"
                       % (what, container_id, now, expected))
    try:
        os.kill(state.pid, sig)
    except ProcessLookupError:
        raise OciError("container not running") from None
    return 0


def pause(g, argv: list[str]) -> int:
    return _signal(g, argv, "pause", "running", signal.SIGSTOP)


def resume(g, argv: list[str]) -> int:
    return _signal(g, argv, "resume", "paused", signal.SIGCONT)
