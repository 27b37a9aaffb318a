/*
 * big: a guest of realistic size for the density and sharing tests: 1.25 MiB
 * of text and 384 KiB of rodata (filler that is never run), as a MirageOS
 * image has 1-9 MiB.
 *
 *   big            print "big: sum=<hex>" over all of its text and rodata,
 *                  then yield forever (an idle guest whose image is resident)
 *   big watch      the same sum again after every 20 ms yield, one line each:
 *                  a guest that sees its image change (or faults) says so
 *   big exit       the sum, then exit 0 (a launch that touches its image)
 */
#include "kit.h"

#define TEXT_FILLER 0x140000
#define RODATA_FILLER 0x60000

/* Text the guest never runs: a page pattern that differs page by page, so no
 * two pages are alike (nothing here is a zero page). */
__asm__(".pushsection .text.filler, \"ax\", %progbits\n"
        ".balign 4096\n"
        ".globl big_text_filler\n"
        "big_text_filler:\n"
        ".rept " "320" "\n"   /* 320 pages of 4 KiB = TEXT_FILLER */
        ".fill 4095, 1, 0x5a\n"
        ".byte ((. - big_text_filler) >> 12) & 0xff\n"
        ".endr\n"
        ".popsection\n");
extern const uint8_t big_text_filler[TEXT_FILLER];

static const uint64_t big_rodata[RODATA_FILLER / 8] = {
    [0] = 0x7370742d62696721ULL, [RODATA_FILLER / 8 - 1] = 0x21676962ULL,
};

static uint64_t sum_of(const volatile uint64_t *p, size_t bytes)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < bytes / 8; i++)
        sum = sum * 31 + p[i];
    return sum;
}

static uint64_t image_sum(void)
{
    return sum_of((const volatile uint64_t *)big_text_filler, TEXT_FILLER) ^
           sum_of((const volatile uint64_t *)big_rodata, RODATA_FILLER);
}

/* One write for the whole line: guests may share one console pipe. */
static void report(void)
{
    char line[] = "big: sum=0x0000000000000000\n";
    uint64_t sum = image_sum();
    for (int i = 0; i < 16; i++)
        line[11 + i] = "0123456789abcdef"[(sum >> (60 - 4 * i)) & 0xf];
    kit_write(line, sizeof line - 1);
}

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    int watch = kit_streq(cmdline, "watch");
    report();
    if (kit_streq(cmdline, "exit"))
        return 0;
    for (;;) {
        kit_yield(bi, watch ? kit_monotonic_ns() + 20000000ULL : ~0ULL);
        if (watch)
            report();
    }
}
