/*
 * syscall: makes one raw system call chosen on the command line, so that
 * tests can probe the tender's filter call by call.
 *
 *   NR [A0 .. A5]        `syscall` with these arguments, prints
 *                        "syscall: ret=<signed>" and exits 0 (if it lives)
 *   int80 NR [A0 .. A5]  the same through the 32-bit `int $0x80` entry
 *                        (x86_64 only: kit/x86_64/arch.h)
 *   seq                  every call the ABI allows, once each and correctly,
 *                        then "syscall: seq ok"
 *
 * Numbers are decimal or 0x-hex (an optional leading '-' negates). Argument
 * tokens may also name things the guest has: console (1), epoll, timer,
 * blk / net (the hostfd of "storage" / "service0"), buf (a 64 KiB buffer),
 * ts (a zeroed 32-byte buffer).
 *
 * syscall_dev builds this same file with a block and a net device declared;
 * the code finds out which devices exist from the manifest.
 */
#include "kit.h"

#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
#define EAGAIN 11

static uint8_t big_buf[65536];
static uint8_t ts_buf[32];
static uint64_t tls_block[8] __attribute__((aligned(64)));

struct devices {
    const struct kit_mft_entry *blk;
    const struct kit_mft_entry *net;
};

static int parse_arg(const struct kit_boot_info *bi, const struct devices *dev,
                     const char *tok, long *out)
{
    uint64_t v;
    if (kit_streq(tok, "console"))
        *out = 1;
    else if (kit_streq(tok, "epoll"))
        *out = bi->epollfd;
    else if (kit_streq(tok, "timer"))
        *out = bi->timerfd;
    else if (kit_streq(tok, "blk") && dev->blk)
        *out = dev->blk->hostfd;
    else if (kit_streq(tok, "net") && dev->net)
        *out = dev->net->hostfd;
    else if (kit_streq(tok, "buf"))
        *out = (long)big_buf;
    else if (kit_streq(tok, "ts"))
        *out = (long)ts_buf;
    else if (kit_parse_num(tok, &v))
        *out = (long)v;
    else
        return 0;
    return 1;
}

static int check(const char *what, long ret, int ok)
{
    if (ok)
        return 0;
    kit_puts("syscall: seq ");
    kit_puts(what);
    kit_puts(" failed ret=");
    kit_put_i64(ret);
    kit_puts("\n");
    return 1;
}

/* Each allowed call once, with the arguments the ABI allows. */
static int run_seq(const struct kit_boot_info *bi, const struct devices *dev)
{
    static const char hello[] = "syscall: seq write\n";
    int bad = 0;
    long r = kit_syscall(KIT_SYS_write, 1, (long)hello, sizeof hello - 1, 0, 0, 0);
    bad |= check("write", r, r == (long)sizeof hello - 1);
    r = kit_syscall(KIT_SYS_clock_gettime, CLOCK_MONOTONIC, (long)ts_buf, 0, 0, 0, 0);
    bad |= check("clock_gettime(MONOTONIC)", r, r == 0);
    r = kit_syscall(KIT_SYS_clock_gettime, CLOCK_REALTIME, (long)ts_buf, 0, 0, 0, 0);
    bad |= check("clock_gettime(REALTIME)", r, r == 0);
    /* timerfd_settime + epoll_pwait, 1 ms ahead. */
    kit_yield(bi, kit_monotonic_ns() + 1000000);
    r = kit_set_tls_base(tls_block); /* arch_prctl(ARCH_SET_FS) on x86_64 */
    bad |= check("set_tls_base", r, r == 0);
    if (dev->blk) {
        long size = dev->blk->u.block.block_size;
        r = kit_syscall(KIT_SYS_pread64, dev->blk->hostfd, (long)big_buf, size, 0, 0, 0);
        bad |= check("pread64", r, r == size);
        /* Write back what was read: the disk is left as it was. */
        r = kit_syscall(KIT_SYS_pwrite64, dev->blk->hostfd, (long)big_buf, size, 0, 0, 0);
        bad |= check("pwrite64", r, r == size);
    }
    if (dev->net) {
        long size = dev->net->u.net.mtu + 14;
        r = kit_syscall(KIT_SYS_read, dev->net->hostfd, (long)big_buf, size, 0, 0, 0);
        bad |= check("read(net)", r, r >= 0 || r == -EAGAIN);
    }
    if (bad)
        return 1;
    kit_puts("syscall: seq ok\n");
    return 0;
}

static int usage(void)
{
    kit_puts("syscall: usage: [int80] NR [A0 .. A5] | seq\n");
    return 64;
}

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    struct devices dev = {
        kit_device(bi, "storage", KIT_MFT_BLOCK_BASIC, 0),
        kit_device(bi, "service0", KIT_MFT_NET_BASIC, 0),
    };
    static char storage[512];
    char *argv[9];
    int argc = kit_split_args(cmdline, storage, sizeof storage, argv, 9);
    if (argc < 1)
        return usage();
    if (argc == 1 && kit_streq(argv[0], "seq"))
        return run_seq(bi, &dev);

    int via_int80 = kit_streq(argv[0], "int80");
#ifndef KIT_HAVE_COMPAT_SYSCALL
    if (via_int80) {
        kit_puts("syscall: int80: no 32-bit entry on " KIT_ARCH "\n");
        return 64;
    }
#endif
    char **call = argv + via_int80;
    int ncall = argc - via_int80;
    if (ncall < 1 || ncall > 7)
        return usage();
    long nr_and_args[7] = { 0 };
    for (int i = 0; i < ncall; i++) {
        if (!parse_arg(bi, &dev, call[i], &nr_and_args[i])) {
            kit_puts("syscall: bad argument: ");
            kit_puts(call[i]);
            kit_puts("\n");
            return 64;
        }
    }
    long *v = nr_and_args;
#ifdef KIT_HAVE_COMPAT_SYSCALL
    long r = via_int80 ? kit_arch_compat_syscall(v[0], v[1], v[2], v[3], v[4], v[5], v[6])
                       : kit_syscall(v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
#else
    long r = kit_syscall(v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
#endif
    kit_puts("syscall: ret=");
    kit_put_i64(r);
    kit_puts("\n");
    return 0;
}
