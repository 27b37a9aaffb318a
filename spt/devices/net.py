"""Network devices: `--net:NAME=IFACE`, `--net:NAME=@FD`, `--net-mac:NAME=MAC`.

A net device is a TAP interface. The guest reads and writes whole Ethernet
frames on its fd (non-blocking; epoll tells it when one is waiting), so the
filter allows read and write on that fd and nothing else.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct

from spt import abi
from spt.devices import HOST_INTERFACE, Attached, Option
from spt.errors import SptError
from spt.manifest import Entry

TYPE = abi.MFT_DEV_NET_BASIC
POLICY = "net"

TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
TUNGETDEVNETNS = 0x54E3  # _IO('T', 227): an fd of the TAP's network namespace
CLONE_NEWNET = 0x40000000
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913
SIOCGIFMTU = 0x8921
SIOCETHTOOL = 0x8946
ETHTOOL_GGSO = 0x23
ETHTOOL_SGSO = 0x24
ETHTOOL_GGRO = 0x2B
ETHTOOL_SGRO = 0x2C
IFNAMSIZ = 16
TUN_DEVICE = "/dev/net/tun"
_IFREQ = struct.Struct("16sH22x")  # name, flags (short), padded to 40 bytes
_IFREQ_INT = struct.Struct("16si20x")  # name, int (mtu), padded to 40 bytes


def _parse_target(name: str, value: str):
    """IFACE, or @FD for a TAP the caller already opened."""
    if value.startswith("@"):
        digits = value[1:]
        # Solo5's tender reports these as `tap_attach: REASON`
        if not (digits.isascii() and digits.isdigit()):
            raise SptError("tap_attach: Invalid argument (Malformed argument to --net:%s=@FD: %r)"
                           % (name, value))
        if int(digits) >= 1 << 31:
            raise SptError("tap_attach: Numerical result out of range (Malformed argument to "
                           "--net:%s=@FD: %r)" % (name, value))
        return int(digits)
    if not value:  # Solo5's parser does not take the option
        raise SptError("Invalid option: `--net:%s=' (Malformed argument to --net:%s=IFACE: "
                       "empty IFACE)" % (name, name), usage=True)
    if len(value) >= IFNAMSIZ or "/" in value or value.strip() != value:
        raise SptError("Could not attach interface: %s: Invalid argument (Malformed argument "
                       "to --net:%s=IFACE: %r)" % (value, name, value))
    return value


def _parse_mac(name: str, value: str) -> bytes:
    parts = value.split(":")
    try:
        if len(parts) != 6 or any(len(p) != 2 for p in parts):
            raise ValueError
        mac = bytes(int(p, 16) for p in parts)
    except ValueError:
        # Solo5's parser does not take the option: its words, then why
        raise SptError("Invalid option: `--net-mac:%s=%s' (Malformed argument to --net-mac:%s: "
                       "%r is not a MAC address (xx:xx:xx:xx:xx:xx))" % (name, value, name, value),
                       usage=True) from None
    if mac[0] & 0x01:
        raise SptError("Malformed argument to --net-mac:%s: %s is a multicast address"
                       % (name, value))
    return mac


OPTIONS = (
    Option("net", "target", _parse_target, "IFACE|@FD",
           "attach net device NAME to the TAP interface IFACE, or to the TAP fd FD "
           "the caller opened", required=True, host=HOST_INTERFACE),
    Option("net-mac", "mac", _parse_mac, "HWADDR",
           "MAC address of net device NAME (default: random, locally administered)"),
)


def random_mac() -> bytes:
    """Random, locally administered, unicast (spt-abi §4)."""
    mac = bytearray(os.urandom(6))
    mac[0] = (mac[0] & 0xFE) | 0x02
    return bytes(mac)


def inherited_fds(settings: dict) -> set[int]:
    """`@FD`: an fd the caller passed, which the launcher must not close."""
    target = settings.get("target")
    return {target} if isinstance(target, int) else set()


def check(settings: dict) -> None:
    """Nothing to verify ahead: a TAP may be created right before the start."""


def attach(entry: Entry, settings: dict) -> Attached:
    target = settings["target"]
    if isinstance(target, int):
        fd, ifname = _adopt_fd(target)
    else:
        fd, ifname = _open_tap(target), target
    try:
        try:
            with _in_netns_of(fd):
                mtu = _mtu(ifname)
                _offloads_off(ifname)
        except OSError as exc:  # setns refused: no privilege over that namespace
            raise _fail(ifname, "cannot enter the TAP's network namespace: %s"
                        % (exc.strerror or exc)) from None
    except BaseException:
        if not isinstance(target, int):
            os.close(fd)
        raise
    mac = settings.get("mac") or random_mac()
    return Attached(
        entry=entry._replace(attached=True, hostfd=fd, mac=mac, mtu=mtu),
        fds=(fd,),
        facts={"fd": fd, "ifname": ifname, "mtu": mtu},
        policy=POLICY,
        watch=((fd, entry.index),),
    )


class _in_netns_of:
    """Look at the TAP's interface in the namespace the TAP lives in.

    A TAP passed as @FD may have been opened in another network namespace
    than the launcher's (a supervisor wiring a guest's namespace): its name
    means nothing here, or worse, names another interface. The fd tells its
    namespace (TUNGETDEVNETNS, Linux 5.2); when that differs from ours, the
    launcher steps into it for the name-based ioctls and straight back. A
    kernel or privilege that cannot say keeps the lookup in our namespace."""

    def __init__(self, tap_fd: int):
        self.tap_fd = tap_fd
        self.home = None

    def __enter__(self):
        try:
            theirs = fcntl.ioctl(self.tap_fd, TUNGETDEVNETNS, 0)
        except OSError:
            return self
        try:
            if os.fstat(theirs).st_ino == os.stat("/proc/self/ns/net").st_ino:
                return self
            self.home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            _setns(theirs)
        except BaseException:
            self.__exit__()
            raise
        finally:
            os.close(theirs)
        return self

    def __exit__(self, *exc):
        if self.home is not None:
            try:
                _setns(self.home)
            finally:
                os.close(self.home)
                self.home = None


def _setns(ns_fd: int) -> None:
    """setns(2) for a network namespace (os.setns arrived in Python 3.12)."""
    setns = getattr(os, "setns", None)
    if setns is not None:
        setns(ns_fd, CLONE_NEWNET)
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(ns_fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _fail(ifname: str, reason: str) -> SptError:
    return SptError("Could not attach interface: %s: %s" % (ifname, reason))


def _ifreq_ioctl(request: int, packed: bytes) -> bytes:
    """An interface ioctl on a throwaway socket (socket is imported here: it
    costs a launch without net devices several milliseconds). AF_UNIX serves
    as well as AF_INET (the kernel hands interface ioctls of any family to
    the device layer), so a unit may forbid Internet sockets altogether."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        return fcntl.ioctl(s.fileno(), request, packed)


def _flags(ifname: str) -> int:
    try:
        out = _ifreq_ioctl(SIOCGIFFLAGS, _IFREQ.pack(ifname.encode(), 0))
    except OSError as exc:
        if exc.errno == 19:  # ENODEV: Solo5 says ENOENT's words for a missing interface
            raise _fail(ifname, "No such file or directory (no such interface)") from None
        raise _fail(ifname, exc.strerror or str(exc)) from None
    return _IFREQ.unpack(out)[1]


def _mtu(ifname: str) -> int:
    try:
        out = _ifreq_ioctl(SIOCGIFMTU, _IFREQ_INT.pack(ifname.encode(), 0))
    except OSError as exc:
        raise _fail(ifname, "cannot read MTU: %s" % (exc.strerror or exc)) from None
    return _IFREQ_INT.unpack(out)[1]


def _offloads_off(ifname: str) -> None:
    """GRO and GSO off: the guest reads at most MTU + 14 bytes a frame, so an
    aggregated frame would be cut short. Interfaces without the feature
    (EOPNOTSUPP) have nothing to switch off. An offload already off is left
    alone: switching needs CAP_NET_ADMIN, which a launcher running as the
    owner of a TAP made for it beforehand does not have."""
    import array
    import errno

    for get, put in ((ETHTOOL_GGSO, ETHTOOL_SGSO), (ETHTOOL_GGRO, ETHTOOL_SGRO)):
        try:
            for cmd in (get, put):
                value = array.array("I", [cmd, 0])  # struct ethtool_value; ifr_data points at it
                ifreq = struct.pack("16sP16x", ifname.encode(), value.buffer_info()[0])
                _ifreq_ioctl(SIOCETHTOOL, ifreq)
                if cmd == get and not value[1]:
                    break
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                continue
            hint = (" (without CAP_NET_ADMIN, switch them off when making the TAP: "
                    "ethtool -K %s gso off gro off)" % ifname if exc.errno == errno.EPERM else "")
            raise _fail(ifname, "cannot switch offloads off: %s%s"
                        % (exc.strerror, hint)) from None


def tunsetiff(fd: int, ifname: str) -> str:
    """Attach an open /dev/net/tun to the TAP `ifname` (creating it if the
    caller may) as a TAP without packet information; returns the name the
    kernel gave it. Raises OSError."""
    out = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(ifname.encode(), IFF_TAP | IFF_NO_PI))
    return _IFREQ.unpack(out)[0].split(b"\0", 1)[0].decode()


def _open_tap(ifname: str) -> int:
    flags = _flags(ifname)  # also: does it exist?
    if not flags & IFF_UP:
        raise _fail(ifname, "Network is down (interface is down)")
    try:
        fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail(ifname, "%s (%s)" % (exc.strerror, TUN_DEVICE)) from None
    try:
        got = tunsetiff(fd, ifname)
    except OSError as exc:
        os.close(fd)
        reason = exc.strerror or str(exc)
        if exc.errno == 16:  # EBUSY: another process holds the TAP
            reason = "%s (already in use by another process)" % reason
        elif exc.errno == 22:  # EINVAL: exists but is not a TAP (e.g. a TUN)
            reason = "%s (not a TAP interface)" % reason
        raise _fail(ifname, reason) from None
    if got != ifname:
        os.close(fd)
        raise _fail(ifname, "Invalid argument (the kernel attached %r instead)" % got)
    return fd


def _adopt_fd(fd: int) -> tuple[int, str]:
    """A TAP opened by the caller (albatross-style): learn its interface and
    MTU from the fd itself, and make it non-blocking as the guest expects."""
    label = "@%d" % fd
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise _fail(label, exc.strerror or str(exc)) from None
    if not stat.S_ISCHR(st.st_mode):
        raise _fail(label, "not a TAP device fd")
    try:
        out = fcntl.ioctl(fd, TUNGETIFF, _IFREQ.pack(b"", 0))
    except OSError as exc:
        raise _fail(label, "not an attached TAP device fd (%s)" % (exc.strerror or exc)) from None
    name, flags = _IFREQ.unpack(out)
    ifname = name.split(b"\0", 1)[0].decode()
    if not flags & IFF_TAP:
        raise _fail(label, "%s is not a TAP interface" % ifname)
    if not flags & IFF_NO_PI:
        raise _fail(label, "%s was opened without IFF_NO_PI" % ifname)
    os.set_blocking(fd, False)
    os.set_inheritable(fd, True)
    return fd, ifname
