"""The one record spt-oci keeps per container, and where it lives.

Like runc's libcontainer: a small state machine (created, running, paused,
stopped) persisted as one JSON file per container under the runtime's root;
every command loads it, checks the transition, acts, saves. A container
exists only once create has checked everything and forked the init; a
refused create leaves nothing.
The root is `--root` when the engine gives one (containerd always does:
`/run/containerd/runc/<namespace>`), else `/run/spt-oci` (a rootful podman
never sends `--root`, not even to cleanup's `delete --force`). A container's
directory is `<root>/spt-oci@<ID>`: `@` is not allowed in an ID, so it can
never be mistaken for the directory a delegated runc or crun keeps under the
same root for the same ID.

What is stored is only what cannot be read back from the system: the init's
pid and its start time (a pid alone could be reused), the bundle, the
choice made at create (run here, or delegate to which runtime), the cgroup
made. "running" versus "stopped" is always read from /proc.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections import namedtuple

from spt.oci.errors import OciError

DEFAULT_ROOT = "/run/spt-oci"
OCI_VERSION = "1.0.2"
DIR_PREFIX = "spt-oci@"
STATE_FILE = "state.json"
START_FIFO = "start.fifo"
_ID = re.compile(r"^[A-Za-z0-9_+.-]{1,1024}$")


class State(namedtuple("State", "id bundle status pid pid_start created annotations "
                                "delegate cgroup kernel")):
    """One container. `status` is what the runtime last did ("created",
    "running"); `delegate` is the host runtime's path for a container that is
    not a unikernel (None: spt-oci runs it); `cgroup` the directory made for
    it (None: none)."""

    __slots__ = ()


def check_id(container_id: str) -> str:
    if not _ID.match(container_id) or container_id in (".", ".."):
        raise OciError("invalid container ID %r: 1 to 1024 of [A-Za-z0-9_+.-]" % container_id)
    return container_id


class Store:
    """The containers under one root."""

    def __init__(self, root: str | None):
        self.root = os.path.abspath(root or DEFAULT_ROOT)

    def dir(self, container_id: str) -> str:
        return os.path.join(self.root, DIR_PREFIX + check_id(container_id))

    def fifo(self, container_id: str) -> str:
        return os.path.join(self.dir(container_id), START_FIFO)

    def make_dir(self, container_id: str) -> str:
        """The container's directory, new: refuses an ID in use."""
        try:
            os.makedirs(self.root, 0o700, exist_ok=True)
        except OSError as exc:
            raise OciError("cannot make the state root %s: %s" % (self.root, exc.strerror)) from None
        path = self.dir(container_id)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            raise OciError("container with id %s already exists" % container_id) from None
        except OSError as exc:
            raise OciError("cannot make %s: %s" % (path, exc.strerror)) from None
        return path

    def load(self, container_id: str) -> State | None:
        path = os.path.join(self.dir(container_id), STATE_FILE)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OciError("cannot read %s: %s" % (path, exc.strerror)) from None
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
        try:
            doc = json.loads(raw)
            return State(**{field: doc.get(field) for field in State._fields})
        except (ValueError, TypeError, AttributeError):
            raise OciError("%s is damaged (delete --force %s removes it)"
                           % (path, container_id)) from None

    def require(self, container_id: str) -> State:
        state = self.load(container_id)
        if state is None:
            raise OciError("container %s does not exist" % container_id)
        return state

    def save(self, state: State) -> None:
        from spt.fileutil import write_atomic

        path = os.path.join(self.dir(state.id), STATE_FILE)
        try:
            write_atomic(path, json.dumps(state._asdict(), indent=1).encode(), 0o600)
        except OSError as exc:
            raise OciError("cannot write %s: %s" % (path, exc.strerror)) from None

    def forget(self, container_id: str) -> None:
        """Remove everything kept for the ID (a restart may reuse it)."""
        path = self.dir(container_id)
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OciError("cannot remove %s: %s" % (path, exc.strerror)) from None


# -- the process behind a state ----------------------------------------------

def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), None if gone or
    a zombie (reaped or not, it will never run again)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            return None
        raise
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _process_state(pid: int) -> str:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    return stat[stat.rindex(b")") + 2:].split()[0].decode()


def alive(state: State) -> bool:
    return bool(state.pid) and start_time(state.pid) == state.pid_start


def status(state: State) -> str:
    """What the container is now: created, running, paused or stopped."""
    if not alive(state):
        return "stopped"
    if state.status == "created":
        return "created"
    if _process_state(state.pid) in ("T", "t"):
        return "paused"
    return "running"


def oci_state(state: State) -> dict:
    """The runtime spec's state object, as `state` prints it."""
    now = status(state)
    doc = {"ociVersion": OCI_VERSION, "id": state.id, "status": now,
           "pid": state.pid if now != "stopped" else 0, "bundle": state.bundle,
           "created": state.created, "annotations": state.annotations or {}}
    return doc
