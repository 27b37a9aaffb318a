/*
 * aarch64/keep.S: the one page of the trampoline that stays mapped while the
 * guest runs (see x86_64/keep.S for the why). Position-independent, no memory
 * of its own: everything is loaded into registers first from
 * `struct final_args` (trampoline.c), which lives in guest memory.
 */

#include "sys.h"

#define SECCOMP_SET_MODE_FILTER 1

    .section .text.spt_keep, "ax", %progbits
    .balign 4096
    .globl spt_keep_start
spt_keep_start:

/*
 * void spt_final(const struct final_args *a)   -- never returns
 *
 * 1. Move to the guest's stack (mem_size - 16).
 * 2. Drop every mapping but guest memory and this page.
 * 3. Install the seccomp filter. From here on only the allow-list works.
 * 4. Zero the scratch area, clear the registers the guest must not read
 *    anything from, and branch to the entry with x0 = boot info and
 *    x30 (the link register) = 0, as Solo5's aarch64 spt bindings expect.
 */
    .globl spt_final
    .type spt_final, %function
spt_final:
    mov     x19, x0                 /* a: callee-saved, svc clobbers only x0 */
    ldr     x9, [x19, #72]          /* a->stack_top */
    mov     sp, x9

    mov     x20, #0                 /* i = 0 .. 2 over a->unmap[i] */
1:  add     x9, x19, x20, lsl #4
    ldr     x0, [x9]                /* addr */
    ldr     x1, [x9, #8]            /* len */
    cbz     x1, 2f
    mov     x8, #SYS_munmap
    svc     #0
    cbnz    x0, .Lfail
2:  add     x20, x20, #1
    cmp     x20, #3
    b.ne    1b

    mov     x8, #SYS_seccomp
    mov     x0, #SECCOMP_SET_MODE_FILTER
    mov     x1, #0
    ldr     x2, [x19, #48]          /* a->fprog */
    svc     #0
    cbnz    x0, .Lfail

    ldr     x16, [x19, #88]         /* a->entry */
    ldr     x17, [x19, #80]         /* a->boot_info */
    ldr     x0, [x19, #56]          /* a->scratch_lo: 16-aligned */
    ldr     x1, [x19, #64]          /* a->scratch_hi: 16-aligned */
3:  cmp     x0, x1
    b.hs    4f
    str     xzr, [x0], #8           /* also wipes *a: read nothing after */
    b       3b

4:  mov     x0, x17
    mov     x1, #0
    mov     x2, #0
    mov     x3, #0
    mov     x4, #0
    mov     x5, #0
    mov     x6, #0
    mov     x7, #0
    mov     x8, #0
    mov     x9, #0
    mov     x10, #0
    mov     x11, #0
    mov     x12, #0
    mov     x13, #0
    mov     x14, #0
    mov     x15, #0
    mov     x17, #0
    mov     x18, #0
    mov     x19, #0
    mov     x20, #0
    mov     x21, #0
    mov     x22, #0
    mov     x23, #0
    mov     x24, #0
    mov     x25, #0
    mov     x26, #0
    mov     x27, #0
    mov     x28, #0
    mov     x29, #0
    mov     x30, #0
    br      x16                     /* x16 keeps the entry address, nothing else */

/* stderr is closed by now, so a failure here can only exit with status 1. */
.Lfail:
    mov     x0, #1
    mov     x8, #SYS_exit_group
    svc     #0
    brk     #0
    .size spt_final, . - spt_final

/*
 * Stop-signal handler for a guest that is a container's PID 1: end the guest
 * with 128 + signal (x0 holds the signal number).
 */
    .globl spt_stop_handler
    .type spt_stop_handler, %function
spt_stop_handler:
    add     x0, x0, #128
    mov     x8, #SYS_exit_group
    svc     #0
    brk     #0
    .size spt_stop_handler, . - spt_stop_handler

    .balign 4096                    /* the page holds nothing else */
    .globl spt_keep_end
spt_keep_end:
    .section .note.GNU-stack, "", %progbits
