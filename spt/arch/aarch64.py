"""aarch64: the facts of this architecture that the Python side of spt needs."""

NAME = "aarch64"
ELF_MACHINE = "EM_AARCH64"  # e_machine 183, as pyelftools names it
SECCOMP_ARCH = "aarch64"    # libseccomp's name; AUDIT_ARCH_AARCH64
AUDIT_ARCH = 0xC00000B7

# Linux's numbers for the calls a guest makes (the generic syscall table).
# No arch_prctl: an aarch64 guest sets its TLS base with `msr tpidr_el0`,
# an instruction, so the allow-list has one call fewer than on x86_64.
SYSCALLS = {
    "read": 63,
    "write": 64,
    "pread64": 67,
    "pwrite64": 68,
    "clock_gettime": 113,
    "exit_group": 94,
    "epoll_pwait": 22,
    "timerfd_settime": 86,
}

# sp = mem_size - STACK_GAP at entry (sp must stay 16-aligned on aarch64).
# native/aarch64/arch.h.
STACK_GAP = 16
