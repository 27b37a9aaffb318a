"""The container's init: a child of create that becomes the guest at start.

create forks it (into a new PID namespace: it is the container's PID 1) and
it runs these steps in order, each failure one message back to create over
a pipe (create writes it to --log and exits 1, the child exits):

  1. a session of its own; the container's cgroup;
  2. the container's network namespace (joined by path, or a new one), then
     ipc, uts and cgroup (a mount namespace it does not make: see _init);
  3. the terminal: a new pty whose master goes to --console-socket, the
     slave as 0/1/2 (with `process.terminal`);
  4. every fd but 0/1/2 closed (the shim's ttrpc socket, conmon's leaks);
  5. the launch plan, with the launcher's own stages: block files from the
     bundle, and for the net device the container's interface handed over
     exactly as `spt entrypoint` does it (spt/netwire.py);
  6. "ready" to create, which writes the pid file and exits;
  7. wait for start on the start FIFO (runc's exec fifo): a stop signal
     meanwhile ends the init (status 128+N);
  8. exec the trampoline with the stop signals held back until its handler
     is in place: from here on it is the guest, exactly as under solo5-spt.

Python is gone after step 8: nothing of the runtime stays mapped, the
engine's subreaper (conmon, the shim) reaps the guest and reads its status.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys

from spt.errors import SptError
from spt.oci.errors import OciError

CLONE_FLAGS = {"pid": 0x20000000, "network": 0x40000000, "ipc": 0x08000000,
               "uts": 0x04000000, "mount": 0x00020000, "cgroup": 0x02000000}
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
TIOCSCTTY = 0x540E
_libc = ctypes.CDLL(None, use_errno=True)


def _ns_call(what: str, result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OciError("%s: %s" % (what, os.strerror(err)))


def enter(kind: str, path: str | None) -> None:
    """Join the namespace at `path`, or make a new one of `kind`."""
    flag = CLONE_FLAGS[kind]
    if path is None:
        _ns_call("cannot make a new %s namespace" % kind, _libc.unshare(flag))
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OciError("%s namespace %s: %s" % (kind, path, exc.strerror)) from None
    try:
        _ns_call("cannot join the %s namespace %s" % (kind, path), _libc.setns(fd, flag))
    finally:
        os.close(fd)


def spawn(launch, stream, image, fifo: str, cgroup_dir: str | None,
          console_socket: str | None) -> int:
    """Fork the init; returns its pid once it is ready (step 6)."""
    ns = launch.namespaces
    if "pid" in ns:
        enter("pid", ns["pid"])  # for the child: this process stays where it is
    ready_r, ready_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        status = 1
        try:
            _init(launch, stream, image, fifo, cgroup_dir, console_socket, ready_w)
        except (OciError, SptError) as exc:
            _tell(ready_w, "E" + str(exc))
        except BaseException as exc:  # noqa: BLE001 - one line, never a traceback
            _tell(ready_w, "Einternal error: %s: %s" % (type(exc).__name__, exc))
        finally:
            os._exit(status)
    os.close(ready_w)
    with os.fdopen(ready_r, "rb") as ready:
        said = ready.read().decode(errors="replace")
    if said == "ok":
        return pid
    _, wstatus = os.waitpid(pid, 0)
    if said.startswith("E"):
        raise OciError(said[1:])
    if os.WIFSIGNALED(wstatus):
        raise OciError("the container's init was killed by signal %d during setup"
                       % os.WTERMSIG(wstatus))
    raise OciError("the container's init exited with status %d during setup"
                   % os.waitstatus_to_exitcode(wstatus))


def _tell(fd: int, message: str) -> None:
    try:
        os.write(fd, message.encode()[:4000])
    except OSError:
        pass


def _exit_on_stop(signum, _frame):
    os._exit(128 + signum)


def _init(launch, stream, image, fifo, cgroup_dir, console_socket, ready_w) -> None:
    from spt import launcher

    for sig in STOP_SIGNALS:  # PID 1: only signals with a handler arrive
        signal.signal(sig, _exit_on_stop)
    os.setsid()
    if cgroup_dir is not None:
        from spt.oci import cgroup

        cgroup.join(cgroup_dir)
    ns = launch.namespaces
    if "network" in ns:
        enter("network", ns["network"])
    # No mount namespace: a copy of the engine's mount table would pin every
    # mount in it (other containers' root file systems included) for the
    # guest's lifetime, and the guest opens no path (its filter has no open).
    for kind in ("ipc", "uts", "cgroup"):
        if kind in ns:
            enter(kind, ns[kind])
    if console_socket:
        _terminal(console_socket)
    launcher.sanitize_fds({ready_w, stream.fileno()})
    os.environ.pop("NOTIFY_SOCKET", None)
    os.environ["SPT_STOP_ON_TERM"] = "1"
    opts = _options(launch)

    def build(wired):
        return launcher.build_plan(wired, stream, image=image)[0]

    if launch.net_device is None:
        plan = build(opts)
        _ready_then_exec(plan, fifo, ready_w, None)
        return
    from pyroute2 import IPRoute

    from spt import netwire

    undo = netwire.Undo()
    with IPRoute() as ipr:
        try:
            facts, plan = netwire.hand_over(ipr, opts, launch.net_device, iface=launch.iface,
                                            template=launch.template, allow_host_netns=False,
                                            build=build, undo=undo)
            print("spt-oci: " + netwire.describe(launch.net_device, facts), file=sys.stderr,
                  flush=True)
            _ready_then_exec(plan, fifo, ready_w, undo)
        except BaseException as exc:
            leftovers = undo.run()
            if leftovers and isinstance(exc, (SptError, OciError)):
                raise OciError("%s; and could not undo: %s" % (exc, "; ".join(leftovers))) from None
            raise


def _options(launch):
    """The launcher's Options for this launch; block devices through the
    block module's own option parsers, as solo5-spt parses --block:NAME=PATH."""
    from spt import launcher
    from spt.devices import options

    module, opt = options()["block"]
    devices = {(module, name): {opt.key: opt.parse(name, path)}
               for name, path in sorted(launch.blocks.items())}
    return launcher.Options(kernel=launch.kernel, args=list(launch.args), mem_mib=launch.mem_mib,
                            x_exec_heap=False, devices=devices, jail="auto",
                            user=_guest_ids(launch))


def _guest_ids(launch) -> tuple[int, int]:
    """The uid and gid the jail gives the guest (docs/security.md): the
    bundle's process.user when it names one other than root; else the
    jail's per-guest ids, numbered by this init's PID on the host (the
    container's own PID namespace numbers it 1, which every container
    shares)."""
    if launch.user and launch.user[0] != 0:
        return launch.user
    from spt import jail

    return jail.ids_for_pid(_host_pid())


def _host_pid() -> int:
    """This process's PID in the outermost PID namespace /proc shows (the
    first number of NSpid: spt-oci's init keeps the host's /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[1])
    raise OciError("/proc/self/status has no NSpid: cannot number the guest's ids")


def _terminal(console_socket: str) -> None:
    """A pty for the container: the master to the engine, the slave as stdio."""
    import fcntl

    master, slave = os.openpty()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(console_socket)
            socket.send_fds(sock, [b"/dev/ptmx"], [master])
    except OSError as exc:
        raise OciError("--console-socket %s: %s" % (console_socket, exc.strerror)) from None
    finally:
        os.close(master)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)
    try:
        fcntl.ioctl(0, TIOCSCTTY, 0)
    except OSError:
        pass  # output still works without a controlling terminal


def _ready_then_exec(plan, fifo: str, ready_w: int, undo) -> None:
    from spt import launcher

    os.write(ready_w, b"ok")
    os.close(ready_w)
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_CLOEXEC)  # blocks until start opens it
        try:
            os.write(fd, b"0")
        except OSError:
            pass  # start gave up reading: it still asked to start
        os.close(fd)
    except OSError as exc:
        print("spt-oci: start FIFO %s: %s" % (fifo, exc.strerror), file=sys.stderr)
        os._exit(1)
    # Held, not lost: the trampoline installs its stop handler, then unblocks.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    try:
        launcher.exec_trampoline(plan)
    except BaseException as exc:  # noqa: BLE001 - the guest cannot start: say why
        if undo is not None:
            undo.run()
        print("spt-oci: %s" % exc, file=sys.stderr)
        os._exit(1)
