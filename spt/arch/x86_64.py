"""x86_64: the facts of this architecture that the Python side of spt needs."""

NAME = "x86_64"
ELF_MACHINE = "EM_X86_64"  # e_machine 62, as pyelftools names it
SECCOMP_ARCH = "x86_64"    # libseccomp's name; AUDIT_ARCH_X86_64
AUDIT_ARCH = 0xC000003E

# Linux's numbers for the calls a guest makes (spt-abi §5). Only tests and
# reports use numbers; the filter is compiled from names by libseccomp, and
# tests/test_arch.py checks this table against libseccomp's.
SYSCALLS = {
    "read": 0,
    "write": 1,
    "pread64": 17,
    "pwrite64": 18,
    "arch_prctl": 158,
    "clock_gettime": 228,
    "exit_group": 231,
    "epoll_pwait": 281,
    "timerfd_settime": 286,
}

# The guest's stack pointer at entry is mem_size - STACK_GAP: as if the entry
# had just been called (%rsp + 8 is 16-aligned). native/x86_64/arch.h.
STACK_GAP = 8
