/* blockbench: `write|read TOTAL_BYTES` moves TOTAL_BYTES through "storage"
 * one sector per call, sequentially, wrapping at the capacity, and prints
 * the elapsed monotonic time. */
#include "kit.h"

/* Page-aligned, like bench/blockref.c's: the kernel's copy then does the same
 * work for both (by the link's accident they used to share an offset). */
static uint8_t sector_buf[65536] __attribute__((aligned(4096)));

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    const struct kit_mft_entry *dev = kit_device(bi, "storage", KIT_MFT_BLOCK_BASIC, 0);
    if (!dev || !dev->attached) {
        kit_puts("blockbench: no block device \"storage\"\n");
        return 1;
    }
    static char storage[128];
    char *argv[3];
    int argc = kit_split_args(cmdline, storage, sizeof storage, argv, 3);
    uint64_t total;
    long nr = 0;
    if (argc == 2 && kit_streq(argv[0], "write"))
        nr = KIT_SYS_pwrite64;
    else if (argc == 2 && kit_streq(argv[0], "read"))
        nr = KIT_SYS_pread64;
    if (!nr || !kit_parse_num(argv[1], &total)) {
        kit_puts("blockbench: usage: write|read TOTAL_BYTES\n");
        return 64;
    }
    uint64_t size = dev->u.block.block_size;
    uint64_t capacity = dev->u.block.capacity;
    if (size == 0 || size > sizeof sector_buf) {
        kit_puts("blockbench: unsupported sector size\n");
        return 1;
    }
    memset(sector_buf, 0xa5, size);

    uint64_t done = 0, offset = 0;
    uint64_t start = kit_monotonic_ns();
    while (done < total) {
        long r = kit_syscall(nr, dev->hostfd, (long)sector_buf, (long)size, (long)offset, 0, 0);
        if (r != (long)size) {
            kit_puts("blockbench: I/O failed ret=");
            kit_put_i64(r);
            kit_puts("\n");
            return 1;
        }
        done += size;
        offset += size;
        if (offset + size > capacity)
            offset = 0;
    }
    uint64_t elapsed = kit_monotonic_ns() - start;
    kit_puts("blockbench: bytes=");
    kit_put_u64(done);
    kit_puts(" ns=");
    kit_put_u64(elapsed);
    kit_puts("\n");
    return 0;
}
