/*
 * start.S: the process entry point. The kernel leaves argc at (%rsp);
 * tramp_main (trampoline.c) reads argc and argv from there.
 */
    .text
    .globl _start
_start:
    mov     %rsp, %rdi
    and     $-16, %rsp
    call    tramp_main
    ud2
    .section .note.GNU-stack, "", @progbits
