/*
 * debuggee: a guest shaped like a Solo5 application, for the gdb tests
 * (tests/test_debug.py) and the session in docs/debugging.md.
 *
 * The kit's guest_main plays the Solo5 bindings: it sets a TLS block as
 * the architecture does (arch_prctl on x86_64, so gdb shows a non-zero
 * fs_base once it ran; tpidr_el0 on aarch64) and calls
 * solo5_app_main() with a start info, as a Solo5-built unikernel's entry
 * does. The application counts in a global, prints through puts() and
 * exits with the status on its command line ("N", 0..255), or crashes in
 * crash_here() for "crash" (SIGSEGV, for the post-mortem test).
 */
#include "kit.h"

struct solo5_start_info {
    const char *cmdline;
    uint64_t heap_start;
    uint64_t heap_size;
};

/* Globals a debugger reads and writes. */
volatile uint64_t debuggee_counter;
volatile uint64_t debuggee_watched;
static uint64_t tls_block[8] __attribute__((aligned(64)));

__attribute__((noinline)) void puts(const char *s)
{
    kit_puts(s);
}

__attribute__((noinline)) int crash_here(volatile uint64_t *where)
{
    return (int)*where;
}

__attribute__((noinline)) uint64_t count_to(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        debuggee_counter++;
    debuggee_watched = debuggee_counter * 2;
    return debuggee_counter;
}

int solo5_app_main(const struct solo5_start_info *si)
{
    puts("debuggee: start\n");
    count_to(3);
    if (kit_streq(si->cmdline, "crash")) {
        uintptr_t zero = 0;
        __asm__ volatile("" : "+r"(zero)); /* a real load of address 0, not a trap */
        return crash_here((volatile uint64_t *)zero);
    }
    uint64_t status = 0;
    if (*si->cmdline && (!kit_parse_num(si->cmdline, &status) || status > 255)) {
        puts("debuggee: usage: [N (0..255) | crash]\n");
        return 64;
    }
    puts("debuggee: counter=");
    kit_put_u64(debuggee_counter);
    puts("\n");
    return (int)status;
}

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    tls_block[0] = (uint64_t)(uintptr_t)tls_block; /* x86_64 TLS: %fs:0 points to itself */
    kit_set_tls_base(tls_block);
    struct solo5_start_info si = {
        .cmdline = cmdline,
        .heap_start = bi->kernel_end,
        .heap_size = bi->mem_size - bi->kernel_end,
    };
    return solo5_app_main(&si);
}
