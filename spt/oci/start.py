"""`spt-oci start ID`: let the waiting init become the guest.

The init blocks opening the start FIFO for writing; opening it here for
reading releases it, and the byte it then writes says it is on its way to
the exec. Returns at once after that (the engines expect it to)."""

from __future__ import annotations

import os
import select
import time

from spt.oci import cli
from spt.oci.common import load_or_delegate
from spt.oci.errors import OciError
from spt.oci.state import alive, status

WAIT_SECONDS = 30


def run(g, argv: list[str]) -> int:
    _, positionals = cli.parse(argv, set(), set(), what="start")
    (container_id,) = cli.one_id(positionals, "start")
    store, state = load_or_delegate(g, container_id)
    if state is None:
        raise OciError("container %s does not exist" % container_id)
    now = status(state)
    if now != "created":
        raise OciError("cannot start container %s: it is %s, not created" % (container_id, now))
    fifo = store.fifo(container_id)
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise OciError("cannot start container %s: %s: %s"
                       % (container_id, fifo, exc.strerror)) from None
    try:
        _wait_for_byte(fd, state, container_id)
    finally:
        os.close(fd)
    os.unlink(fifo)
    store.save(state._replace(status="running"))
    return 0


def _wait_for_byte(fd: int, state, container_id: str) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if poller.poll(100):
            try:
                if os.read(fd, 1):
                    return
            except BlockingIOError:
                continue
        if not alive(state):
            raise OciError("cannot start container %s: its init is gone" % container_id)
    raise OciError("cannot start container %s: its init did not answer within %d s"
                   % (container_id, WAIT_SECONDS))
