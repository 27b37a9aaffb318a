/* sleep: blocks in yield for the number of seconds on its command line
 * (default 3600), then exits 0. Used to look at a running guest. */
#include "kit.h"

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    uint64_t seconds = *cmdline ? kit_atou(cmdline) : 3600;
    kit_puts("sleep: yielding\n");
    uint64_t deadline = kit_monotonic_ns() + seconds * 1000000000ULL;
    while (kit_monotonic_ns() < deadline)
        kit_yield(bi, deadline);
    kit_puts("sleep: done\n");
    return 0;
}
