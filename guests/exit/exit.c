/* exit: exits with the status on its command line ("N", 0..255), or calls
 * kit_abort() for "abort" (status 255). Checks the exit path of the tender. */
#include "kit.h"

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    (void)bi;
    if (kit_streq(cmdline, "abort"))
        kit_abort();
    uint64_t status;
    if (!kit_parse_num(cmdline, &status) || status > 255) {
        kit_puts("exit: usage: N (0..255) | abort\n");
        return 64;
    }
    return (int)status;
}
