/*
 * blockwriter: writes every sector of "storage" in order with a pattern
 * that a test can recompute, printing "wrote i" after each write returned,
 * so that a test can interrupt it and check exactly what reached the disk.
 *
 * Sector i, seed s (cmdline seed=N, default 1): bytes 0..7 are i as a
 * little-endian u64, bytes 8..15 s likewise, byte k >= 16 is
 * (i*31 + s + k) & 0xff. delay_us=N yields N microseconds between sectors.
 */
#include "kit.h"

static uint8_t sector_buf[65536];

static void fill_sector(uint8_t *buf, uint64_t size, uint64_t i, uint64_t seed)
{
    for (int b = 0; b < 8; b++) {
        buf[b] = (uint8_t)(i >> (8 * b));
        buf[8 + b] = (uint8_t)(seed >> (8 * b));
    }
    for (uint64_t k = 16; k < size; k++)
        buf[k] = (uint8_t)(i * 31 + seed + k);
}

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    const struct kit_mft_entry *dev = kit_device(bi, "storage", KIT_MFT_BLOCK_BASIC, 0);
    if (!dev || !dev->attached) {
        kit_puts("blockwriter: no block device \"storage\"\n");
        return 1;
    }
    uint64_t seed = 1, delay_us = 0;
    static char storage[512];
    char *argv[8];
    int argc = kit_split_args(cmdline, storage, sizeof storage, argv, 8);
    int ok = argc >= 0;
    for (int a = 0; a < argc; a++) {
        if (kit_startswith(argv[a], "seed="))
            ok &= kit_parse_num(argv[a] + 5, &seed);
        else if (kit_startswith(argv[a], "delay_us="))
            ok &= kit_parse_num(argv[a] + 9, &delay_us);
    }
    if (!ok) {
        kit_puts("blockwriter: usage: [seed=N] [delay_us=N]\n");
        return 64;
    }
    uint64_t size = dev->u.block.block_size;
    if (size < 16 || size > sizeof sector_buf) {
        kit_puts("blockwriter: unsupported sector size\n");
        return 1;
    }
    uint64_t sectors = dev->u.block.capacity / size;
    for (uint64_t i = 0; i < sectors; i++) {
        fill_sector(sector_buf, size, i, seed);
        long r = kit_syscall(KIT_SYS_pwrite64, dev->hostfd, (long)sector_buf, (long)size,
                             (long)(i * size), 0, 0);
        if (r != (long)size) {
            kit_puts("blockwriter: pwrite64 failed at sector ");
            kit_put_u64(i);
            kit_puts(" ret=");
            kit_put_i64(r);
            kit_puts("\n");
            return 1;
        }
        kit_puts("wrote ");
        kit_put_u64(i);
        kit_puts("\n");
        if (delay_us) {
            uint64_t deadline = kit_monotonic_ns() + delay_us * 1000;
            while (kit_monotonic_ns() < deadline)
                kit_yield(bi, deadline);
        }
    }
    kit_puts("blockwriter: done\n");
    return 0;
}
