"""Running launchers and opening TAPs inside a test's network namespace.

The `netns` / `tap` fixtures (conftest.py) make the namespace; these helpers
put a process, or one open of /dev/net/tun, into it. Python 3.11 has no
os.setns, so setns(2) is called through ctypes.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns(%s): %s" % (what, os.strerror(err)))


def netns_path(name: str) -> str:
    return "/run/netns/" + name


def enter_netns(name: str):
    """preexec_fn for Popen: the child (and the launcher it execs) lives in
    the namespace, so it finds the namespace's TAPs by name."""
    path = netns_path(name)

    def enter():
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd, path)
        finally:
            os.close(fd)

    return enter


def open_tun(netns: str, ifname: str, flags: int = IFF_TAP | IFF_NO_PI) -> int:
    """Open /dev/net/tun and attach it to IFACE of namespace NETNS, as a
    caller that hands `--net:NAME=@FD` to the launcher would. The device is
    looked up in the namespace the fd was opened in, so this thread enters
    NETNS for the open and returns to its own namespace afterwards. The fd
    is not inheritable: pass it with pass_fds."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(target, netns)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        finally:
            _setns(own, "own namespace")
    finally:
        os.close(target)
        os.close(own)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", ifname.encode(), flags))
    except BaseException:
        os.close(fd)
        raise
    return fd
