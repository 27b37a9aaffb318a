"""A real systemd, booted for a test in namespaces of its own.

systemd runs as PID 1 of fresh PID, mount, network, UTS, IPC and cgroup
namespaces, so nothing it does reaches the machine:
- fresh tmpfs on /run, /tmp and /var/tmp (its tmpfiles would otherwise
  empty the machine's /tmp), and overlays on /etc and /var whose upper
  layers live in that /run: units, /etc/spt, users and journals written
  inside stay inside;
- the checkout stays reachable at its own path (CI clones under /tmp);
- /proc/sys and /sys read-only: no global sysctl (fs.file-max, ...) or
  device attribute changes;
- its cgroups live in a fresh sub-tree of each of this process's cgroups
  (a cgroup namespace rooted there), removed after it stops;
- it boots a small target (journald and sysinit), with the sysinit units
  that touch global state masked (clock, sysctl, modules, binfmt, pstore,
  device nodes);
- /dev/net/tun inside is a node of its own (mode 0666, as udev makes it on
  Debian), so a TAP owner can open it without touching the machine's /dev.

It is stopped with `systemctl poweroff` inside, bounded in time; only if
that fails is its PID 1 (which this code started) killed. Should the test
process itself die, the kernel kills the unshare it started (parent-death
signal) and unshare kills systemd (--kill-child).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# Units of sysinit.target whose effects would leave the namespaces.
MASKED = (
    "systemd-timesyncd.service", "systemd-pstore.service", "systemd-sysctl.service",
    "systemd-modules-load.service", "systemd-binfmt.service", "kmod-static-nodes.service",
    "systemd-tmpfiles-setup-dev.service", "systemd-repart.service",
    "systemd-remount-fs.service", "systemd-journald-audit.socket",
    "systemd-udev-trigger.service", "systemd-udevd.service", "systemd-firstboot.service",
    "systemd-hwdb-update.service", "proc-sys-fs-binfmt_misc.automount",
)

TARGET = """[Unit]
Description=spt test boot: journald and sysinit, nothing else
Requires=sysinit.target
After=sysinit.target
"""

# Runs in the new namespaces (after `unshare`), as the parent of systemd.
INNER = r"""
set -eu
repo=$1; shift
mount --make-rprivate /
for pair in "$@"; do mount --bind "${pair#*=}" "${pair%%=*}"; done
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/spt-test/src /run/spt-test/dev /run/systemd/system
mount --rbind "$repo" /run/spt-test/src
for d in etc var; do
    mkdir -p /run/spt-test/$d.upper /run/spt-test/$d.work
    mount -t overlay overlay \
        -o lowerdir=/$d,upperdir=/run/spt-test/$d.upper,workdir=/run/spt-test/$d.work /$d
done
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
mkdir -p "$repo"
mount --rbind /run/spt-test/src "$repo"
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -o remount,bind,ro /sys
mount -t tmpfs -o mode=0755,nosuid,size=64k tmpfs /run/spt-test/dev
if [ -e /dev/net/tun ]; then
    mknod -m 0666 /run/spt-test/dev/tun c 10 200
    mount --bind /run/spt-test/dev/tun /dev/net/tun
fi
for unit in $SPT_MASKED; do ln -s /dev/null /run/systemd/system/$unit; done
printf '%s' "$SPT_TARGET" > /run/systemd/system/spt-test.target
exec env -i container=spt-test /lib/systemd/systemd --system --unit=spt-test.target \
    </dev/null >/dev/null 2>&1
"""

# Runs first, in this machine's namespaces: joins the fresh cgroups, then
# enters the new namespaces (the cgroup namespace is rooted where it joined).
OUTER = r"""
set -eu
for procs in $SPT_CGROUP_PROCS; do echo $$ > "$procs"; done
exec unshare --pid --fork --kill-child --mount-proc --mount --net --uts --ipc --cgroup \
    sh -c "$SPT_INNER" sh "$@"
"""


@dataclass
class CgroupTree:
    """A fresh sub-cgroup `name` in every hierarchy this process is in."""

    name: str
    dirs: list[Path] = field(default_factory=list)  # created, in creation order
    mounts: list[tuple[str, Path]] = field(default_factory=list)  # (mount point, our dir)

    @classmethod
    def create(cls, name: str) -> "CgroupTree":
        tree = cls(name)
        try:
            for mount_point, own in _cgroup_hierarchies():
                path = Path(mount_point + own.rstrip("/")) / name
                path.mkdir()
                tree.dirs.append(path)
                if (path / "cpuset.cpus").exists():  # v1 cpuset: empty until set
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        (path / knob).write_text((path.parent / knob).read_text())
                tree.mounts.append((mount_point, path))
        except BaseException:
            tree.remove()
            raise
        return tree

    def remove(self, timeout: float = 60) -> None:
        """rmdir every cgroup below and including ours, deepest first."""
        deadline = time.monotonic() + timeout
        for top in reversed(self.dirs):
            while top.exists():
                subdirs = sorted((p for p in top.rglob("*") if p.is_dir()),
                                 key=lambda p: len(p.parts), reverse=True)
                try:
                    for d in subdirs + [top]:
                        d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)


def _cgroup_hierarchies():
    """(mount point, this process's cgroup in it) for each cgroup mount."""
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        own[hid] = (set(controllers.split(",")) - {""}, path)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype, _source, options = right.split()[:3]
        mount_point = fields[4]
        if fstype == "cgroup2":
            if "0" in own:
                yield mount_point, own["0"][1]
        elif fstype == "cgroup":
            opts = set(options.split(","))
            for controllers, path in own.values():
                if controllers and controllers <= opts:
                    yield mount_point, path
                    break


@dataclass
class BootedSystemd:
    proc: subprocess.Popen  # the unshare we started
    pid: int  # systemd, PID 1 inside, as this machine sees it
    cgroups: CgroupTree

    def run(self, *cmd, timeout: float = 120, check: bool = False, **kwargs):
        """A command inside all of systemd's namespaces."""
        full = ["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "-u", "-i", "-C", *map(str, cmd)]
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, **kwargs)
        if check:
            assert proc.returncode == 0, (cmd, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def path(self, inside: str) -> Path:
        """A path inside systemd's mount namespace, reachable from here."""
        return Path("/proc/%d/root" % self.pid) / inside.lstrip("/")

    def show(self, unit: str, prop: str) -> str:
        return self.run("systemctl", "show", "-P", prop, unit, check=True).stdout.strip()

    def poweroff(self, timeout: float = 90) -> None:
        if self.proc.poll() is None:
            self.run("systemctl", "poweroff", "--check-inhibitors=no", timeout=timeout)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)  # our PID 1: its namespace dies with it
                self.proc.wait(timeout=timeout)
        self.cgroups.remove()


def boot(repo: Path, timeout: float = 180) -> BootedSystemd:
    """Boot systemd in its namespaces and wait until it is up."""
    cgroups = CgroupTree.create("spt-systemd-" + uuid.uuid4().hex[:8])
    env = dict(os.environ, SPT_INNER=INNER, SPT_TARGET=TARGET, SPT_MASKED=" ".join(MASKED),
               SPT_CGROUP_PROCS=" ".join(str(p / "cgroup.procs") for p in cgroups.dirs))
    binds = ["%s=%s" % (mount_point, path) for mount_point, path in cgroups.mounts]
    proc = subprocess.Popen(["sh", "-c", OUTER, "sh", str(repo), *binds], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_die_with_parent)
    booted = None
    try:
        pid = _child_of(proc, timeout)
        booted = BootedSystemd(proc, pid, cgroups)
        _wait_running(booted, timeout)
        return booted
    except BaseException:
        if booted is not None:
            booted.poweroff()
        else:
            _stop_unshare(proc)
            cgroups.remove()
        raise


def _die_with_parent() -> None:
    """Should the test process die without a poweroff, unshare gets SIGKILL,
    and its --kill-child takes systemd (and with it the namespace) along."""
    import prctl

    prctl.set_pdeathsig(signal.SIGKILL)


def _child_of(proc: subprocess.Popen, timeout: float) -> int:
    """The host PID of systemd: the one child of the unshare we started."""
    deadline = time.monotonic() + timeout
    children = Path("/proc/%d/task/%d/children" % (proc.pid, proc.pid))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("systemd namespace setup failed: %s" % proc.stderr.read())
        try:
            pids = children.read_text().split()
        except FileNotFoundError:
            pids = []
        if pids:
            pid = int(pids[0])
            try:
                if os.readlink("/proc/%d/exe" % pid).endswith("/systemd"):
                    return pid
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError("systemd did not start within %.0fs" % timeout)


def _wait_running(booted: BootedSystemd, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = booted.run("systemctl", "is-system-running", timeout=60).stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(0.2)
    raise AssertionError("systemd is %r after %.0fs" % (state, timeout))


def _stop_unshare(proc: subprocess.Popen) -> None:
    """Setup failed before systemd ran: end the unshare we started."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)
