/*
 * aarch64/arch.h: what the trampoline needs to know of aarch64.
 *
 * `svc #0` takes the number in x8 and up to six arguments in x0..x5; the
 * result comes back in x0 and nothing else is clobbered.
 */
#ifndef SPT_ARCH_H
#define SPT_ARCH_H

#include <stdint.h>

/* The highest user address with 48-bit virtual addresses and 4 KiB pages. */
#define ARCH_USER_TOP 0xfffffffff000UL
/* spt ABI on aarch64: sp = mem_size - 16 (sp must stay 16-aligned). */
#define ARCH_STACK_GAP 16UL

/* struct epoll_event has natural alignment on aarch64 (16 bytes). */
struct epoll_event_raw {
    uint32_t events;
    uint64_t data;
};

static inline long sys6(long n, long a, long b, long c, long d, long e, long f)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc #0" : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}

static inline long sys3(long n, long a, long b, long c)
{
    return sys6(n, a, b, c, 0, 0, 0);
}

#endif
