"""A container's network, made by the test: two namespaces and a veth.

`Topology` is what a container engine builds, reduced to its facts: ns
`container` holds `eth0` (one end of a veth, 10.79.0.2/24, default route via
10.79.0.1); ns `peer` holds the other end with 10.79.0.1/24 and plays the
engine's network. Both namespaces get unique names and are deleted at
teardown; no packet leaves them.

`PodmanNs` runs Debian's podman on this machine's hybrid cgroup setup (see
/work/shared/spec/container-entrypoint.md): every podman command runs in
one mount namespace of its own with a plain cgroup2 on /sys/fs/cgroup, kept
alive by a `sleep` this harness starts and ends by its pid. What podman
writes stays in that namespace: /etc and /var are overlays whose upper
layers live in a tmpfs of the namespace (podman's lock files, CNI's
/etc/cni/net.d/cni.lock), podman's storage /var/lib/containers and /run are
fresh tmpfs, and /run/netns leads to the host's, so the namespaces a test
adds later are there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from conftest import read_line, run, stop, wait_for

CONTAINER_IP = "10.79.0.2"
PEER_IP = "10.79.0.1"
PREFIX = 24


def sh(*cmd, timeout: float = 60):
    proc = run(list(cmd), timeout=timeout)
    assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
    return proc


@dataclass
class Topology:
    container: str  # netns name: the container's side (eth0)
    peer: str  # netns name: the engine's side

    @property
    def netns_path(self) -> str:
        return "/run/netns/" + self.container

    def in_container(self, *cmd, **kwargs):
        return run(list(cmd), netns=self.container, **kwargs)

    def in_peer(self, *cmd, **kwargs):
        return run(list(cmd), netns=self.peer, **kwargs)

    def ping(self, count: int = 3, timeout: float = 60):
        """ping the container's address from the peer namespace."""
        return self.in_peer("ping", "-c", str(count), "-i", "0.2", "-W", "10", CONTAINER_IP,
                            timeout=timeout)

    def snapshot(self) -> dict:
        """The container namespace as JSON facts: links, addresses, routes,
        qdiscs and the ingress filters of every link."""
        def j(*cmd):
            proc = self.in_container(*cmd)
            assert proc.returncode == 0, (cmd, proc.stderr)
            return json.loads(proc.stdout or "[]")

        links = j("ip", "-j", "link", "show")
        filters = {link["ifname"]: j("tc", "-j", "filter", "show", "dev", link["ifname"], "ingress")
                   for link in links if link["ifname"] != "lo"}
        return {"links": links, "addrs": j("ip", "-j", "addr", "show"),
                "routes": j("ip", "-j", "route", "show", "table", "all"),
                "qdiscs": j("tc", "-j", "qdisc", "show"), "filters": filters}

    def link(self, name: str) -> dict | None:
        proc = self.in_container("ip", "-j", "-d", "link", "show", "dev", name)
        return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def make_topology(*, mtu: int = 1500, address: bool = True, default_route: bool = True,
                  kind: str | None = "veth") -> Topology:
    tag = uuid.uuid4().hex[:8]
    topo = Topology(container="spt-ep-c-" + tag, peer="spt-ep-p-" + tag)
    try:
        _build(topo, mtu=mtu, address=address, default_route=default_route, kind=kind)
    except BaseException:
        remove_topology(topo)
        raise
    return topo


def _build(topo: Topology, *, mtu: int, address: bool, default_route: bool,
           kind: str | None) -> None:
    sh("ip", "netns", "add", topo.container)
    sh("ip", "netns", "add", topo.peer)
    for ns in (topo.container, topo.peer):
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        # No duplicate address detection: an IPv6 link-local address that
        # turns from tentative to valid mid-test would change a snapshot.
        sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0",
           "net.ipv6.conf.default.accept_dad=0")
    c = ("ip", "-n", topo.container)
    if kind == "veth":
        sh(*c, "link", "add", "eth0", "mtu", str(mtu), "type", "veth",
           "peer", "name", "peer0", "mtu", str(mtu), "netns", topo.peer)
        sh("ip", "-n", topo.peer, "addr", "add", "%s/%d" % (PEER_IP, PREFIX), "dev", "peer0")
        sh("ip", "-n", topo.peer, "link", "set", "peer0", "up")
    elif kind is not None:
        sh(*c, "link", "add", "eth0", "mtu", str(mtu), "type", kind)
    if kind is not None:
        if address:
            sh(*c, "addr", "add", "%s/%d" % (CONTAINER_IP, PREFIX), "dev", "eth0")
        sh(*c, "link", "set", "eth0", "up")
        if address and default_route:
            sh(*c, "route", "add", "default", "via", PEER_IP)
    if kind == "veth":
        # Carrier comes up asynchronously; snapshots taken before and after
        # a test must not differ by it.
        wait_for(lambda: "NO-CARRIER" not in topo.link("eth0")["flags"], timeout=60,
                 what="carrier on the container's eth0")


def remove_topology(topo: Topology) -> None:
    for ns in (topo.container, topo.peer):
        subprocess.run(["ip", "netns", "delete", ns], check=False, timeout=60)


def etc_listing(root: str = "/etc", deep: tuple[str, ...] = ("cni", "containers")) -> dict:
    """What podman could change in the host's /etc, as facts to compare:
    the names in `root` and its mtime, and every entry under the `deep`
    directories podman writes to (CNI's lock, its own configuration) with
    type, size and mtime."""
    def facts(path: str) -> tuple:
        st = os.lstat(path)
        return (st.st_mode, st.st_size, st.st_mtime_ns)

    listing = {".": facts(root), "names": sorted(os.listdir(root))}
    for top in deep:
        start = os.path.join(root, top)
        if not os.path.lexists(start):
            continue
        listing[top] = facts(start)
        for dirpath, dirnames, filenames in os.walk(start):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                listing[os.path.relpath(path, root)] = facts(path)
    return listing


def netns_exists(name: str) -> bool:
    return os.path.exists("/run/netns/" + name)


class PodmanNs:
    """podman commands in one mount namespace of their own, with cgroup2."""

    # A slave of the host's mounts: netns files the test adds later under
    # /run/netns appear in it, and nothing mounted in it leaks out. $1 is an
    # empty directory of the harness's; a tmpfs there holds every upper layer.
    SETUP = r"""
set -eu
state=$1
umount -l /sys/fs/cgroup
mount -t cgroup2 none /sys/fs/cgroup
mount -t tmpfs -o mode=0700 tmpfs "$state"
mkdir "$state/netns"
mount --rbind /run/netns "$state/netns"
for d in etc var; do
    mkdir "$state/$d.upper" "$state/$d.work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$state/$d.upper,workdir=$state/$d.work" /$d
done
mount -t tmpfs -o mode=0700 tmpfs /var/lib/containers
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
ln -s "$state/netns" /run/netns
echo ready
exec sleep 3600
"""
    # What this machine's podman needs (see the module's docstring).
    RUN_FLAGS = ("--cgroups=disabled", "--ulimit", "nofile=1024:1024",
                 "--ulimit", "nproc=1024:1024")

    def __init__(self):
        if not os.path.isdir("/run/netns"):  # made (and shared) as `ip netns add` makes it
            probe = "spt-ep-probe-" + uuid.uuid4().hex[:8]
            sh("ip", "netns", "add", probe)
            sh("ip", "netns", "delete", probe)
        self.private = Path(tempfile.mkdtemp(prefix="spt-podman-"))
        self.holder = subprocess.Popen(["unshare", "-m", "--propagation", "slave",
                                        "sh", "-c", self.SETUP, "sh", str(self.private)],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
        line = read_line(self.holder.stdout, timeout=60)
        if line.strip() != "ready":
            stop(self.holder)
            self.private.rmdir()
            raise AssertionError("cannot prepare podman's mount namespace: %s"
                                 % self.holder.stderr.read())
        self.names: list[str] = []  # containers to remove at close
        self.images: list[str] = []  # images to remove at close

    def inside(self, path: str) -> Path:
        """A path in podman's mount namespace, reachable from here."""
        return Path("/proc/%d/root" % self.holder.pid) / path.lstrip("/")

    def podman(self, *args, timeout: float = 120):
        return run(["nsenter", "-t", str(self.holder.pid), "-m", "podman", *args],
                   timeout=timeout)

    def new_name(self) -> str:
        name = "spt-ep-" + uuid.uuid4().hex[:8]
        self.names.append(name)
        return name

    def state(self, name: str) -> dict:
        proc = self.podman("inspect", name, "--format", "{{json .State}}")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def wait_for_log(self, name: str, text: str, timeout: float = 90) -> str:
        def logged():
            proc = self.podman("logs", name)
            out = proc.stdout + proc.stderr
            return out if text in out else None
        return wait_for(logged, timeout=timeout, interval=0.1,
                        what="%r in the log of container %s" % (text, name))

    def close(self) -> None:
        for name in self.names:
            self.podman("rm", "-f", "-t", "0", name)
        for image in self.images:
            self.podman("rmi", "-f", image)
        stop(self.holder, signal.SIGTERM)
        self.private.rmdir()  # the tmpfs on it lived in the namespace only
