"""`spt-oci features` (the runtime spec's features document) and `--version`."""

from __future__ import annotations

import json

from spt import __version__
from spt.oci.bundle import NAMESPACES
from spt.oci.state import OCI_VERSION


def version() -> int:
    print("spt-oci version %s\nspec: %s" % (__version__, OCI_VERSION))
    return 0


def run(g, argv: list[str]) -> int:
    doc = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": [],
        "mountOptions": ["bind", "rbind", "ro", "rw"],
        "linux": {
            "namespaces": list(NAMESPACES),
            "capabilities": [],
            "cgroup": {"v1": False, "v2": True, "systemd": True, "systemdUser": False},
            "seccomp": {"enabled": True, "actions": [], "operators": [], "archs": []},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {
            "org.spt.oci.delegate": "containers whose process is not an spt unikernel run "
                                    "under the host's runc or crun",
        },
    }
    print(json.dumps(doc, indent=2))
    return 0
