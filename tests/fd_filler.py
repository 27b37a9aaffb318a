"""Start a command with its fd table full of strangers (tests/test_fd_hygiene.py).

    python tests/fd_filler.py [--upto N] [--rlimit N] [--tap FD:IFACE] -- CMD ARGS...

Fills every fd from 3 to N (default 1023) with a mix of what a careless
parent leaves behind - pipes, socket pairs, inet sockets, directories,
eventfds, memfds, an unattached /dev/net/tun, epoll instances, plain files -
every third one close-on-exec and the rest inheritable, optionally puts an
attached TAP at FD (for `--net:NAME=@FD`), optionally lowers RLIMIT_NOFILE
to N first, and execs CMD. It prints nothing: CMD owns stdout and stderr.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import resource
import select
import socket
import struct
import tempfile

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


def strangers(scratch_dir: str):
    """An endless supply of new fds of every kind, each yielded once."""
    kinds = 0
    while True:
        kind = kinds % 9
        kinds += 1
        if kind == 0:
            yield from os.pipe()
        elif kind == 1:
            for s in socket.socketpair():
                yield s.detach()
        elif kind == 2:
            yield socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()
        elif kind == 3:
            yield os.open(scratch_dir, os.O_RDONLY | os.O_DIRECTORY)
        elif kind == 4:
            yield os.eventfd(0)
        elif kind == 5:
            yield os.memfd_create("stranger")
        elif kind == 6:
            yield os.open("/dev/net/tun", os.O_RDWR)
        elif kind == 7:
            ep = select.epoll()
            yield os.dup(ep.fileno())
            ep.close()
        else:
            yield os.open(os.path.join(scratch_dir, "file"), os.O_RDWR | os.O_CREAT, 0o600)


def attach_tap(ifname: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", ifname.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def fill(upto: int, tap_at: int | None, tap: str | None) -> None:
    scratch = tempfile.mkdtemp(prefix="spt-fds-")
    if tap_at is not None:
        fd = attach_tap(tap)
        os.dup2(fd, tap_at, inheritable=True)
        os.close(fd)
    supply = strangers(scratch)
    for target in range(3, upto + 1):
        if target == tap_at:
            continue
        fd = next(supply)
        if fd != target:  # a pair's second end, or an fd kind that left a hole
            os.dup2(fd, target)
            os.close(fd)
        os.set_inheritable(target, target % 3 != 0)  # every third one close-on-exec
    for fd in range(upto + 1, upto + 8):  # the other end of a pair, made ahead
        if fd != tap_at:
            try:
                os.close(fd)
            except OSError:
                pass
    os.unlink(os.path.join(scratch, "file"))
    os.rmdir(scratch)  # the directory fds stay open on a deleted directory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upto", type=int, default=1023)
    parser.add_argument("--rlimit", type=int)
    parser.add_argument("--tap", help="FD:IFACE, an attached TAP at fd FD")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    cmd = opts.cmd[1:] if opts.cmd[:1] == ["--"] else opts.cmd
    tap_at, tap = None, None
    if opts.tap:
        number, tap = opts.tap.split(":", 1)
        tap_at = int(number)
    if opts.rlimit:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (opts.rlimit, hard))
    fill(opts.upto, tap_at, tap)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
