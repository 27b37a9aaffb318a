/*
 * keep.S: the one page of the trampoline that stays mapped while the guest
 * runs. It holds only position-independent code that uses no memory of its
 * own: after the munmaps below, the trampoline's data, the plan, the stack
 * exec gave us, the vdso and vvar are gone, so everything this code needs is
 * loaded into registers first from `struct final_args` (trampoline.c), which
 * lives in guest memory.
 */

#include "sys.h"

#define SECCOMP_SET_MODE_FILTER 1

    .section .text.spt_keep, "ax", @progbits
    .balign 4096
    .globl spt_keep_start
spt_keep_start:

/*
 * void spt_final(const struct final_args *a)   -- never returns
 *
 * 1. Move to the guest's stack (mem_size - 8): a signal that arrives from
 *    here on has a stack to be delivered on.
 * 2. Drop every mapping but guest memory and this page.
 * 3. Install the seccomp filter. From here on only the allow-list works.
 * 4. Zero the scratch area (filter, fprog, these arguments), clear the
 *    registers the guest must not read anything from, and jump to the entry
 *    with %rdi = boot info, as the spt ABI specifies.
 *
 * With a->stop_at_entry (solo5-spt --gdb) an int3 comes right before the
 * final `ret`, after the filter is in place: a trap, not a system call, so
 * the allow-list is the same. The tracer (spt/debug.py) sees SIGTRAP with
 * every register as the guest gets it and the entry on top of the stack; it
 * completes the `ret` itself (%rip = entry, %rsp += 8), so the debugger
 * finds the guest stopped before its first instruction. Without a tracer
 * the trap would kill the process, which is why only --gdb sets the flag.
 */
    .globl spt_final
    .type spt_final, @function
spt_final:
    mov     %rdi, %rbx              /* a: callee-saved across syscalls */
    mov     72(%rbx), %rsp          /* a->stack_top */

    xor     %r12d, %r12d            /* i = 0 .. 2 over a->unmap[i] */
1:  mov     %r12, %rax
    shl     $4, %rax
    mov     0(%rbx,%rax), %rdi      /* addr */
    mov     8(%rbx,%rax), %rsi      /* len */
    test    %rsi, %rsi
    jz      2f
    mov     $SYS_munmap, %eax
    syscall
    test    %rax, %rax
    jnz     .Lfail
2:  inc     %r12
    cmp     $3, %r12
    jne     1b

    mov     $SYS_seccomp, %eax
    mov     $SECCOMP_SET_MODE_FILTER, %edi
    xor     %esi, %esi
    mov     48(%rbx), %rdx          /* a->fprog */
    syscall
    test    %rax, %rax
    jnz     .Lfail

    mov     88(%rbx), %r13          /* a->entry */
    mov     80(%rbx), %r14          /* a->boot_info */
    mov     96(%rbx), %r15          /* a->stop_at_entry */
    mov     56(%rbx), %rdi          /* a->scratch_lo */
    mov     64(%rbx), %rcx          /* a->scratch_hi */
    sub     %rdi, %rcx
    xor     %eax, %eax
    cld
    rep stosb                       /* also wipes *a: read nothing after */

    mov     %r14, %rdi
    xor     %eax, %eax
    xor     %ebx, %ebx
    xor     %ecx, %ecx
    xor     %edx, %edx
    xor     %esi, %esi
    xor     %ebp, %ebp
    xor     %r8d, %r8d
    xor     %r9d, %r9d
    xor     %r10d, %r10d
    xor     %r11d, %r11d
    xor     %r12d, %r12d
    xor     %r14d, %r14d
    push    %r13
    xor     %r13d, %r13d
    test    %r15, %r15
    jz      3f
    xor     %r15d, %r15d            /* the same registers and flags as below */
    int3                            /* --gdb: the tracer pops the entry */
3:  xor     %r15d, %r15d
    ret                             /* pops the entry: %rsp = mem_size - 8 again */

/* stderr is closed by now, so a failure here can only exit with status 1. */
.Lfail:
    mov     $SYS_exit_group, %eax
    mov     $1, %edi
    syscall
    ud2
    .size spt_final, . - spt_final

/*
 * Stop-signal handler for a guest that is a container's PID 1: end the guest
 * with 128 + signal, as a shell reports a death by that signal. exit_group
 * is on every allow-list. Installed only with SPT_PLAN_STOP_ON_TERM.
 */
    .globl spt_stop_handler
    .type spt_stop_handler, @function
spt_stop_handler:
    add     $128, %edi
    mov     $SYS_exit_group, %eax
    syscall
    ud2
    .size spt_stop_handler, . - spt_stop_handler

    .balign 4096                    /* the page holds nothing else */
    .globl spt_keep_end
spt_keep_end:
    .section .note.GNU-stack, "", @progbits
