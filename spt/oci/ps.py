"""`spt-oci ps [--format table|json] ID`: the container's processes (the guest)."""

from __future__ import annotations

import json

from spt.oci import cli
from spt.oci.common import load_or_delegate
from spt.oci.errors import OciError
from spt.oci.state import status


def run(g, argv: list[str]) -> int:
    flags, positionals = cli.parse(argv, set(), {"format", "f"}, what="ps")
    container_id = positionals[0] if positionals else None
    if container_id is None:
        raise OciError("ps: expected an ID")
    _, state = load_or_delegate(g, container_id)
    if state is None:
        raise OciError("container %s does not exist" % container_id)
    fmt = flags.get("format") or flags.get("f") or "table"
    pids = [state.pid] if status(state) != "stopped" else []
    if fmt == "json":
        print(json.dumps(pids))
    elif fmt == "table":
        print("PID\n" + "".join("%d\n" % p for p in pids), end="")
    else:
        raise OciError("ps: --format %r: expected table or json" % fmt)
    return 0
