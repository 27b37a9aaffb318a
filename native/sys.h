/*
 * sys.h: raw x86_64 Linux system calls, one tiny named wrapper each.
 *
 * The trampoline links no libc: after it runs, nothing of the host's C
 * library may remain in the process. Wrappers return the kernel's result
 * unchanged (negative errno on failure).
 */
#ifndef SPT_SYS_H
#define SPT_SYS_H

/* System call numbers: keep.S includes this part too. */
#define SYS_write 1
#define SYS_close 3
#define SYS_fstat 5
#define SYS_mmap 9
#define SYS_mprotect 10
#define SYS_munmap 11
#define SYS_rt_sigaction 13
#define SYS_rt_sigprocmask 14
#define SYS_pread64 17
#define SYS_socket 41
#define SYS_sendto 44
#define SYS_exit_group 231
#define SYS_epoll_ctl 233
#define SYS_prctl 157
#define SYS_capset 126
#define SYS_timerfd_create 283
#define SYS_epoll_create1 291
#define SYS_dup3 292
#define SYS_seccomp 317
#define SYS_close_range 436
/* The jail's (jail.h). */
#define SYS_connect 42
#define SYS_chdir 80
#define SYS_fchdir 81
#define SYS_setgroups 116
#define SYS_setresuid 117
#define SYS_setresgid 119
#define SYS_pivot_root 155
#define SYS_mount 165
#define SYS_umount2 166
#define SYS_unshare 272
#define SYS_prlimit64 302
#define SYS_move_mount 429
#define SYS_fsopen 430
#define SYS_fsconfig 431
#define SYS_fsmount 432

#ifndef __ASSEMBLER__
#include <stdint.h>
#include <stddef.h>

static inline long sys3(long n, long a, long b, long c)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return r;
}

static inline long sys6(long n, long a, long b, long c, long d, long e, long f)
{
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}

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
    uint64_t st[18]; /* struct stat is 144 bytes; st_size at offset 48 */
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
