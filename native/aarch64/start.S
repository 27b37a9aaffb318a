/*
 * start.S: the process entry point. The kernel leaves argc at [sp] (sp is
 * 16-aligned at exec); tramp_main (trampoline.c) reads argc and argv there.
 */
    .text
    .globl _start
_start:
    mov     x0, sp
    mov     x29, #0
    mov     x30, #0
    bl      tramp_main
    brk     #0
    .section .note.GNU-stack, "", @progbits
