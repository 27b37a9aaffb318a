"""Block devices: `--block:NAME=PATH`, `--block-sector-size:NAME=N`.

A block device is a file (or a host block device) opened read-write. The guest
reads and writes it one sector at a time with pread64/pwrite64, and the filter
pins both the count (one sector) and the offset (inside the file), so a guest
can neither grow the file nor reach past it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from spt import abi
from spt.devices import HOST_FILE, Attached, Option
from spt.errors import SptError
from spt.manifest import Entry

TYPE = abi.MFT_DEV_BLOCK_BASIC
POLICY = "block"
BLKGETSIZE64 = 0x80081272


def _parse_path(name: str, value: str) -> str:
    if not value:
        raise SptError("Malformed argument to --block:%s=PATH: empty path" % name)
    return value


def _parse_sector_size(name: str, value: str) -> int:
    # digits only: int() would also take "+512", " 512", "5_12" and non-ASCII digits
    size = int(value) if value.isascii() and value.isdigit() else 0
    if size < abi.BLOCK_DEFAULT_SECTOR or size & (size - 1) or size > 0xFFFF:
        raise SptError("Block size must be a multiple of 2 greater than or equal 512")
    return size


OPTIONS = (
    Option("block", "path", _parse_path, "PATH",
           "attach block device NAME to the file or block device at PATH", required=True,
           host=HOST_FILE),
    Option("block-sector-size", "sector_size", _parse_sector_size, "N",
           "sector size of block device NAME in bytes (a power of two >= 512; default 512)"),
)


def inherited_fds(settings: dict) -> set[int]:
    return set()


# Kernel interfaces that look like files but are not storage: a sysfs or
# debugfs attribute reached through a symlink would pass as a 4096-byte disk
# and hand the guest a read-write fd on a kernel tunable. Names as
# /proc/self/mountinfo spells them.
PSEUDO_FILESYSTEMS = frozenset((
    "sysfs", "proc", "debugfs", "tracefs", "securityfs", "cgroup", "cgroup2", "configfs",
    "pstore", "bpf", "efivarfs", "fusectl", "selinuxfs", "smackfs", "apparmorfs",
    "binfmt_misc", "devpts", "mqueue", "nsfs", "autofs", "rpc_pipefs", "nfsd", "hugetlbfs",
))


def _open_storage(settings: dict, mode: int, exclusive: bool = False) -> tuple[int, str, int]:
    """(fd, path, sector size) of the configured storage, opened with `mode`.

    The path is followed as the operator gave it (symlinks included: udev's
    /dev/disk/by-id names are symlinks); what is checked is the object the
    open reached, on its fd: never a pseudo filesystem, and a block device
    only if nobody holds it exclusively (`exclusive`: reopened O_EXCL, which
    a mounted filesystem or another O_EXCL user makes fail with EBUSY)."""
    path = settings["path"]
    flags = mode | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SptError("%s: %s" % (path, exc.strerror)) from None
    try:
        fstype = filesystem_type(fd)
        if fstype in PSEUDO_FILESYSTEMS:
            raise SptError("%s: is on %s, a kernel interface, not storage" % (path, fstype))
        if exclusive and stat.S_ISBLK(os.fstat(fd).st_mode):
            # the same device (the fd's magic link), now claimed exclusively
            try:
                held = os.open("/proc/self/fd/%d" % fd, flags | os.O_EXCL)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    raise SptError("%s: Backing storage is in use (a mounted filesystem "
                                   "or another exclusive user)" % path) from None
                raise SptError("%s: %s" % (path, exc.strerror)) from None
            os.close(fd)
            fd = held
    except BaseException:
        os.close(fd)
        raise
    return fd, path, settings.get("sector_size", abi.BLOCK_DEFAULT_SECTOR)


def filesystem_type(fd: int) -> str:
    """The type of the filesystem `fd` lives on, as /proc/self/mountinfo
    names it (the mount is the fd's own, from /proc/self/fdinfo: no path is
    looked up again). Python has no fstatfs(); this costs two small reads."""
    try:
        with open("/proc/self/fdinfo/%d" % fd, "rb") as f:
            info = f.read()
        mnt_id = next(line.split()[1] for line in info.splitlines()
                      if line.startswith(b"mnt_id:"))
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                if line.split(None, 1)[0] == mnt_id:
                    return line.split(b" - ", 1)[1].split()[0].decode(errors="replace")
    except (OSError, StopIteration, IndexError):
        pass
    raise SptError("cannot tell which filesystem holds fd %d (is /proc mounted?)" % fd)


def check(settings: dict) -> None:
    """The backing storage exists and has a valid size, checked on a
    read-only open without the lock or O_EXCL (the guest may be running)."""
    fd, path, sector = _open_storage(settings, os.O_RDONLY)
    try:
        check_storage(fd, path, sector)
    finally:
        os.close(fd)


def attach(entry: Entry, settings: dict) -> Attached:
    fd, path, sector = _open_storage(settings, os.O_RDWR, exclusive=True)
    try:
        capacity = check_storage(fd, path, sector)
        _lock(fd, path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return Attached(
        entry=entry._replace(attached=True, hostfd=fd, capacity=capacity, block_size=sector),
        fds=(fd,),
        facts={"fd": fd, "sector_size": sector, "capacity": capacity},
        policy=POLICY,
    )


def check_storage(fd: int, path: str, sector: int) -> int:
    """The capacity of the open storage, refused unless it is whole sectors,
    at least one (`spt unit check` runs this on a read-only open)."""
    capacity = _capacity(fd, path)
    if capacity % sector:
        raise SptError("%s: Backing storage size must be block aligned (%d bytes, "
                       "sector size %d)" % (path, capacity, sector))
    if capacity < sector:
        raise SptError("%s: Backing storage must be at least 1 block (%d bytes)"
                       % (path, sector))
    return capacity


def _capacity(fd: int, path: str) -> int:
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    if stat.S_ISBLK(st.st_mode):
        buf = fcntl.ioctl(fd, BLKGETSIZE64, bytes(8))
        return struct.unpack("<Q", buf)[0]
    raise SptError("%s: not a regular file or block device" % path)


def _lock(fd: int, path: str) -> None:
    """An exclusive flock on the open file: it lives as long as the guest's
    fd, so a second tender (ours, or any flock user) cannot attach the same
    storage while this guest runs."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SptError("%s: Backing storage is in use by another guest (locked)"
                           % path) from None
        raise SptError("%s: cannot lock: %s" % (path, exc.strerror)) from None
