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
#define SYS_capget __NR_capget
#define SYS_timerfd_create __NR_timerfd_create
#define SYS_epoll_create1 __NR_epoll_create1
#define SYS_dup3 __NR_dup3
#define SYS_seccomp __NR_seccomp
#define SYS_close_range __NR_close_range
/* The jail's (jail.h). */
#define SYS_connect __NR_connect
#define SYS_chdir __NR_chdir
#define SYS_fchdir __NR_fchdir
#define SYS_setgroups __NR_setgroups
#define SYS_setresuid __NR_setresuid
#define SYS_setresgid __NR_setresgid
#define SYS_pivot_root __NR_pivot_root
#define SYS_mount __NR_mount
#define SYS_umount2 __NR_umount2
#define SYS_unshare __NR_unshare
#define SYS_prlimit64 __NR_prlimit64
#define SYS_move_mount __NR_move_mount
#define SYS_fsopen __NR_fsopen
#define SYS_fsconfig __NR_fsconfig
#define SYS_fsmount __NR_fsmount

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
static inline long sys_capget(void *header, void *data)
{ return sys3(SYS_capget, (long)header, (long)data, 0); }
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
static inline long sys_connect(int fd, const void *addr, uint32_t alen)
{ return sys3(SYS_connect, fd, (long)addr, alen); }
static inline long sys_chdir(const char *path)
{ return sys3(SYS_chdir, (long)path, 0, 0); }
static inline long sys_fchdir(int fd)
{ return sys3(SYS_fchdir, fd, 0, 0); }
static inline long sys_setgroups(long n, const uint32_t *groups)
{ return sys3(SYS_setgroups, n, (long)groups, 0); }
static inline long sys_setresuid(uint32_t r, uint32_t e, uint32_t s)
{ return sys3(SYS_setresuid, r, e, s); }
static inline long sys_setresgid(uint32_t r, uint32_t e, uint32_t s)
{ return sys3(SYS_setresgid, r, e, s); }
static inline long sys_pivot_root(const char *new_root, const char *put_old)
{ return sys3(SYS_pivot_root, (long)new_root, (long)put_old, 0); }
static inline long sys_mount(const char *src, const char *target, const char *type,
                             unsigned long flags, const void *data)
{ return sys6(SYS_mount, (long)src, (long)target, (long)type, (long)flags, (long)data, 0); }
static inline long sys_umount2(const char *target, int flags)
{ return sys3(SYS_umount2, (long)target, flags, 0); }
static inline long sys_unshare(unsigned long flags)
{ return sys3(SYS_unshare, (long)flags, 0, 0); }
static inline long sys_prlimit64(int resource, const void *new_limit)
{ return sys6(SYS_prlimit64, 0, resource, (long)new_limit, 0, 0, 0); }
static inline long sys_move_mount(int from_fd, const char *from, int to_fd, const char *to,
                                  unsigned flags)
{ return sys6(SYS_move_mount, from_fd, (long)from, to_fd, (long)to, flags, 0); }
static inline long sys_fsopen(const char *fstype, unsigned flags)
{ return sys3(SYS_fsopen, (long)fstype, flags, 0); }
static inline long sys_fsconfig(int fd, unsigned cmd, const char *key, const void *value, int aux)
{ return sys6(SYS_fsconfig, fd, cmd, (long)key, (long)value, aux, 0); }
static inline long sys_fsmount(int fd, unsigned flags, unsigned attr)
{ return sys3(SYS_fsmount, fd, flags, attr); }
static inline __attribute__((noreturn)) void sys_exit_group(int status)
{
    for (;;)
        sys3(SYS_exit_group, status, 0, 0);
}
#endif /* __ASSEMBLER__ */

#endif
