"""The LaunchPlan: everything the trampoline needs, as bytes.

The byte layout is native/plan.h; this module is the only place Python
builds it, and tests/test_plan.py compares both sides field by field.
"""

from __future__ import annotations

import os
import struct
from collections import namedtuple

from spt import abi
from spt.image import PF_R, PF_W, PF_X

PLAN_MAGIC = b"SPTPLAN1"
PLAN_VERSION = 1
FLAG_X_EXEC_HEAP = 0x1
FLAG_STOP_ON_TERM = 0x2
FLAG_STOP_AT_ENTRY = 0x4
JAIL_NAMESPACES = 0x1
JAIL_IDS = 0x2
JAIL_LIMITS = 0x4

# struct spt_plan (plan.h): the field names, in order, and their formats.
HEADER_FIELDS = (
    ("magic", "8s"), ("version", "I"), ("size", "I"),
    ("mem_size", "Q"), ("entry", "Q"), ("boot_addr", "Q"), ("boot_off", "Q"),
    ("boot_len", "Q"), ("bpf_off", "Q"), ("bpf_count", "Q"), ("segs_off", "Q"),
    ("keep_off", "Q"), ("epoll_off", "Q"), ("notify_off", "Q"),
    ("nsegs", "I"), ("nkeep", "I"), ("nepoll", "I"), ("notify_len", "I"),
    ("flags", "I"), ("kernel_fd", "i"), ("epoll_fd", "i"), ("timer_fd", "i"),
    ("name", "16s"), ("jail", "I"), ("uid", "I"), ("gid", "I"), ("nrlimits", "I"),
    ("rlimit_off", "Q"),
)
HEADER = struct.Struct("<" + "".join(fmt for _, fmt in HEADER_FIELDS))
SEGMENT = struct.Struct("<QQQQQII")  # file_off, vaddr, filesz, start, end, prot, how
SEG_COPY, SEG_MAP = 0, 1  # plan.h SPT_SEG_*
EPOLL = struct.Struct("<iIQ")  # fd, pad, data
RLIMIT = struct.Struct("<IIQQ")  # resource, pad, cur, max
BOOT_INFO = struct.Struct("<QQQQii")  # mem_size, kernel_end, cmdline, mft, epollfd, timerfd
assert BOOT_INFO.size == abi.BOOT_INFO_SIZE

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4


class PlanSegment(namedtuple("PlanSegment", "file_off vaddr filesz start end flags how")):
    """One segment as the trampoline loads it: SEG_COPY reads `filesz` bytes
    at `file_off` of the kernel fd to `vaddr`; SEG_MAP maps
    [start, start + filesz) of guest memory from `file_off` (both
    page-aligned). Either way [start, end) then gets the segment's
    protection."""

    __slots__ = ()


def copied_segments(segments) -> tuple:
    """The image's segments, copied from the unikernel file itself."""
    return tuple(PlanSegment(s.offset, s.vaddr, s.filesz, s.start, s.end, s.flags, SEG_COPY)
                 for s in segments)


def mapped_segments(segments, mapped_len) -> tuple:
    """The image's segments, mapped from a file holding their pages one
    after the other (spt/imagestore.py); `mapped_len(seg)` says how much of
    each that file holds."""
    out, at = [], 0
    for s in segments:
        length = mapped_len(s)
        out.append(PlanSegment(at, s.start, length, s.start, s.end, s.flags, SEG_MAP))
        at += length
    return tuple(out)


class LaunchPlan(namedtuple("LaunchPlan", "mem_size entry kernel_end segments manifest cmdline "
                                           "bpf kernel_fd keep_fds watch epoll_fd timer_fd name "
                                           "flags notify_addr jail uid gid rlimits",
                                           defaults=(0, b"", 0, 0, 0, ()))):
    """Everything the trampoline needs. `segments` are PlanSegments,
    `manifest` is the attached manifest
    as the guest reads it, `keep_fds` the guest's whole fd table, `watch` the
    (fd, epoll data) pairs for yield, `notify_addr` a sockaddr_un for
    sd_notify or empty; `jail`, `uid`, `gid` and `rlimits` ((resource, soft,
    hard) triples) what spt/jail.py decided."""

    __slots__ = ()

    def boot_blob(self) -> bytes:
        """Boot info at 0x11000, the manifest right after it, then the
        command line (spt-abi §3)."""
        mft_addr = abi.BOOT_INFO_ADDR + abi.BOOT_INFO_SIZE
        cmdline_addr = mft_addr + len(self.manifest)
        info = BOOT_INFO.pack(self.mem_size, self.kernel_end, cmdline_addr, mft_addr,
                              self.epoll_fd, self.timer_fd)
        # fsencode: the bytes of the launcher's argv, UTF-8 or not
        return info + self.manifest + os.fsencode(self.cmdline) + b"\0"

    def pack(self) -> bytes:
        boot = self.boot_blob()
        segs = b"".join(SEGMENT.pack(s.file_off, s.vaddr, s.filesz, s.start, s.end,
                                     _prot(s.flags), s.how) for s in self.segments)
        keep = struct.pack("<%di" % len(self.keep_fds), *sorted(self.keep_fds))
        watch = b"".join(EPOLL.pack(fd, 0, data) for fd, data in self.watch)
        limits = b"".join(RLIMIT.pack(res, 0, soft, hard) for res, soft, hard in self.rlimits)
        parts = [boot, self.bpf, segs, keep, watch, self.notify_addr, limits]
        offsets, at = [], HEADER.size
        for part in parts:
            offsets.append(at)
            at += -(-len(part) // 8) * 8
        boot_off, bpf_off, segs_off, keep_off, epoll_off, notify_off, rlimit_off = offsets
        header = HEADER.pack(
            PLAN_MAGIC, PLAN_VERSION, HEADER.size,
            self.mem_size, self.entry, abi.BOOT_INFO_ADDR, boot_off, len(boot),
            bpf_off, len(self.bpf) // 8, segs_off, keep_off, epoll_off, notify_off,
            len(self.segments), len(self.keep_fds), len(self.watch), len(self.notify_addr),
            self.flags, self.kernel_fd, self.epoll_fd, self.timer_fd,
            self.name.encode()[:15], self.jail, self.uid, self.gid, len(self.rlimits), rlimit_off,
        )
        body = b"".join(p.ljust(-(-len(p) // 8) * 8, b"\0") for p in parts)
        return header + body


def _prot(flags: int) -> int:
    return ((PROT_READ if flags & PF_R else 0) | (PROT_WRITE if flags & PF_W else 0)
            | (PROT_EXEC if flags & PF_X else 0))


def notify_sockaddr(path: str) -> bytes:
    """$NOTIFY_SOCKET as a struct sockaddr_un (`@` = abstract namespace)."""
    raw = path.encode()
    if raw.startswith(b"@"):
        raw = b"\0" + raw[1:]
    if not raw or len(raw) > 107:
        return b""
    return struct.pack("<H", 1) + raw + (b"" if raw[0] == 0 else b"\0")
