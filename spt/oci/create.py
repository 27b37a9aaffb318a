"""`spt-oci create [--bundle DIR] [--pid-file FILE] [--console-socket SOCK]
[--preserve-fds N] ID`: the init made and waiting for start.

Read the bundle; a process that is not an spt unikernel goes to the host's
runtime (and spt-oci remembers it did). Otherwise: check the kernel and
that every device it declares comes from the bundle, make the cgroup and
the start FIFO, fork the init (spt/oci/init.py), save the state, write the
pid (digits only: containerd refuses a newline) and exit 0, printing nothing
on stdout (conmon reads it as the container's output).
"""

from __future__ import annotations

import os
import time

from spt.oci import bundle as bundle_mod, cli, delegate
from spt.oci.errors import OciError
from spt.oci.state import State, Store, check_id, start_time

BOOLEANS = {"no-pivot", "no-new-keyring"}
VALUED = {"bundle", "b", "pid-file", "console-socket", "preserve-fds"}


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%09dZ" % int(t % 1 * 1e9)


def run(g, argv: list[str]) -> int:
    flags, positionals = cli.parse(argv, BOOLEANS, VALUED, what="create")
    (container_id,) = cli.one_id(positionals, "create")
    check_id(container_id)
    preserve = flags.get("preserve-fds", "0")
    if not preserve.isdigit():
        raise OciError("create: --preserve-fds %r: expected a number" % preserve)
    store = Store(g.root)
    if store.load(container_id) is not None:
        raise OciError("container with id %s already exists" % container_id)
    bundle = bundle_mod.read(flags.get("bundle") or flags.get("b") or os.getcwd())
    found = bundle_mod.kernel_path(bundle)
    if found is None:
        return _delegate(g, store, container_id, bundle)
    return _create(g, store, container_id, bundle, found, flags)


def _delegate(g, store: Store, container_id: str, bundle) -> int:
    runtime = delegate.choose(g.argv)
    store.make_dir(container_id)
    store.save(State(id=container_id, bundle=bundle.path, status="created", pid=None,
                     pid_start=None, created=now_rfc3339(), annotations=bundle.annotations,
                     delegate=runtime, cgroup=None, kernel=None))
    code = delegate.call(runtime, g.argv)
    if code != 0:
        store.forget(container_id)
    return code


def _create(g, store: Store, container_id: str, bundle, found, flags) -> int:
    from spt import image as image_mod
    from spt.oci import cgroup, init

    kernel, args = found
    stream = image_mod.open_kernel(kernel)
    image = image_mod.load_cached(kernel, stream)
    launch = bundle_mod.plan(bundle, image.manifest, kernel, args)
    if launch.terminal and not flags.get("console-socket"):
        raise OciError("create: process.terminal is set but no --console-socket was given")
    pid_file = flags.get("pid-file")
    store.make_dir(container_id)
    cgroup_dir = pid = None
    try:
        fifo = store.fifo(container_id)
        os.mkfifo(fifo, 0o600)
        cgroup_dir = cgroup.place(launch.cgroups_path, systemd=g.systemd, manager=g.manager,
                                  memory_limit=launch.memory_limit)
        pid = init.spawn(launch, stream, image, fifo, cgroup_dir,
                         flags.get("console-socket") if launch.terminal else None)
        store.save(State(id=container_id, bundle=bundle.path, status="created", pid=pid,
                         pid_start=start_time(pid), created=now_rfc3339(),
                         annotations=bundle.annotations, delegate=None, cgroup=cgroup_dir,
                         kernel=os.path.relpath(kernel, bundle.rootfs)))
        if pid_file:
            _write_pid_file(pid_file, pid)
    except BaseException:
        if pid is not None:
            _kill_quietly(pid)
        try:
            cgroup.remove(cgroup_dir)
        except OciError:
            pass
        store.forget(container_id)
        raise
    return 0


def _write_pid_file(path: str, pid: int) -> None:
    from spt.fileutil import write_atomic

    try:
        write_atomic(os.path.abspath(path), str(pid).encode(), 0o644)
    except OSError as exc:
        raise OciError("--pid-file %s: %s" % (path, exc.strerror)) from None


def _kill_quietly(pid: int) -> None:
    import signal

    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError:
        pass
