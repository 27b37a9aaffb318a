/* maxdev: declares the ABI's maximum of 63 block devices (b0 .. b62) and
 * reports how many the tender attached and at which host fds. */
#include "kit.h"

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    (void)cmdline;
    const struct kit_mft *mft = (const struct kit_mft *)bi->mft;
    uint32_t attached = 0;
    for (uint32_t i = 1; i < mft->entries; i++)
        attached += mft->e[i].attached == 1;
    kit_puts("maxdev: attached=");
    kit_put_u64(attached);
    kit_puts(" fds=");
    for (uint32_t i = 1; i < mft->entries; i++) {
        if (i > 1)
            kit_puts(",");
        kit_put_i64(mft->e[i].hostfd);
    }
    kit_puts("\n");
    return 0;
}
