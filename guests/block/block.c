/*
 * block: exercises the one block device "storage".
 *
 *   (no args)               write a distinct pattern to sectors 0, 1 and the
 *                           last one, read each back, compare
 *   read SECTOR             print the first 8 bytes of SECTOR in hex
 *   write SECTOR BYTE       fill SECTOR with BYTE (decimal)
 *   pread-at OFFSET COUNT   one raw pread64/pwrite64 with exactly these
 *   pwrite-at OFFSET COUNT  arguments, to probe the filter (a call past the
 *                           capacity or of the wrong size must die by SIGSYS)
 *
 * The ABI allows one sector per call at a sector-aligned offset inside the
 * device; every well-formed call here keeps to that.
 */
#include "kit.h"

#define MAX_SECTOR 65536 /* the manifest's block_size is a u16 */

static uint8_t sector_buf[MAX_SECTOR];
static uint8_t check_buf[MAX_SECTOR];

struct disk {
    long fd;
    uint64_t capacity;
    uint64_t sector_size;
};

static long disk_io(const struct disk *d, long nr, void *buf, uint64_t sector)
{
    return kit_syscall(nr, d->fd, (long)buf, (long)d->sector_size,
                       (long)(sector * d->sector_size), 0, 0);
}

static int fail(const char *what, uint64_t sector, long ret)
{
    kit_puts("block: ");
    kit_puts(what);
    kit_puts(" failed at sector ");
    kit_put_u64(sector);
    kit_puts(" ret=");
    kit_put_i64(ret);
    kit_puts("\n");
    return 1;
}

/* Byte k of the pattern for the idx-th sector tested: differs per sector. */
static void fill_pattern(uint8_t *buf, uint64_t size, uint64_t sector, unsigned idx)
{
    for (uint64_t k = 0; k < size; k++)
        buf[k] = (uint8_t)(k * 7 + sector * 13 + idx * 101 + 1);
}

static int roundtrip(const struct disk *d)
{
    uint64_t last = d->capacity / d->sector_size - 1;
    uint64_t sectors[3] = { 0, 1, last };
    unsigned count = last >= 2 ? 3 : (unsigned)last + 1; /* skip duplicates on tiny disks */
    for (unsigned i = 0; i < count; i++) {
        fill_pattern(sector_buf, d->sector_size, sectors[i], i);
        long r = disk_io(d, KIT_SYS_pwrite64, sector_buf, sectors[i]);
        if (r != (long)d->sector_size)
            return fail("pwrite64", sectors[i], r);
    }
    for (unsigned i = 0; i < count; i++) {
        fill_pattern(sector_buf, d->sector_size, sectors[i], i);
        memset(check_buf, 0, d->sector_size);
        long r = disk_io(d, KIT_SYS_pread64, check_buf, sectors[i]);
        if (r != (long)d->sector_size)
            return fail("pread64", sectors[i], r);
        if (memcmp(sector_buf, check_buf, d->sector_size) != 0) {
            kit_puts("block: mismatch at sector ");
            kit_put_u64(sectors[i]);
            kit_puts("\n");
            return 1;
        }
    }
    kit_puts("block: roundtrip ok\n");
    return 0;
}

static int read_sector(const struct disk *d, uint64_t sector)
{
    long r = disk_io(d, KIT_SYS_pread64, sector_buf, sector);
    if (r != (long)d->sector_size)
        return fail("pread64", sector, r);
    kit_puts("block: sector ");
    kit_put_u64(sector);
    kit_puts(" first8=");
    for (int k = 0; k < 8; k++)
        kit_put_hex_byte(sector_buf[k]);
    kit_puts("\n");
    return 0;
}

static int write_sector(const struct disk *d, uint64_t sector, uint8_t byte)
{
    memset(sector_buf, byte, d->sector_size);
    long r = disk_io(d, KIT_SYS_pwrite64, sector_buf, sector);
    if (r != (long)d->sector_size)
        return fail("pwrite64", sector, r);
    kit_puts("block: wrote ");
    kit_put_u64(sector);
    kit_puts("\n");
    return 0;
}

/* The probe: no checks of our own, the filter is what is being tested. A
 * count beyond the buffers runs into the rest of guest memory, which is
 * mapped, so the host never sees an unmapped address first. */
static int raw_call(const struct disk *d, long nr, uint64_t offset, uint64_t count)
{
    long r = kit_syscall(nr, d->fd, (long)sector_buf, (long)count, (long)offset, 0, 0);
    kit_puts("block: ret=");
    kit_put_i64(r);
    kit_puts("\n");
    return 0;
}

static int usage(void)
{
    kit_puts("block: usage: [read SECTOR | write SECTOR BYTE | pread-at OFFSET COUNT"
             " | pwrite-at OFFSET COUNT]\n");
    return 64;
}

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    const struct kit_mft_entry *dev = kit_device(bi, "storage", KIT_MFT_BLOCK_BASIC, 0);
    if (!dev || !dev->attached) {
        kit_puts("block: no block device \"storage\"\n");
        return 1;
    }
    struct disk d = { dev->hostfd, dev->u.block.capacity, dev->u.block.block_size };
    kit_puts("block: capacity=");
    kit_put_u64(d.capacity);
    kit_puts(" sector=");
    kit_put_u64(d.sector_size);
    kit_puts("\n");
    if (d.sector_size == 0 || d.sector_size > MAX_SECTOR || d.capacity < d.sector_size) {
        kit_puts("block: device geometry makes no sense\n");
        return 1;
    }

    static char storage[256];
    char *argv[4];
    int argc = kit_split_args(cmdline, storage, sizeof storage, argv, 4);
    uint64_t a = 0, b = 0;
    if (argc == 0)
        return roundtrip(&d);
    if (argc >= 2 && !kit_parse_num(argv[1], &a))
        return usage();
    if (argc >= 3 && !kit_parse_num(argv[2], &b))
        return usage();
    if (argc == 2 && kit_streq(argv[0], "read"))
        return read_sector(&d, a);
    if (argc == 3 && kit_streq(argv[0], "write"))
        return write_sector(&d, a, (uint8_t)b);
    if (argc == 3 && kit_streq(argv[0], "pread-at"))
        return raw_call(&d, KIT_SYS_pread64, a, b);
    if (argc == 3 && kit_streq(argv[0], "pwrite-at"))
        return raw_call(&d, KIT_SYS_pwrite64, a, b);
    return usage();
}
