/*
 * sys.h: raw Linux system calls, one tiny named wrapper each.
 *
 * The trampoline links no libc: after it runs, nothing of the host's C
 * library may remain in the process. Wrappers return the kernel's result
 * unchanged (negative errno on failure).
 */
#ifndef SPT_SYS_H
#define SPT_SYS_H

/* System call numbers, by name, from the kernel's uapi header of the
 * architecture being built (x86_64 and aarch64 number them differently).
 * keep.S includes this part too. */
#include <asm/unistd.h>
#define SYS_write __NR_write
#define SYS_close __NR_close
#define SYS_fstat __NR_fstat
#define SYS_mmap __NR_mmap
#define SYS_mprotect __NR_mprotect
#define SYS_munmap __NR_munmap
#define SYS_rt_sigaction __NR_rt_sigaction
#define SYS_rt_sigprocmask __NR_rt_sigprocmask
#define SYS_pread64 __NR_pread64
#define SYS_socket __NR_socket
#define SYS_sendto __NR_sendto
#define SYS_exit_group __NR_exit_group
#define SYS_epoll_ctl __NR_epoll_ctl
#define SYS_prctl __NR_prctl
#define SYS_capset __NR_capset
#define SYS_timerfd_create __NR_timerfd_create
#define SYS_epoll_create1 __NR_epoll_create1
#define SYS_dup3 __NR_dup3
#define SYS_seccomp __NR_seccomp
#define SYS_close_range __NR_close_range

#ifndef __ASSEMBLER__
#include <stdint.h>
#include <stddef.h>

/* sys3 and sys6: the architecture's system call instruction. */
#include "arch.h"

static inline long sys_write(int fd, const void *buf, size_t n)
{ return sys3(SYS_write, fd, (long)buf, (long)n); }
static inline long sys_pread(int fd, void *buf, size_t n, uint64_t off)
{ return sys6(SYS_pread64, fd, (long)buf, (long)n, (long)off, 0, 0); }
static inline long sys_close(int fd)
{ return sys3(SYS_close, fd, 0, 0); }
static inline long sys_close_range(unsigned lo, unsigned hi)
{ return sys3(SYS_close_range, lo, hi, 0); }
static inline long sys_mmap(uint64_t addr, uint64_t len, int prot, int flags, int fd, uint64_t off)
{ return sys6(SYS_mmap, (long)addr, (long)len, prot, flags, fd, (long)off); }
static inline long sys_mprotect(uint64_t addr, uint64_t len, int prot)
{ return sys3(SYS_mprotect, (long)addr, (long)len, prot); }
static inline long sys_fstat_size(int fd, uint64_t *size)
{
    uint64_t st[18]; /* struct stat: 144 bytes on x86_64, 128 on aarch64;
                      * st_size at offset 48 on both */
    long r = sys3(SYS_fstat, fd, (long)st, 0);
    if (r == 0)
        *size = st[6];
    return r;
}
static inline long sys_rt_sigaction(int sig, const void *act, void *old)
{ return sys6(SYS_rt_sigaction, sig, (long)act, (long)old, 8, 0, 0); }
static inline long sys_rt_sigprocmask(int how, const uint64_t *set)
{ return sys6(SYS_rt_sigprocmask, how, (long)set, 0, 8, 0, 0); }
static inline long sys_prctl(int op, long a)
{ return sys6(SYS_prctl, op, a, 0, 0, 0, 0); }
static inline long sys_capset(const void *header, const void *data)
{ return sys3(SYS_capset, (long)header, (long)data, 0); }
static inline long sys_epoll_create1(int flags)
{ return sys3(SYS_epoll_create1, flags, 0, 0); }
static inline long sys_epoll_ctl(int ep, int op, int fd, void *ev)
{ return sys6(SYS_epoll_ctl, ep, op, fd, (long)ev, 0, 0); }
static inline long sys_timerfd_create(int clock, int flags)
{ return sys3(SYS_timerfd_create, clock, flags, 0); }
static inline long sys_dup3(int from, int to)
{ return sys3(SYS_dup3, from, to, 0); }
static inline long sys_socket(int domain, int type, int proto)
{ return sys3(SYS_socket, domain, type, proto); }
static inline long sys_sendto(int fd, const void *buf, size_t n, const void *addr, uint32_t alen)
{ return sys6(SYS_sendto, fd, (long)buf, (long)n, 0, (long)addr, alen); }
static inline __attribute__((noreturn)) void sys_exit_group(int status)
{
    for (;;)
        sys3(SYS_exit_group, status, 0, 0);
}
#endif /* __ASSEMBLER__ */

#endif
