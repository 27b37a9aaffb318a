/*
 * kit/x86_64/arch.h: what differs for a kit guest on x86_64.
 */
#ifndef SPT_KIT_ARCH_H
#define SPT_KIT_ARCH_H

#include <stdint.h>

#define KIT_ARCH "x86_64"

/* `syscall`: number in %rax, arguments in %rdi %rsi %rdx %r10 %r8 %r9. */
static inline long kit_arch_syscall(long n, long a, long b, long c, long d, long e, long f)
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

/* The 32-bit entry: eax = NR, args in ebx, ecx, edx, esi, edi, ebp. The
 * kernel sees the i386 ABI (a different audit arch), which the filter must
 * kill. %rbp cannot be named as an asm operand, so it is saved by hand. */
#define KIT_HAVE_COMPAT_SYSCALL 1
static inline long kit_arch_compat_syscall(long n, long a, long b, long c, long d, long e, long f)
{
    long r;
    register long arg6 __asm__("r12") = f;
    __asm__ volatile("push %%rbp\n\t"
                     "mov %%r12, %%rbp\n\t"
                     "int $0x80\n\t"
                     "pop %%rbp"
                     : "=a"(r)
                     : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e), "r"(arg6)
                     : "r8", "r9", "r10", "r11", "memory");
    return r;
}

/* struct epoll_event is packed on x86_64. */
struct kit_epoll_event {
    uint32_t events;
    uint64_t data;
} __attribute__((packed));

/* A function that only returns: `ret`. */
#define KIT_RET_CODE { 0xc3 }

/* x86_64 keeps instruction fetch coherent with stores by itself. */
static inline void kit_sync_code(volatile void *addr) { (void)addr; }

/* solo5_set_tls_base on x86_64 is a system call: arch_prctl(ARCH_SET_FS). */
#define KIT_ARCH_SET_FS 0x1002
static inline long kit_set_tls_base(void *base)
{
    return kit_arch_syscall(__NR_arch_prctl, KIT_ARCH_SET_FS, (long)base, 0, 0, 0, 0);
}

/* The word at offset 0x28 of the TLS block (gcc's stack-protector canary
 * slot), read through the TLS register. */
#define kit_tls_read_0x28() ({ uint64_t v_; __asm__ volatile("movq %%fs:0x28, %0" : "=r"(v_)); v_; })

#endif
