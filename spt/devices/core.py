"""The core of every guest: memory, console, exit, time, TLS and yield.

Options: `--mem=MB`, `--x-exec-heap`. The guest always gets the console
(fd 1), one epoll instance and one timerfd for yield; their policy fragment
is `policies/core.policy`. Every launch starts from the fd table
`sanitize_fds` leaves: stdio, and whatever the options name.
"""

import posix  # not os: the launch path's modules do without it (spt/lean.py)

from spt import SptError, abi, lean
from spt.devices import Attached

POLICY = "core"
CONSOLE_FD = 1


def parse_mem(value: str) -> int:
    """--mem=N: guest memory in MiB, a positive integer."""
    if not (value.isascii() and value.isdigit()) or int(value) <= 0:
        raise SptError("Malformed argument to --mem")
    return int(value)


def attach() -> Attached:
    """Reserve the fd numbers of the epoll instance and the timerfd.

    The filter must name these numbers before they exist (the trampoline
    creates both after exec), so /dev/null placeholders hold the numbers now
    and the trampoline dup3()s the real instances over them.
    """
    epoll_fd = posix.open(lean.DEVNULL, posix.O_RDONLY | posix.O_CLOEXEC)
    timer_fd = posix.open(lean.DEVNULL, posix.O_RDONLY | posix.O_CLOEXEC)
    return Attached(
        entry=None,  # the core is no manifest device: entry 0 is the manifest's own
        fds=(CONSOLE_FD, epoll_fd, timer_fd),
        facts={"console_fd": CONSOLE_FD, "epoll_fd": epoll_fd, "timer_fd": timer_fd},
        policy=POLICY,
        watch=((timer_fd, abi.TIMER_EPOLL_DATA),),
    )


def min_mem_mib(kernel_end: int) -> int:
    """The smallest --mem an image fits in: its segments plus the scratch
    area the trampoline uses at the top of guest memory."""
    return -(-(kernel_end + SCRATCH_BYTES) // (1 << 20))


def check_mem_limits(mem_size: int, kernel_end: int, ceiling: int) -> None:
    """Memory the guest asks for must fit its image, the launch scratch area,
    the address space below the trampoline, and RLIMIT_AS."""
    mib = mem_size >> 20
    if mem_size < kernel_end + SCRATCH_BYTES:
        raise SptError("--mem=%d is too small for this unikernel (needs at least %d MiB)"
                       % (mib, min_mem_mib(kernel_end)))
    if mem_size > ceiling:
        # Solo5's tender fails its mmap of guest memory here: its words, then why
        raise SptError("Error allocating guest memory: Cannot allocate memory (--mem=%d is "
                       "beyond the address space spt can give a guest, %d MiB)"
                       % (mib, ceiling >> 20))
    soft, _hard = lean.getrlimit(lean.RLIMIT_AS)
    if soft != lean.RLIM_INFINITY and mem_size + OVERHEAD_BYTES > soft:
        raise SptError("Error allocating guest memory: Cannot allocate memory (--mem=%d is "
                       "beyond this process's address-space limit, RLIMIT_AS %d MiB)"
                       % (mib, soft >> 20))


# Room the trampoline needs at the top of guest memory (filter, arguments),
# zeroed before the guest starts; and what the launch maps besides the guest.
SCRATCH_BYTES = 64 * 1024
OVERHEAD_BYTES = 64 * 1024 * 1024


def sanitize_fds(keep: set[int]) -> None:
    """Close what the launcher inherited beyond stdio (except fds the options
    name), so device fds get small numbers and RLIMIT_NOFILE is not spent on
    strangers; and make sure 0-2 are open, so a device can never land on the
    console's number."""
    for fd in (0, 1, 2):
        try:
            posix.fstat(fd)
        except OSError:
            null = posix.open(lean.DEVNULL, posix.O_RDWR)
            if null != fd:
                posix.dup2(null, fd)
                posix.close(null)
    lo = 3
    for fd in sorted(k for k in keep if k >= 3):
        posix.closerange(lo, fd)
        lo = fd + 1
    posix.closerange(lo, _fd_limit())


def _fd_limit() -> int:
    soft, _hard = lean.getrlimit(lean.RLIMIT_NOFILE)
    return min(soft if soft != lean.RLIM_INFINITY else 1 << 20, 1 << 20)
