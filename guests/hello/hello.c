/* hello: prints a greeting and the command line, then exits 0. */
#include "kit.h"

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    (void)bi;
    kit_puts("hello from an spt guest-kit unikernel\n");
    kit_puts("cmdline: '");
    kit_puts(cmdline);
    kit_puts("'\n");
    return 0;
}
