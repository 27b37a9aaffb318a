"""The LaunchPlan: everything the trampoline needs, as bytes, and the exec
that hands it over.

The byte layout is native/plan.h; this module is the only place Python
builds it, and tests/test_plan.py compares both sides field by field.
"""

import posix  # not os: the launch path's modules do without it (spt/lean.py)
import sys

from spt import SptError, abi, lean
from spt.image import PF_R, PF_W, PF_X
from spt.lean import Layout, Record, fsencode

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
HEADER = Layout("<" + "".join(fmt for _, fmt in HEADER_FIELDS))
SEGMENT = Layout("<QQQQQII")  # file_off, vaddr, filesz, start, end, prot, how
SEG_COPY, SEG_MAP = 0, 1  # plan.h SPT_SEG_*
EPOLL = Layout("<iIQ")  # fd, pad, data
RLIMIT = Layout("<IIQQ")  # resource, pad, cur, max
BOOT_INFO = Layout("<QQQQii")  # mem_size, kernel_end, cmdline, mft, epollfd, timerfd
assert BOOT_INFO.size == abi.BOOT_INFO_SIZE

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4

# The trampoline, built by native/Makefile; it is linked at TRAMPOLINE_BASE,
# and guest memory must stay below.
TRAMPOLINE = lean.join(lean.dirname(__file__), "libexec/spt-trampoline")  # __file__: absolute
TRAMPOLINE_BASE = 0x700000000000


class PlanSegment(Record, fields="file_off vaddr filesz start end flags how"):
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


class LaunchPlan(Record, fields="mem_size entry kernel_end segments manifest cmdline "
                               "bpf kernel_fd keep_fds watch epoll_fd timer_fd name "
                               "flags notify_addr jail uid gid rlimits",
                 defaults=(0, b"", 0, 0, 0, ())):
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
        return info + self.manifest + fsencode(self.cmdline) + b"\0"

    def pack(self) -> bytes:
        boot = self.boot_blob()
        segs = b"".join(SEGMENT.pack(s.file_off, s.vaddr, s.filesz, s.start, s.end,
                                     _prot(s.flags), s.how) for s in self.segments)
        keep = Layout("<%di" % len(self.keep_fds)).pack(*sorted(self.keep_fds))
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


def assemble(image, stream, attached, manifest: bytes, bpf: bytes, mem_size: int, cmdline: str,
             kernel: str, jail_mode: str, user, x_exec_heap: bool) -> "LaunchPlan":
    """The plan of a launch whose image, devices (`attached`, the core's
    first), packed manifest and filter are settled: its segments mapped from
    the image store where it can hold them, so that every guest of one image
    shares its unwritten pages (spt/imagestore.py), else copied from the
    kernel file; its jail (spt/jail.py); its flags and sd_notify address
    from the environment."""
    from spt import imagestore, jail

    segments_fd = imagestore.publish(image, stream)
    if segments_fd is not None:
        segments = mapped_segments(image.segments, imagestore.mapped_len)
        imagestore.dump_mapped_pages()
    else:
        segments, segments_fd = copied_segments(image.segments), stream.fileno()
    keep_fds = tuple(sorted({fd for dev in attached for fd in dev.fds}))  # ascending: plan.h
    jailed = jail.decide(jail_mode, user, keep_fds)
    notify = lean.getenv("NOTIFY_SOCKET", "")
    flags = FLAG_X_EXEC_HEAP if x_exec_heap else 0
    if lean.getenv("SPT_STOP_ON_TERM") == "1":
        flags |= FLAG_STOP_ON_TERM
    core = attached[0]
    return LaunchPlan(
        mem_size=mem_size, entry=image.entry, kernel_end=image.kernel_end,
        segments=segments, manifest=manifest, cmdline=cmdline, bpf=bpf,
        kernel_fd=segments_fd, keep_fds=keep_fds,
        watch=tuple(w for dev in attached for w in dev.watch),
        epoll_fd=core.facts["epoll_fd"], timer_fd=core.facts["timer_fd"],
        name=process_name(kernel), flags=flags,
        notify_addr=notify_sockaddr(notify) if notify else b"",
        **jailed._asdict(),
    )


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
    return Layout("<H").pack(1) + raw + (b"" if raw[0] == 0 else b"\0")


def process_title(kernel: str) -> str:
    """`spt:KERNEL`, in full (what `spt policy` names a launch)."""
    return "spt:" + lean.getenv("SPT_NAME", kernel.rpartition("/")[2])


def process_name(kernel: str) -> str:
    """`spt:KERNEL` as ps shows it (comm holds 15 bytes)."""
    return process_title(kernel)[:15]


def guest_cmdline(args: list[str]) -> str:
    """ARGS joined as the guest reads them, refused if the ABI has no room
    (counted in bytes). An argument that is not UTF-8 reached us decoded
    with surrogateescape; fsencode gives the guest its very bytes."""
    cmdline = " ".join(args)
    if len(lean.fsencode(cmdline)) > abi.CMDLINE_SIZE - 1:
        raise SptError("Guest command line too long (max=%d characters)" % (abi.CMDLINE_SIZE - 1))
    return cmdline


def exec_trampoline(plan, timer=None) -> None:
    """Hand the plan to the trampoline: Python never runs again. Its first
    steps are no_new_privs and cutting its capabilities to what the jail
    needs (native/jail.h), before it reads anything but the plan."""
    plan_fd = posix.memfd_create("spt-plan", 0)  # inherited across exec, closed by the trampoline
    data = plan.pack()
    view = memoryview(data)
    while view:
        view = view[posix.write(plan_fd, view):]
    for fd in plan.keep_fds + (plan.kernel_fd,):
        posix.set_inheritable(fd, True)
    # The process name is the trampoline's to set: exec resets it to the
    # executable's file name, so naming the process here would not last.
    if timer is not None:
        timer.mark("plan")
        timer.report()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        posix.execve(TRAMPOLINE, [plan.name, str(plan_fd)], {})
    except OSError as exc:
        raise SptError("cannot run the trampoline %s: %s (build it with `make`)"
                       % (TRAMPOLINE, exc.strerror)) from None
