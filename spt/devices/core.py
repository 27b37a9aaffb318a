"""The core of every guest: memory, console, exit, time, TLS and yield.

Options: `--mem=MB`, `--x-exec-heap`. The guest always gets the console
(fd 1), one epoll instance and one timerfd for yield; their policy fragment
is `policies/core.policy`.
"""

from __future__ import annotations

import os

from spt import abi
from spt.devices import Attached
from spt.errors import SptError
from spt.manifest import Entry

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
    epoll_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    timer_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    return Attached(
        entry=Entry(index=0, name="", type=abi.MFT_RESERVED_FIRST),
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
    import resource

    mib = mem_size >> 20
    if mem_size < kernel_end + SCRATCH_BYTES:
        raise SptError("--mem=%d is too small for this unikernel (needs at least %d MiB)"
                       % (mib, min_mem_mib(kernel_end)))
    if mem_size > ceiling:
        # Solo5's tender fails its mmap of guest memory here: its words, then why
        raise SptError("Error allocating guest memory: Cannot allocate memory (--mem=%d is "
                       "beyond the address space spt can give a guest, %d MiB)"
                       % (mib, ceiling >> 20))
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and mem_size + OVERHEAD_BYTES > soft:
        raise SptError("Error allocating guest memory: Cannot allocate memory (--mem=%d is "
                       "beyond this process's address-space limit, RLIMIT_AS %d MiB)"
                       % (mib, soft >> 20))


# Room the trampoline needs at the top of guest memory (filter, arguments),
# zeroed before the guest starts; and what the launch maps besides the guest.
SCRATCH_BYTES = 64 * 1024
OVERHEAD_BYTES = 64 * 1024 * 1024
