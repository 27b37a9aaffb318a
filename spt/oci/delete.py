"""`spt-oci delete [--force] ID`: forget the container, so the ID can be reused.

A stopped container's state (and cgroup) go; a live one only with --force,
which SIGKILLs the guest first. `delete --force` of an ID that does not
exist succeeds, as runc's does (containerd's shim sends it after the plain
delete already removed the container)."""

from __future__ import annotations

import os
import signal
import time

from spt.oci import cgroup, cli, delegate
from spt.oci.errors import OciError
from spt.oci.state import Store, alive, check_id, status

GONE_SECONDS = 10


def run(g, argv: list[str]) -> int:
    flags, positionals = cli.parse(argv, {"force", "f"}, set(), what="delete")
    (container_id,) = cli.one_id(positionals, "delete")
    force = bool(flags.get("force") or flags.get("f"))
    store = Store(g.root)
    try:
        state = store.load(check_id(container_id))
    except OciError:
        if not force:
            raise
        state = None  # damaged: --force removes what is there
    if state is None:
        if force:
            store.forget(container_id)  # a directory a crashed create may have left
            return 0
        raise OciError("container %s does not exist" % container_id)
    if state.delegate:
        code = delegate.call(state.delegate, g.argv)
        if code == 0 or force:
            store.forget(container_id)
        return code
    now = status(state)
    if now != "stopped":
        if not force:
            raise OciError("cannot delete container %s that is not stopped: %s"
                           % (container_id, now))
        _kill_and_wait(state)
    cgroup.remove(state.cgroup)
    store.forget(container_id)
    return 0


def _kill_and_wait(state) -> None:
    try:
        os.kill(state.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + GONE_SECONDS
    while alive(state):
        if time.monotonic() > deadline:
            raise OciError("container %s: pid %d did not end after SIGKILL" % (state.id, state.pid))
        time.sleep(0.02)
