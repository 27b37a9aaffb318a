/*
 * start.c: the entry point and the ABI1 note of every kit guest.
 */
#include "kit.h"

/* The ABI1 note: "this image is for target 2 (spt), ABI version N": 2 by
 * default, 1 when built with -DKIT_ABI_VERSION=1 (out/NAME.abi1.spt, a
 * kernel as Solo5 v0.6.0-v0.7.5 made them; the kit's segment layout is
 * theirs already). The header is 20 bytes (namesz, descsz, type, "Solo5"
 * padded to 8) and the 16-byte content follows at offset 20 (4-byte
 * alignment). */
#ifndef KIT_ABI_VERSION
#define KIT_ABI_VERSION 2
#endif
struct kit_abi1_note {
    uint32_t namesz, descsz, type;
    char name[8];
    uint32_t target, version, reserved0, reserved1;
} __attribute__((packed, aligned(4)));

__attribute__((section(".note.solo5.abi"), used))
const struct kit_abi1_note kit_abi1_note = {
    .namesz = 6, .descsz = 16, .type = 0x31494241, /* "ABI1" */
    .name = "Solo5", .target = 2, .version = KIT_ABI_VERSION,
};

/* A PT_INTERP naming a file that does not exist, so that the host refuses
 * to execve the image directly. */
__attribute__((section(".interp"), used))
const char kit_interp[] = "/nonexistent/spt-guest-kit";

/* Keep a non-empty .data so the data segment has file contents. */
__attribute__((used)) volatile uint64_t kit_data_marker = 0x7370742d6b6974ULL;

/* The tender jumps here as if _start had been called with the boot info as
 * its argument: an ordinary C function entry (kit.h says per architecture). */
__attribute__((noreturn, section(".text.start"))) void _start(const struct kit_boot_info *bi)
{
    const char *cmdline = (const char *)bi->cmdline;
    kit_exit(guest_main(bi, cmdline));
}
