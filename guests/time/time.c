/* time: checks both clocks and a timer-driven yield. With no net device,
 * kit_yield can only return when the timer fires at the deadline. */
#include "kit.h"

#define NS_PER_MS 1000000ULL
#define SLEEP_NS (100 * NS_PER_MS)
#define WALL_2020_01_01_NS (1577836800ULL * 1000000000ULL)

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    (void)cmdline;
    uint64_t mono_before = kit_monotonic_ns();
    uint64_t wall = kit_wall_ns();
    kit_puts("time: monotonic=");
    kit_put_u64(mono_before);
    kit_puts(" wall=");
    kit_put_u64(wall);
    kit_puts("\n");

    kit_yield(bi, mono_before + SLEEP_NS);
    uint64_t slept = kit_monotonic_ns() - mono_before;
    kit_puts("time: slept_ms=");
    kit_put_u64(slept / NS_PER_MS);
    kit_puts("\n");

    int ok = 1;
    if (slept < SLEEP_NS) {
        kit_puts("time: monotonic advanced less than 100 ms\n");
        ok = 0;
    }
    if (wall <= WALL_2020_01_01_NS) {
        kit_puts("time: wall clock before 2020-01-01\n");
        ok = 0;
    }
    if (!ok)
        return 1;
    kit_puts("time: ok\n");
    return 0;
}
