"""`spt-oci state ID`: the runtime spec's state object as JSON on stdout."""

from __future__ import annotations

import json

from spt.oci import cli
from spt.oci.common import load_or_delegate
from spt.oci.errors import OciError
from spt.oci.state import oci_state


def run(g, argv: list[str]) -> int:
    _, positionals = cli.parse(argv, set(), set(), what="state")
    (container_id,) = cli.one_id(positionals, "state")
    _, state = load_or_delegate(g, container_id)
    if state is None:
        raise OciError("container %s does not exist" % container_id)
    print(json.dumps(oci_state(state), indent=2))
    return 0
