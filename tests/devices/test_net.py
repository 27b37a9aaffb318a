"""Net devices: a real TAP in a test-made namespace, a real ping.

The `net` guest answers ARP and ICMP echo for its --ipv4 address and prints
`net: ready mac=.. mtu=.. ip=..` from the manifest entry the launcher filled
in, so what the guest was told is checked against what the host sees. Every
launcher and every packet stays inside the test's network namespace.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import pytest

from conftest import SOLO5_SPT, assert_refused, read_line, run, stop, which
from netns_util import IFF_NO_PI, IFF_TUN, enter_netns, open_tun

GUEST_MEM = "--mem=32"
READY = re.compile(r"net: ready mac=(?P<mac>[0-9a-f:]{17}) mtu=(?P<mtu>\d+) ip=(?P<ip>[\d.]+)\n")


@dataclass
class NetGuest:
    proc: subprocess.Popen
    mac: str
    mtu: int
    ip: str


def start_net_guest(running, guest, tap, target=None, *options, ip=None, **kwargs) -> NetGuest:
    """The net guest on TAP (or on `target`, e.g. @FD), launched inside the
    TAP's namespace; returns once it has printed its ready line."""
    ip = ip or tap.guest_ip
    proc = running(GUEST_MEM, "--net:service0=" + (target or tap.name), *options, guest("net"),
                   "--ipv4=%s/24" % ip, preexec_fn=enter_netns(tap.ns.name), **kwargs)
    line = read_line(proc.stdout)
    ready = READY.fullmatch(line)
    assert ready, (line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
    return NetGuest(proc, ready["mac"], int(ready["mtu"]), ready["ip"])


def ping(tap, *args, count: int = 3, wait: int = 10, timeout: float = 60):
    return tap.ns.exec("ping", "-n", "-i", "0.2", "-c", str(count), "-W", str(wait), *args,
                       tap.guest_ip, timeout=timeout)


def received(ping_output: str) -> int:
    match = re.search(r"(\d+) packets transmitted, (\d+) received", ping_output)
    assert match, ping_output
    return int(match[2])


def assert_answers(tap, guest_proc, *args, count: int = 3):
    proc = ping(tap, *args, count=count)
    assert proc.returncode == 0 and received(proc.stdout) == count, (proc.stdout, proc.stderr)
    assert guest_proc.poll() is None


# --- the guest on the wire ------------------------------------------------------

def test_guest_answers_ping(running, guest, tap):
    net = start_net_guest(running, guest, tap)
    assert net.ip == tap.guest_ip
    assert_answers(tap, net.proc)


def test_no_guest_no_answer(tap):
    """Control for the ping tests: nothing else in the namespace answers
    for the guest's address."""
    proc = ping(tap, count=1, wait=1)
    assert proc.returncode != 0 and received(proc.stdout) == 0, proc.stdout


def test_given_mac_is_the_guests_and_the_neighbour_tables(running, guest, tap):
    mac = "02:5a:7e:00:4e:01"
    net = start_net_guest(running, guest, tap, None, "--net-mac:service0=" + mac)
    assert net.mac == mac
    assert_answers(tap, net.proc, count=1)
    neigh = tap.ns.check("ip", "neigh", "show", tap.guest_ip, "dev", tap.name).stdout
    assert "lladdr " + mac in neigh, neigh


def test_default_mac_is_random_locally_administered_unicast(running, guest, tap):
    macs = []
    for _ in range(2):
        net = start_net_guest(running, guest, tap)
        first = int(net.mac.split(":")[0], 16)
        assert first & 0x01 == 0, "multicast MAC %s" % net.mac
        assert first & 0x02 == 0x02, "not locally administered: %s" % net.mac
        macs.append(net.mac)
        stop(net.proc)
    assert macs[0] != macs[1], macs


def test_guest_learns_the_taps_mtu(running, guest, tap):
    tap.ns.check("ip", "link", "set", tap.name, "mtu", "1400")
    net = start_net_guest(running, guest, tap)
    assert net.mtu == 1400


def test_full_size_pings_at_mtu_1400(running, guest, tap):
    """1372 bytes of ICMP data + 8 (ICMP) + 20 (IPv4) = 1400: a frame of
    exactly MTU + 14 bytes, the most the guest reads at once. Don't-fragment,
    so the frame really is that size."""
    tap.ns.check("ip", "link", "set", tap.name, "mtu", "1400")
    net = start_net_guest(running, guest, tap)
    assert_answers(tap, net.proc, "-s", "1372", "-M", "do")


def offload_state(tap, feature: str) -> str:
    out = tap.ns.check(which("ethtool"), "-k", tap.name).stdout
    match = re.search(r"^%s: (on|off)" % feature, out, re.M)
    assert match, out
    return match[1]


def test_gso_and_gro_are_off_after_attach(running, guest, tap):
    features = ("generic-segmentation-offload", "generic-receive-offload")
    tap.ns.check(which("ethtool"), "-K", tap.name, "gso", "on", "gro", "on")
    assert [offload_state(tap, f) for f in features] == ["on", "on"]
    start_net_guest(running, guest, tap)
    assert [offload_state(tap, f) for f in features] == ["off", "off"]


def test_ping_flood_leaves_the_guest_alive(running, guest, tap):
    net = start_net_guest(running, guest, tap)
    flood = tap.ns.exec("ping", "-n", "-q", "-f", "-c", "1000", "-w", "60", tap.guest_ip,
                        timeout=120)
    assert "1000 packets transmitted" in flood.stdout, (flood.stdout, flood.stderr)
    # The guest may drop a frame when the TAP queue is full, but it answers
    # nearly all of them and is still there to answer the next ping.
    assert received(flood.stdout) >= 900, flood.stdout
    assert net.proc.poll() is None
    assert_answers(tap, net.proc, count=1)


# --- @FD: a TAP the caller opened ---------------------------------------------

def add_tap(ns, name: str, *, mtu: int | None = None, up: bool = True, mode: str = "tap"):
    ns.check("ip", "tuntap", "add", "dev", name, "mode", mode)
    if mtu:
        ns.check("ip", "link", "set", name, "mtu", str(mtu))
    if up:
        ns.check("ip", "link", "set", name, "up")


def test_fd_target_answers_ping_and_learns_the_mtu_from_the_fd(running, guest, tap):
    """The test opens tap0 itself and hands the fd over; the MTU is not the
    default, so the guest's MTU can only have come from that TAP."""
    tap.ns.check("ip", "link", "set", tap.name, "mtu", "1300")
    fd = open_tun(tap.ns.name, tap.name)
    try:
        net = start_net_guest(running, guest, tap, "@%d" % fd, pass_fds=(fd,))
    finally:
        os.close(fd)  # the guest holds the TAP alone from here
    assert net.mtu == 1300
    assert_answers(tap, net.proc, "-s", "1272", "-M", "do")


def test_fd_target_from_another_namespace_learns_the_mtu(guest, tap, netns_name_free_tap):
    """A supervisor may open the TAP in the guest's namespace and run the
    launcher in its own: the fd alone must be enough."""
    fd = open_tun(tap.ns.name, netns_name_free_tap)
    try:
        proc = subprocess.Popen([SOLO5_SPT, GUEST_MEM, "--net:service0=@%d" % fd,
                                 guest("net"), "--ipv4=10.77.1.2/24"],
                                pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        os.close(fd)
    try:
        line = read_line(proc.stdout)
        assert READY.fullmatch(line) and READY.fullmatch(line)["mtu"] == "1280", \
            (line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
    finally:
        stop(proc)


@pytest.fixture
def netns_name_free_tap(tap):
    """A TAP (MTU 1280) in the test's namespace whose name no interface of
    the host namespace can have."""
    name = "sptx" + os.urandom(4).hex()[:8]
    add_tap(tap.ns, name, mtu=1280)
    return name


# --- refusals -------------------------------------------------------------------

def launch_refused(guest, tap, target: str, **kwargs):
    """A launch on `target` in the TAP's namespace; it must be refused."""
    proc = run([SOLO5_SPT, GUEST_MEM, "--net:service0=" + target, guest("net"),
                "--ipv4=10.77.0.2/24"], preexec_fn=enter_netns(tap.ns.name), **kwargs)
    line = assert_refused(proc, "Could not attach interface: ")
    assert proc.stderr == line + "\n", "more than one line: %r" % proc.stderr
    assert proc.stdout == "", "the guest ran: %r" % proc.stdout
    return line


def test_missing_interface_is_refused(guest, tap):
    line = launch_refused(guest, tap, "nosuch0")
    assert "nosuch0: No such file or directory" in line


def test_interface_down_is_refused(guest, tap):
    add_tap(tap.ns, "tapdown0", up=False)
    line = launch_refused(guest, tap, "tapdown0")
    assert "tapdown0" in line and "down" in line


def test_tun_device_is_refused(guest, tap):
    add_tap(tap.ns, "tun0", mode="tun")
    line = launch_refused(guest, tap, "tun0")
    assert "tun0" in line and "TAP" in line


def test_tap_held_by_another_guest_is_refused(running, guest, tap):
    first = start_net_guest(running, guest, tap)
    line = launch_refused(guest, tap, tap.name)
    assert tap.name in line and "in use" in line
    assert first.proc.poll() is None
    assert_answers(tap, first.proc, count=1)


def test_fd_not_open_is_refused(guest, tap):
    line = launch_refused(guest, tap, "@200")
    assert "@200" in line


def test_fd_of_a_regular_file_is_refused(guest, tap, tmp_path):
    path = tmp_path / "not-a-tap"
    path.write_bytes(b"\0" * 64)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        line = launch_refused(guest, tap, "@%d" % fd, pass_fds=(fd,))
    finally:
        os.close(fd)
    assert "@%d: not a TAP" % fd in line


def test_fd_of_unattached_dev_net_tun_is_refused(guest, tap):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        line = launch_refused(guest, tap, "@%d" % fd, pass_fds=(fd,))
    finally:
        os.close(fd)
    assert "@%d: not an attached TAP" % fd in line


def test_fd_of_a_tun_device_is_refused(guest, tap):
    add_tap(tap.ns, "tunfd0", mode="tun")
    fd = open_tun(tap.ns.name, "tunfd0", IFF_TUN | IFF_NO_PI)
    try:
        line = launch_refused(guest, tap, "@%d" % fd, pass_fds=(fd,))
    finally:
        os.close(fd)
    assert "TAP" in line
