"""Containers that are not unikernels go to the host's runc or crun, unchanged.

Kubernetes' pause sandbox and any ordinary image in a pod served by the spt
RuntimeClass reach spt-oci too. create decides once (spt/oci/bundle.py reads
the kernel file's ELF notes), remembers the choice in the container's state,
and every later command for that ID is handed to the same runtime with the
very argv spt-oci got. Which runtime: `crun` when the engine sent crun's
`--cgroup-manager` flag (podman does, with --cgroups=disabled; runc would
refuse it), else `runc` (the runtime containerd's shim speaks), else
whichever of the two is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from spt.oci.errors import OciError

SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def choose(argv: list[str]) -> str:
    wants_crun = any(a == "--cgroup-manager" or a.startswith("--cgroup-manager=") for a in argv)
    order = ("crun", "runc") if wants_crun else ("runc", "crun")
    for name in order:
        path = shutil.which(name, path=os.environ.get("PATH", "") + ":" + SEARCH_PATH)
        if path and os.path.realpath(path) != os.path.realpath(sys.argv[0]):
            return path
    raise OciError("this container is not an spt unikernel and there is no runc or crun "
                   "to run it")


def hand_off(runtime: str, argv: list[str]) -> None:
    """Become `runtime ARGV` (never returns)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(runtime, [runtime] + argv)
    except OSError as exc:
        raise OciError("cannot run %s: %s" % (runtime, exc.strerror)) from None


def call(runtime: str, argv: list[str]) -> int:
    """Run `runtime ARGV` with every fd spt-oci has (conmon's and the shim's
    pipes, --preserve-fds), and return its status: for create and delete,
    which must update spt-oci's own record afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        return subprocess.call([runtime] + argv, close_fds=False)
    except OSError as exc:
        raise OciError("cannot run %s: %s" % (runtime, exc.strerror)) from None
