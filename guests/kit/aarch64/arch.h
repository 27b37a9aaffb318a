/*
 * kit/aarch64/arch.h: what differs for a kit guest on aarch64.
 */
#ifndef SPT_KIT_ARCH_H
#define SPT_KIT_ARCH_H

#include <stdint.h>

#define KIT_ARCH "aarch64"

/* `svc #0`: number in x8, arguments in x0..x5, result in x0. */
static inline long kit_arch_syscall(long n, long a, long b, long c, long d, long e, long f)
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

/* struct epoll_event has natural alignment on aarch64 (16 bytes). */
struct kit_epoll_event {
    uint32_t events;
    uint64_t data;
};

/* A function that only returns: `ret` (0xd65f03c0, little-endian). */
#define KIT_RET_CODE { 0xc0, 0x03, 0x5f, 0xd6 }

/* Code written as data must reach the instruction side before it runs:
 * clean the data cache to the point of unification, invalidate the
 * instruction cache (one line of 4 bytes is enough for `ret`). */
static inline void kit_sync_code(volatile void *addr)
{
    __asm__ volatile("dc cvau, %0\n\tdsb ish\n\tic ivau, %0\n\tdsb ish\n\tisb"
                     : : "r"(addr) : "memory");
}

/* solo5_set_tls_base on aarch64 is an instruction, no system call. */
static inline long kit_set_tls_base(void *base)
{
    __asm__ volatile("msr tpidr_el0, %0" : : "r"(base));
    return 0;
}

/* The word at offset 0x28 of the TLS block, read through the TLS register. */
#define kit_tls_read_0x28() ({ uint64_t b_; __asm__ volatile("mrs %0, tpidr_el0" : "=r"(b_)); \
                               *(volatile uint64_t *)(b_ + 0x28); })

#endif
