"""How spt-oci reports a refusal: one line on stderr, one JSON object in --log."""

from __future__ import annotations

import json
import os
import sys
import time

PROG = "spt-oci"


class OciError(Exception):
    """A refusal: its message is the one line the operator (and the engine) reads."""


def _rfc3339_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%09dZ" % int(now % 1 * 1e9)


def report(message: str, log_path: str | None, log_format: str) -> None:
    """Write the error where the engines look. Podman parses the whole --log
    file as one JSON value and the file is reused across starts, so it is
    truncated first: it then holds exactly this one object. containerd reads
    the last error object of the same file; kill's callers read stderr."""
    line = "%s: %s" % (PROG, message)
    if log_path:
        if log_format == "json":
            # The engines name the runtime themselves ("OCI runtime error:
            # spt-oci: MSG"), so the object's msg is the bare message.
            data = json.dumps({"level": "error", "msg": message, "time": _rfc3339_now()}) + "\n"
        else:
            data = line + "\n"
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as log:
                log.write(data)
        except OSError:
            pass  # stderr below still carries the message
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass
