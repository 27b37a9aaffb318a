"""`spt entrypoint`: a container's network given to the guest, then the guest.

Fast tests run the entrypoint with `ip netns exec` in a test-made container
namespace (see entrypoint_util); slow ones run it as PID 1 of a real podman
container in the same kind of namespace. Every packet stays in namespaces
the test made.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import uuid

import pytest

from conftest import ROOT, SPT, guest_path, read_line, run, stop, wait_for
from entrypoint_util import (CONTAINER_IP, PEER_IP, PodmanNs, etc_listing, make_topology,
                             netns_exists, remove_topology)
from spt import netwire
from spt.errors import SptError

NET_GUEST = "net"


@pytest.fixture
def topology():
    """make(**options) -> a fresh container/peer pair of namespaces."""
    made = []

    def make(**kwargs):
        topo = make_topology(**kwargs)
        made.append(topo)
        return topo

    yield make
    for topo in made:
        remove_topology(topo)


@pytest.fixture
def entrypoint():
    """start(topology, *args) -> Popen of `spt entrypoint ARGS` inside the
    container namespace; each is killed at teardown."""
    procs = []

    def start(topo, *args, env=None):
        proc = subprocess.Popen(["ip", "netns", "exec", topo.container, SPT, "entrypoint",
                                 *map(str, args)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, **(env or {})))
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop(proc)


def run_entrypoint(topo, *args, timeout: float = 120):
    return topo.in_container(SPT, "entrypoint", *map(str, args), timeout=timeout)


def assert_one_line_refusal(proc, *fragments: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("spt: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, proc.stderr)
    return lines[0]


def ready_line(proc) -> str:
    line = read_line(proc.stdout, timeout=60)
    assert line.startswith("net: ready"), (line, proc.poll())
    return line


def eth0_mac(topo) -> str:
    return topo.link("eth0")["address"]


# -- the guest owns the container's address -----------------------------------

def test_guest_answers_ping_for_the_container_address_in_the_same_pid(topology, entrypoint):
    topo = topology(mtu=1400)
    proc = entrypoint(topo, "--mem=16", guest_path(NET_GUEST), "--exit-after=3")
    ready = ready_line(proc)
    # The guest took over eth0's MAC and MTU; the TAP has eth0's MTU.
    assert ready.split() == ["net:", "ready", "mac=" + eth0_mac(topo), "mtu=1400",
                             "ip=" + CONTAINER_IP], ready
    tap = topo.link(netwire.TAP_NAME)
    assert tap["mtu"] == 1400 and tap["linkinfo"]["info_kind"] == "tun", tap
    # No address of the container's stack on the TAP, not even IPv6 link-local.
    tap_addrs = topo.in_container("ip", "-j", "addr", "show", "dev", netwire.TAP_NAME).stdout
    assert json.loads(tap_addrs)[0]["addr_info"] == [], tap_addrs
    # Same PID: `ip netns exec` execs spt, spt execs the trampoline.
    status = open("/proc/%d/status" % proc.pid).read()
    assert "Name:\tspt:net.spt" in status, status
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert re.search(r"^%s:\s+0+$" % field, status, re.M), (field, status)
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
    # eth0 keeps its address, yet only the guest answers (it counts replies).
    assert CONTAINER_IP in topo.in_container("ip", "-4", "addr", "show", "dev", "eth0").stdout
    ping = topo.ping(3)
    assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert "net: answered 3" in proc.stdout.read()
    # The TAP goes with the guest's fd.
    assert topo.link(netwire.TAP_NAME) is None


def test_no_reply_once_the_guest_is_gone(topology, entrypoint):
    """After the guest exits, the container's own stack must not answer for
    the address either: all of eth0's ingress still goes to the (gone) TAP."""
    topo = topology()
    proc = entrypoint(topo, "--mem=16", guest_path(NET_GUEST), "--exit-after=1")
    ready_line(proc)
    assert topo.ping(1).returncode == 0
    assert proc.wait(timeout=60) == 0
    ping = topo.in_peer("ping", "-c", "1", "-W", "1", CONTAINER_IP)
    assert ping.returncode != 0, ping.stdout


def test_sigterm_ends_the_guest_promptly(topology, entrypoint):
    topo = topology()
    proc = entrypoint(topo, "--mem=16", guest_path(NET_GUEST))
    ready_line(proc)
    proc.send_signal(signal.SIGTERM)
    # The status says SIGTERM ended it (a guest ignoring it would hang here
    # until the bound, and a kill would say SIGKILL).
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert topo.link(netwire.TAP_NAME) is None


def test_restart_in_the_same_namespace_rediscovers_everything(topology, entrypoint):
    topo = topology()
    for _ in range(2):
        proc = entrypoint(topo, "--mem=16", guest_path(NET_GUEST), "--exit-after=2")
        ready_line(proc)
        ping = topo.ping(2)
        assert ping.returncode == 0, ping.stdout
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    # One filter of spt's preference, however many starts.
    filters = topo.in_container("tc", "filter", "show", "dev", "eth0", "ingress").stdout
    assert filters.count("pref %d u32 chain 0 fh 800::800" % netwire.SPT_PREF) == 1, filters


def test_guest_command_line_is_the_template_then_args(topology, entrypoint):
    """A /32 address with a link-scope gateway (Calico's shape): the guest
    gets the real prefix and gateway, read back from its own memory."""
    topo = topology(address=False)
    c = ("ip", "-n", topo.container)
    run([*c, "addr", "add", CONTAINER_IP + "/32", "dev", "eth0"])
    run([*c, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"])
    run([*c, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"])
    template = "--ipv4={ipv4}/{prefix} --ipv4-gateway={gateway} --x={mac},{mtu},{iface}"
    proc = entrypoint(topo, "--args-template", template, "--mem=16", guest_path(NET_GUEST),
                      "--user-arg")
    ready_line(proc)
    expected = ("--ipv4=%s/32 --ipv4-gateway=169.254.1.1 --x=%s,1500,eth0 --user-arg"
                % (CONTAINER_IP, eth0_mac(topo))).encode()
    with open("/proc/%d/mem" % proc.pid, "rb") as mem:
        mem.seek(0x10000)
        guest_memory = mem.read((16 << 20) - 0x10000)
    assert expected + b"\0" in guest_memory


def test_template_without_gateway_works_on_a_network_without_default_route(topology, entrypoint):
    topo = topology(default_route=False)
    proc = entrypoint(topo, "--args-template={ipv4}", "--mem=16", guest_path(NET_GUEST),
                      "--ipv4=%s/24" % CONTAINER_IP, "--exit-after=1")
    ready_line(proc)
    assert topo.ping(1).returncode == 0
    assert proc.wait(timeout=60) == 0


def test_allow_host_netns_takes_over_any_interface(topology, entrypoint):
    topo = topology(kind="bridge")
    proc = entrypoint(topo, "--allow-host-netns", "--mem=16", guest_path(NET_GUEST))
    ready_line(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM


@pytest.mark.parametrize("user, uid", [(None, 0), ("4242", 4242)])
def test_entrypoint_guest_gets_the_jails_rlimits_and_the_container_its_ids(
        topology, entrypoint, user, uid):
    """spt entrypoint launches with --jail=limits: the container is the
    rest of the jail, so the guest keeps its uid (or takes --user's, given
    to the launcher) and the container's namespaces, and gets the rlimits
    (docs/security.md)."""
    topo = topology()
    args = ["--user=" + user] if user else []
    proc = entrypoint(topo, *args, "--mem=16", guest_path(NET_GUEST))
    ready_line(proc)
    wait_for(lambda: re.search(r"^Seccomp:\s+2$", open("/proc/%d/status" % proc.pid).read(),
                               re.M))
    status = open("/proc/%d/status" % proc.pid).read()
    assert re.search(r"^Uid:\s+%d\s+%d\s+%d\s+%d$" % ((uid,) * 4), status, re.M), status
    assert re.search(r"^CapBnd:\s+0+$", status, re.M), status
    net = run(["ip", "netns", "exec", topo.container, "readlink", "/proc/self/ns/net"])
    assert os.readlink("/proc/%d/ns/net" % proc.pid) == net.stdout.strip()
    limits = open("/proc/%d/limits" % proc.pid).read()
    top = max(int(fd) for fd in os.listdir("/proc/%d/fd" % proc.pid))
    for name, value in (("Max processes", 0), ("Max open files", top + 1)):
        line = next(line for line in limits.splitlines() if line.startswith(name))
        assert line[len(name):].split()[:2] == [str(value)] * 2, line


# -- refusals: one line, status 1, namespace as it was -----------------------

def _refused_unchanged(topo, args, *fragments, wrap=()):
    before = topo.snapshot()
    proc = run([*wrap, "ip", "netns", "exec", topo.container, SPT, "entrypoint",
                *map(str, args)], timeout=120)
    line = assert_one_line_refusal(proc, *fragments)
    assert topo.snapshot() == before
    return line


def test_refused_without_an_interface(topology):
    _refused_unchanged(topology(kind=None), ["--mem=16", guest_path(NET_GUEST)],
                       "no network interface besides lo")


def test_refused_without_an_address(topology):
    _refused_unchanged(topology(address=False), ["--mem=16", guest_path(NET_GUEST)],
                       "eth0 has no IPv4 address")


def test_refused_without_a_gateway_for_the_default_template(topology):
    _refused_unchanged(topology(default_route=False), ["--mem=16", guest_path(NET_GUEST)],
                       "{gateway}", "no default gateway")


def test_refused_for_a_named_interface_that_does_not_exist(topology):
    _refused_unchanged(topology(), ["--iface", "eth9", "--mem=16", guest_path(NET_GUEST)],
                       "no network interface named eth9")


def test_refused_on_what_looks_like_a_host_namespace(topology):
    _refused_unchanged(topology(kind="bridge"), ["--mem=16", guest_path(NET_GUEST)],
                       "eth0 is a bridge interface", "--allow-host-netns")


def in_private_mounts(setup: str) -> list[str]:
    """A command prefix: run the command in a private mount namespace after
    `setup`; a /dev/net/tun the command made and left there is reported on
    stderr."""
    return ["unshare", "-m", "sh", "-c",
            "mount --make-rprivate / && %s && { test -e /dev/net/tun; had=$?; \"$@\"; rc=$?; "
            "if [ $had != 0 ] && test -e /dev/net/tun; then echo LEFT: /dev/net/tun >&2; fi; "
            "exit $rc; }" % setup,
            "sh"]


@pytest.mark.parametrize("setup, fragment", [
    ("mount -t tmpfs -o ro none /dev/net",
     "/dev/net/tun: No such file or directory, and cannot make it: Read-only file system"),
    ("mount -t tmpfs -o nodev none /dev/net",
     "/dev/net/tun (made here): Permission denied: the runtime does not allow the device"),
    ("mount --bind /dev/null /dev/net/tun", "cannot create TAP spt0"),
])
def test_refused_without_a_usable_tun_device(topology, setup, fragment):
    _refused_unchanged(topology(), ["--mem=16", guest_path(NET_GUEST)], fragment,
                       wrap=in_private_mounts(setup))


def test_tun_device_node_is_made_where_the_engine_left_it_out(topology):
    """As in a Kubernetes pod: no /dev/net/tun, but CAP_MKNOD and a runtime
    that allows the device."""
    topo = topology()
    proc = subprocess.Popen([*in_private_mounts("mount -t tmpfs none /dev/net"), "ip", "netns",
                             "exec", topo.container, SPT, "entrypoint", "--mem=16",
                             guest_path(NET_GUEST), "--exit-after=1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ready_line(proc)
        assert topo.ping(1).returncode == 0
        assert proc.wait(timeout=60) == 0
        # The node stays for the guest's lifetime (it is the container's /dev).
        assert "LEFT: /dev/net/tun" in proc.stderr.read()
    finally:
        stop(proc)


def test_refused_when_the_kernel_is_missing(topology, tmp_path):
    _refused_unchanged(topology(), ["--mem=16", tmp_path / "missing.spt"],
                       "missing.spt: Could not open: No such file or directory")


def test_refused_for_a_kernel_without_net_device(topology):
    _refused_unchanged(topology(), ["--mem=16", guest_path("hello")], "declares no net device")


def test_refused_when_the_wired_device_is_also_given(topology):
    _refused_unchanged(topology(), ["--mem=16", "--net:service0=tap0", guest_path(NET_GUEST)],
                       "attaches service0", "drop --net:service0")


def test_refused_when_the_tap_name_is_taken_and_the_tap_is_left_alone(topology):
    topo = topology()
    topo.in_container("ip", "tuntap", "add", "dev", netwire.TAP_NAME, "mode", "tap")
    _refused_unchanged(topo, ["--mem=16", guest_path(NET_GUEST)],
                       "an interface named spt0 already exists")
    assert topo.link(netwire.TAP_NAME) is not None


@pytest.mark.parametrize("args, fragment", [
    (["--mem=1"], "does not fit in guest memory"),
    (["--mem=16", "--block:storage=/nonexistent"], "Resource not declared in manifest"),
])
def test_failure_after_the_tap_was_made_undoes_everything(topology, args, fragment):
    """These fail in the launcher's own stages, after the TAP and its
    filter exist: both must be gone again."""
    _refused_unchanged(topology(), [*args, guest_path(NET_GUEST)], fragment)


def test_failure_keeps_an_ingress_qdisc_it_did_not_add(topology):
    topo = topology()
    topo.in_container("tc", "qdisc", "add", "dev", "eth0", "ingress")
    _refused_unchanged(topo, ["--mem=1", guest_path(NET_GUEST)], "does not fit")


WIRE_AND_UNDO = """
from pyroute2 import IPRoute
from spt import netwire
from spt.errors import SptError
with IPRoute() as ipr:
    facts = netwire.discover(ipr)
    undo = netwire.Undo()
    fd, index = netwire.open_tap(ipr, netwire.TAP_NAME, facts.mtu, undo)
    netwire.redirect_ingress(ipr, index, facts.index, netwire.TAP_NAME, undo)
    netwire.redirect_ingress(ipr, facts.index, index, facts.ifname, undo)
    print("wired")
    input()  # the test looks at the wired namespace here
    print(undo.run())  # with the TAP's fd still open
"""


@pytest.mark.parametrize("ingress_before", [False, True])
def test_undo_restores_the_namespace_while_the_tap_fd_is_still_open(topology, ingress_before):
    """Every change registers its undo: the TAP, both ingress qdiscs (or
    only the TAP's, when eth0 had one) and both filters."""
    import sys

    topo = topology()
    if ingress_before:
        topo.in_container("tc", "qdisc", "add", "dev", "eth0", "ingress")
    before = topo.snapshot()
    proc = subprocess.Popen(["ip", "netns", "exec", topo.container, sys.executable, "-c",
                             WIRE_AND_UNDO], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert read_line(proc.stdout) == "wired\n", proc.stderr.read()
        wired = topo.snapshot()
        assert wired != before
        assert netwire.TAP_NAME in wired["filters"] and wired["filters"]["eth0"]
        out, err = proc.communicate("\n", timeout=120)
        assert out == "[]\n", (out, err)
    finally:
        stop(proc)
    assert topo.snapshot() == before


@pytest.mark.parametrize("template, fragment", [
    ("--ipv4={address}", "unknown placeholder {address}"),
    ("--ipv4={ipv4.real}", "unknown placeholder {ipv4.real}"),
    ("--ipv4='{ipv4}", "--args-template: No closing quotation"),
    ("--ipv4={ipv4", "--args-template"),
])
def test_bad_template_is_refused(topology, template, fragment):
    _refused_unchanged(topology(), ["--args-template", template, "--mem=16",
                                    guest_path(NET_GUEST)], fragment)


def test_command_line_errors_are_one_line():
    proc = run([SPT, "entrypoint"])
    assert_one_line_refusal(proc, "Missing KERNEL operand")
    proc = run([SPT, "entrypoint", "--iface"])
    assert_one_line_refusal(proc, "--iface needs a value")
    proc = run([SPT, "entrypoint", "--help"])
    assert proc.returncode == 0 and "--args-template" in proc.stdout


def test_render_template_default_and_quoting():
    facts = netwire.LinkFacts(ifname="eth0", index=2, kind="veth", mac="02:00:00:00:00:01",
                              mtu=1450, ipv4="10.1.2.3", prefix=16, gateway="10.1.0.1")
    assert netwire.render_template(netwire.DEFAULT_TEMPLATE, facts) == [
        "--ipv4=10.1.2.3/16", "--ipv4-gateway=10.1.0.1"]
    assert netwire.render_template("--note='{iface} has {mtu}' ''", facts) == [
        "--note=eth0 has 1450", ""]
    assert netwire.render_template("", facts) == []
    assert netwire.render_template("'--json={{\"mtu\":{mtu}}}'", facts) == ['--json={"mtu":1450}']


@pytest.mark.parametrize("template, fragment", [
    ("{prefix:0999999999}", "unknown placeholder {prefix:0999999999}"),  # a ~1 GB string
    ("{ipv4.__class__}", "unknown placeholder {ipv4.__class__}"),
    ("{gateway.__class__.__mro__}", "unknown placeholder {gateway.__class__.__mro__}"),
    ("{mac[0]}", "unknown placeholder {mac[0]}"),
    ("{mtu!r}", "unknown placeholder {mtu!r}"),
    ("{ipv4:{prefix}}", "--args-template: {ipv4:{prefix}}: a lone {"),
    ("{ipv4:{ipv4.__class__}}", "--args-template: {ipv4:{ipv4.__class__}}: a lone {"),
    ("{0}", "unknown placeholder {0}"),
    ("{}", "unknown placeholder {}"),
    ("x}", "--args-template: x}: a lone }"),
    ("{\x1b[2J}", "unknown placeholder {\\x1b[2J}"),
])
def test_a_template_substitutes_only_the_documented_names(template, fragment):
    """No format spec, attribute, index or conversion is evaluated: the
    message names what was written, never a value it reached."""
    facts = netwire.LinkFacts(ifname="eth0", index=2, kind="veth", mac="02:00:00:00:00:01",
                              mtu=1450, ipv4="10.1.2.3", prefix=16, gateway="10.1.0.1")
    with pytest.raises(SptError) as err:
        netwire.render_template(template, facts)
    message = str(err.value)
    assert fragment in message, message
    assert "class" not in message or "__class__" in template
    assert len(message) < 300 and "\n" not in message and "\x1b" not in message


# -- a real engine: podman, rootful, in the test's namespaces -----------------

@pytest.fixture
def podman_ns():
    """podman in a mount namespace of its own; the host's /etc is the same
    after (podman writes /etc/cni/net.d/cni.lock, into the overlay)."""
    before = etc_listing()
    pod = PodmanNs()
    try:
        yield pod
    finally:
        pod.close()
    assert etc_listing() == before, "the podman test changed the host's /etc"


def test_etc_listing_sees_what_podman_could_change(tmp_path):
    """The fixture's check above can fail: a new lock file, a touched config."""
    etc = tmp_path / "etc"
    (etc / "cni" / "net.d").mkdir(parents=True)
    (etc / "containers").mkdir()
    (etc / "containers" / "policy.json").write_text("{}")
    (etc / "hostname").write_text("h")
    before = etc_listing(str(etc))
    (etc / "cni" / "net.d" / "cni.lock").touch()
    assert etc_listing(str(etc)) != before
    before = etc_listing(str(etc))
    os.utime(etc / "containers" / "policy.json", ns=(0, 0))
    assert etc_listing(str(etc)) != before
    before = etc_listing(str(etc))
    (etc / "subuid").touch()
    assert etc_listing(str(etc)) != before


@pytest.mark.slow
def test_podman_writes_to_etc_var_and_run_stay_in_its_namespace(topology, podman_ns):
    """A podman run writes /etc/cni/net.d/cni.lock and its state under /var
    and /run: all of it lands in the namespace's own layers."""
    topo = topology()
    ran = podman_ns.podman("run", "--rm", *podman_ns.RUN_FLAGS, "--network",
                           "ns:" + topo.netns_path, "--rootfs", "/:O", "true")
    assert ran.returncode == 0, ran.stderr
    upper = podman_ns.inside(str(podman_ns.private) + "/etc.upper")
    assert (upper / "cni" / "net.d" / "cni.lock").exists(), sorted(upper.rglob("*"))
    probe = "spt-probe-" + uuid.uuid4().hex[:8]
    for directory in ("/etc", "/var", "/run", "/var/lib/containers"):
        made = podman_ns.inside(directory) / probe
        made.touch()
        assert not os.path.lexists(os.path.join(directory, probe)), directory
        made.unlink()


# What docs/containers.md asks of a Kubernetes pod: every capability dropped
# but NET_ADMIN and MKNOD, no device, read-only root, no privilege escalation.
POD_PROFILE = ["--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--cap-add", "MKNOD",
               "--read-only", "--security-opt", "no-new-privileges"]


def podman_run_args(pod, name: str, topo, *, net_admin=True, tun=True, detach=True,
                    image: str | None = None, pod_profile=False) -> list[str]:
    """`podman run` of the entrypoint: from `image`, or (default) from the
    host's root as a throw-away overlay (no image, no registry) with this
    tree's venv and net guest."""
    import sys

    args = ["run", "--name", name, *pod.RUN_FLAGS, "--network", "ns:" + topo.netns_path]
    if detach:
        args.append("-d")
    if pod_profile:
        args += POD_PROFILE
    elif net_admin:
        args += ["--cap-add", "NET_ADMIN"]
    if pod_profile:
        pass
    elif tun:
        args += ["--device", "/dev/net/tun"]
    else:
        # Without the device and without CAP_MKNOD (this machine's podman
        # runs without a device cgroup, so a node made inside would work).
        args += ["--cap-drop", "MKNOD"]
    if image is not None:
        return args + [image, "--mem=16", "/unikernel/%s.spt" % NET_GUEST]
    args += ["-v", "%s:%s:ro" % (ROOT, ROOT),
             "-v", "%s:%s:ro" % (sys.base_prefix, sys.base_prefix)]
    # --rootfs is a flag: the first word after the options is the rootfs.
    return args + ["--rootfs", "/:O", SPT, "entrypoint", "--mem=16", guest_path(NET_GUEST)]


def assert_guest_serves_and_stops(pod, name: str, topo) -> None:
    """The container's process is the guest (PID 1, no capability), answers
    ping for the container's address, and `podman stop` ends it with
    SIGTERM well before the grace period; its TAP goes with it."""
    pod.wait_for_log(name, "net: ready mac=%s" % topo.link("eth0")["address"])
    pid = pod.state(name)["Pid"]
    status = open("/proc/%d/status" % pid).read()
    assert re.search(r"^NSpid:\s+%d\s+1$" % pid, status, re.M), status
    assert "Name:\tspt:net.spt" in status
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    ping = topo.ping(3)
    assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout

    began = time.monotonic()
    stopped = pod.podman("stop", "-t", "30", name)
    took = time.monotonic() - began
    assert stopped.returncode == 0, stopped.stderr
    # Not a timing: without SIGTERM ending the guest, podman waits the whole
    # grace period, then kills (and the exit code below would say SIGKILL).
    assert took < 30, "podman stop took %.1fs: SIGTERM did not end the guest" % took
    state = pod.state(name)
    assert state["ExitCode"] == 128 + signal.SIGTERM, state
    assert not os.path.exists("/proc/%d" % pid) or \
        "spt:net" not in open("/proc/%d/status" % pid).read()
    assert topo.link(netwire.TAP_NAME) is None
    assert pod.podman("rm", name).returncode == 0


@pytest.mark.slow
def test_podman_container_guest_answers_ping_stops_promptly_and_restarts(topology, podman_ns):
    topo = topology()
    for _ in (1, 2):  # a second container in the same namespace: a restart
        name = podman_ns.new_name()
        started = podman_ns.podman(*podman_run_args(podman_ns, name, topo))
        assert started.returncode == 0, started.stderr
        assert_guest_serves_and_stops(podman_ns, name, topo)
    remove_topology(topo)
    assert not netns_exists(topo.container) and not netns_exists(topo.peer)


@pytest.mark.slow
def test_image_from_the_containerfile_runs_the_guest(topology, podman_ns, tmp_path):
    """contrib/container: make-rootfs fills a context, `podman build` makes
    an image FROM scratch of it (nothing pulled), and the image runs: with
    the device and NET_ADMIN, then as the Kubernetes pod spec of
    docs/containers.md has it (this machine's podman has no device cgroup,
    so the runtime's device rules are not part of this test)."""
    import sys

    context = tmp_path / "context"
    made = run([sys.executable, str(ROOT / "contrib" / "container" / "make-rootfs"),
                guest_path(NET_GUEST), str(context)], timeout=300)
    assert made.returncode == 0, made.stderr
    image = "localhost/spt-ep-test:" + podman_ns.new_name()
    podman_ns.images.append(image)
    built = podman_ns.podman("build", "-q", "-t", image, str(context), timeout=300)
    assert built.returncode == 0, built.stderr
    topo = topology()
    for pod_profile in (False, True):
        name = podman_ns.new_name()
        started = podman_ns.podman(*podman_run_args(podman_ns, name, topo, image=image,
                                                    pod_profile=pod_profile))
        assert started.returncode == 0, started.stderr
        assert_guest_serves_and_stops(podman_ns, name, topo)


@pytest.mark.slow
@pytest.mark.parametrize("net_admin, tun, fragment", [
    (False, True, "cannot create TAP spt0: Operation not permitted "
                  "(the container needs CAP_NET_ADMIN)"),
    (True, False, "/dev/net/tun: No such file or directory, and cannot make it: "
                  "Operation not permitted"),
])
def test_podman_container_without_privileges_fails_in_one_line(topology, podman_ns,
                                                               net_admin, tun, fragment):
    topo = topology()
    before = topo.snapshot()
    name = podman_ns.new_name()
    proc = podman_ns.podman(*podman_run_args(podman_ns, name, topo, net_admin=net_admin,
                                             tun=tun, detach=False))
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    # podman may add log lines of its own (WARN[...] on some hosts).
    proc.stderr = "".join(line for line in proc.stderr.splitlines(True)
                          if not line.startswith(("WARN[", "time=")))
    assert_one_line_refusal(proc, fragment)
    assert topo.snapshot() == before
