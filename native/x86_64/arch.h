/*
 * x86_64/arch.h: what the trampoline needs to know of x86_64.
 *
 * The `syscall` instruction takes the number in %rax and up to six
 * arguments in %rdi, %rsi, %rdx, %r10, %r8, %r9; it clobbers %rcx and %r11.
 */
#ifndef SPT_ARCH_H
#define SPT_ARCH_H

#include <stdint.h>

/* The highest user address with 4-level paging. */
#define ARCH_USER_TOP 0x7ffffffff000UL
/* spt ABI: the guest starts as if just called, so %rsp = mem_size - 8
 * (%rsp + 8 is 16-aligned). */
#define ARCH_STACK_GAP 8UL

/* struct epoll_event is packed on x86_64 (12 bytes), for i386 compatibility. */
struct epoll_event_raw {
    uint32_t events;
    uint64_t data;
} __attribute__((packed));

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

#endif
