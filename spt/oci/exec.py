"""`spt-oci exec ... ID`: refused for a unikernel (there is nothing to exec
into: the guest is the container's one process and has no processes of its
own); a delegated container's exec goes to its runtime."""

from __future__ import annotations

from spt.oci import cli
from spt.oci.common import load_or_delegate
from spt.oci.errors import OciError

BOOLEANS = {"detach", "d", "tty", "t", "no-new-privs"}
VALUED = {"process", "p", "pid-file", "console-socket", "cwd", "env", "e", "user", "u",
          "preserve-fds", "cap", "c", "process-label", "apparmor", "additional-gids", "g",
          "cgroup"}


def run(g, argv: list[str]) -> int:
    _, positionals = cli.parse(argv, BOOLEANS, VALUED, what="exec", stop_at_positional=True)
    if not positionals:
        raise OciError("exec: expected an ID")
    container_id = positionals[0]
    _, state = load_or_delegate(g, container_id)
    if state is None:
        raise OciError("container %s does not exist" % container_id)
    raise OciError("exec is not possible in container %s: it is a unikernel, with no "
                   "processes to exec into (use the guest's own network services)"
                   % container_id)
