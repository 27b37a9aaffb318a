"""cgroupsPath, honoured where the host allows it.

On a unified (cgroup2) hierarchy at /sys/fs/cgroup the init gets its own
cgroup: cgroupsPath as a path under the root (cgroupfs driver), or with
`--systemd-cgroup` the `SLICE:PREFIX:NAME` form turned into the directory
systemd would use (SLICE expanded along its dashes, then PREFIX-NAME.scope).
The directory is made here, without asking systemd over D-Bus; the memory
limit goes to memory.max where that controller is enabled. A host without
cgroup2 there (cgroup v1 or hybrid), or `--cgroup-manager disabled`, leaves
the guest in the caller's cgroup, as crun does with cgroups disabled.
"""

from __future__ import annotations

import errno
import os
import time

from spt.oci.errors import OciError

CGROUP_ROOT = "/sys/fs/cgroup"


def unified() -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 4 and fields[4] == CGROUP_ROOT and right.split()[0] == "cgroup2":
                    return True
    except OSError:
        pass
    return False


def systemd_path(spec: str) -> str:
    """`machine.slice:libpod:ID` -> machine.slice/libpod-ID.scope;
    `a-b.slice:p:n` -> a.slice/a-b.slice/p-n.scope."""
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts[::2]):
        raise OciError("cgroupsPath %r: the systemd driver expects SLICE:PREFIX:NAME" % spec)
    slice_, prefix, name = parts
    if not slice_.endswith(".slice") or "/" in spec:
        raise OciError("cgroupsPath %r: %r is not a slice" % (spec, slice_))
    dirs, stem = [], slice_[:-len(".slice")]
    pieces = stem.split("-") if stem != "-" else []
    for i in range(1, len(pieces) + 1):
        dirs.append("-".join(pieces[:i]) + ".slice")
    unit = ("%s-%s.scope" % (prefix, name)) if prefix else name + ".scope"
    return "/".join(dirs + [unit])


def place(cgroups_path: str | None, *, systemd: bool, manager: str | None,
          memory_limit: int | None) -> str | None:
    """Make the container's cgroup; its directory, or None where not honoured."""
    if manager == "disabled" or not cgroups_path or not unified():
        return None
    relative = systemd_path(cgroups_path) if systemd or manager == "systemd" \
        else cgroups_path.lstrip("/")
    path = os.path.normpath(os.path.join(CGROUP_ROOT, relative))
    if not path.startswith(CGROUP_ROOT + "/"):
        raise OciError("cgroupsPath %r leaves %s" % (cgroups_path, CGROUP_ROOT))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OciError("cannot make cgroup %s: %s" % (path, exc.strerror)) from None
    if memory_limit is not None and os.path.exists(os.path.join(path, "memory.max")):
        try:
            with open(os.path.join(path, "memory.max"), "w") as f:
                f.write(str(memory_limit))
        except OSError as exc:
            remove(path)
            raise OciError("cannot set memory.max of %s: %s" % (path, exc.strerror)) from None
    return path


def join(path: str) -> None:
    """Move the calling process into the cgroup ("0": the writer itself,
    whatever its pid in its own namespace)."""
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write("0")
    except OSError as exc:
        raise OciError("cannot join cgroup %s: %s" % (path, exc.strerror)) from None


def remove(path: str | None, timeout: float = 5) -> None:
    """rmdir the container's cgroup once its last process is gone."""
    if not path or not path.startswith(CGROUP_ROOT + "/"):
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise OciError("cannot remove cgroup %s: %s" % (path, exc.strerror)) from None
            time.sleep(0.05)
