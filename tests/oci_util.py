"""Bundles, runtime calls and engines for spt-oci's tests.

`Runtime` calls `spt-oci` directly with a private `--root` (never the
host's /run) and plays the engine's part: the test process is a child
subreaper (as conmon and containerd's shim are), so the init that create
leaves behind is reparented to it and its exit status can be read with
waitpid. create's stdio are files, as the container's stdio (a pipe would
be held open by the guest).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from conftest import BIN, run, wait_for

SPT_OCI = str(BIN / "spt-oci")
KERNEL_DIR = "/unikernel"


def write_bundle(path: Path, kernel: str | None, args=(), *, annotations=None, netns=None,
                 new_netns: bool = False, mounts=(), memory_limit=None, terminal=False,
                 argv=None, extra_linux=None) -> Path:
    """A bundle as an engine writes one: rootfs/unikernel/KERNEL, config.json
    with process.args = [/unikernel/KERNEL, *args] (or `argv`)."""
    rootfs = path / "rootfs"
    (rootfs / KERNEL_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
    if kernel is not None:
        shutil.copy(kernel, rootfs / KERNEL_DIR.lstrip("/") / os.path.basename(kernel))
        argv = argv or [KERNEL_DIR + "/" + os.path.basename(kernel), *map(str, args)]
    namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if netns is not None:
        namespaces.append({"type": "network", "path": netns})
    elif new_netns:
        namespaces.append({"type": "network"})
    linux = {"namespaces": namespaces, **(extra_linux or {})}
    if memory_limit is not None:
        linux["resources"] = {"memory": {"limit": memory_limit}}
    config = {"ociVersion": "1.0.2",
              "process": {"args": list(argv or []), "cwd": "/", "terminal": terminal,
                          "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}},
              "root": {"path": "rootfs"}, "mounts": list(mounts),
              "annotations": dict(annotations or {}), "linux": linux}
    (path / "config.json").write_text(json.dumps(config))
    return path


def bind(source: str, destination: str) -> dict:
    return {"destination": destination, "type": "bind", "source": source,
            "options": ["rbind", "rw"]}


class Runtime:
    """spt-oci with one private root; each create gets its own stdio file."""

    def __init__(self, tmp: Path):
        self.root = tmp / "oci-root"
        self.tmp = tmp
        self.pids: list[int] = []

    def call(self, *args, log: Path | None = None, timeout: float = 30):
        glob = ["--root", str(self.root)]
        if log is not None:
            glob += ["--log", str(log), "--log-format", "json"]
        return run([SPT_OCI, *glob, *map(str, args)], timeout=timeout)

    def create(self, container_id: str, bundle: Path, *extra, log: Path | None = None,
               pass_fds=()):
        """create with stdio = a file (the container's output); returns
        (CompletedProcess-like, output path)."""
        out = self.tmp / ("%s-%s.out" % (container_id, uuid.uuid4().hex[:6]))
        glob = ["--root", str(self.root)]
        if log is not None:
            glob += ["--log", str(log), "--log-format", "json"]
        pid_file = self.tmp / ("%s.pid" % container_id)
        with open(out, "w+") as stdio:
            proc = subprocess.run([SPT_OCI, *glob, "create", "--bundle", str(bundle),
                                   "--pid-file", str(pid_file), *map(str, extra), container_id],
                                  stdin=subprocess.DEVNULL, stdout=stdio, stderr=stdio,
                                  timeout=60, pass_fds=pass_fds)
        if proc.returncode == 0:
            self.pids.append(int(pid_file.read_text()))
        return proc, out, pid_file

    def pid(self, pid_file: Path) -> int:
        return int(pid_file.read_text())

    def state(self, container_id: str) -> dict:
        proc = self.call("state", container_id)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def wait(self, pid: int, timeout: float = 20) -> int:
        """The exit status of an init reparented to this process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.pids.remove(pid)
                return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
                    else 128 + os.WTERMSIG(status)
            time.sleep(0.02)
        raise AssertionError("pid %d did not end within %.0fs" % (pid, timeout))

    def close(self) -> None:
        """Kill what is left (by the pids create reported) and reap it."""
        import signal

        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass


def become_subreaper() -> None:
    import prctl

    prctl.set_child_subreaper(1)


def wait_for_output(path: Path, text: str, timeout: float = 20) -> str:
    def seen():
        content = path.read_text(errors="replace")
        return content if text in content else None
    return wait_for(seen, timeout=timeout, interval=0.05)
