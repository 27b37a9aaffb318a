/*
 * kit.h: the spt guest kit, a tiny freestanding runtime for test guests.
 *
 * A guest is a static ELF linked at 1 MiB (kit/guest.ld) that carries the
 * ABI1 note (kit/start.c) and an MFT1 note generated from its manifest.json
 * by `spt manifest gen`. The tender enters `_start` as an ordinary C call with
 * the boot info as its argument (x86_64: %rdi, %rsp = mem_size - 8; aarch64:
 * x0, sp = mem_size - 16); the kit calls guest_main() and exits with its
 * return value. What differs by architecture is in kit/<arch>/arch.h.
 *
 * Everything here follows the spt ABI (docs/abi.md, §3 and §7); nothing is
 * taken from Solo5.
 */
#ifndef SPT_KIT_H
#define SPT_KIT_H

#include <stddef.h>
#include <stdint.h>

/* Boot info at 0x11000 (40 bytes). */
struct kit_boot_info {
    uint64_t mem_size;
    uint64_t kernel_end;
    uint64_t cmdline;   /* address of a NUL-terminated string */
    uint64_t mft;       /* address of the attached manifest copy */
    int32_t epollfd;
    int32_t timerfd;
};

#define KIT_MFT_BLOCK_BASIC 1
#define KIT_MFT_NET_BASIC 2
#define KIT_TIMER_DATA 0xFFFFFFFEULL

/* One 104-byte manifest entry. */
struct kit_mft_entry {
    char name[68];
    uint32_t type;
    union {
        struct { uint64_t capacity; uint16_t block_size; } block;
        struct { uint8_t mac[6]; uint16_t mtu; } net;
        uint8_t raw[16];
    } u;
    /* Solo5's `union { void *data; int hostfd; } b`: the host fd is the int
     * at the start of the 8-byte slot. Solo5's tender writes only that int
     * and leaves the rest as the note had it, so a guest reads 4 bytes. */
    int32_t hostfd;
    uint32_t hostfd_rest;
    uint8_t attached;
    uint8_t pad[7];
};

struct kit_mft {
    uint32_t version;
    uint32_t entries;
    struct kit_mft_entry e[];
};

_Static_assert(sizeof(struct kit_boot_info) == 40, "boot info is 40 bytes");
_Static_assert(sizeof(struct kit_mft_entry) == 104, "manifest entries are 104 bytes");
_Static_assert(sizeof(((struct kit_mft_entry *)0)->hostfd) == 4,
               "the host fd is an int (Solo5's tender writes 4 bytes of the slot)");

/* Raw system calls (the only way out of an spt guest). */
long kit_syscall(long n, long a, long b, long c, long d, long e, long f);

/* Numbers from the kernel's uapi header of the architecture being built. */
#include <asm/unistd.h>
#include "arch.h"
#define KIT_SYS_read __NR_read
#define KIT_SYS_write __NR_write
#define KIT_SYS_pread64 __NR_pread64
#define KIT_SYS_pwrite64 __NR_pwrite64
#define KIT_SYS_clock_gettime __NR_clock_gettime
#define KIT_SYS_exit_group __NR_exit_group
#define KIT_SYS_epoll_pwait __NR_epoll_pwait
#define KIT_SYS_timerfd_settime __NR_timerfd_settime
#ifdef __NR_arch_prctl /* x86_64 only */
#define KIT_SYS_arch_prctl __NR_arch_prctl
#endif

/* Console (fd 1). */
void kit_write(const void *buf, size_t n);
void kit_puts(const char *s);           /* no newline added */
void kit_put_u64(uint64_t v);
void kit_put_hex(uint64_t v);

__attribute__((noreturn)) void kit_exit(int status);
__attribute__((noreturn)) void kit_abort(void);  /* exit status 255 */

/* Devices by manifest name; NULL if absent or of another type. */
const struct kit_mft_entry *kit_device(const struct kit_boot_info *bi, const char *name,
                                       uint32_t type, uint32_t *index);

/* Time in nanoseconds (CLOCK_MONOTONIC) and wall clock (CLOCK_REALTIME). */
uint64_t kit_monotonic_ns(void);
uint64_t kit_wall_ns(void);

/* Block until a net device is readable or the monotonic deadline passes.
 * Returns a bit set of ready manifest indexes (bit i = entry i), 0 on
 * timeout. */
uint64_t kit_yield(const struct kit_boot_info *bi, uint64_t deadline_ns);

/* Small string helpers. */
size_t kit_strlen(const char *s);
int kit_streq(const char *a, const char *b);
int kit_startswith(const char *s, const char *prefix);
uint64_t kit_atou(const char *s);
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);


/* Added for the test guests. */

/* Signed decimal (no prefix). */
void kit_put_i64(int64_t v);
/* Two lower-case hex digits, no prefix. */
void kit_put_hex_byte(uint8_t b);

/* A whole token as a number: optional '-', then decimal or 0x-hex. Returns
 * 1 and stores the value (two's complement for '-') on success, 0 if the
 * token is empty, has a stray character or overflows 64 bits. */
int kit_parse_num(const char *s, uint64_t *out);

/* Split a command line at spaces into at most max tokens. The tokens are
 * copied into storage (cap bytes, NUL-terminated each); returns the token
 * count, or -1 if storage or max is too small. */
int kit_split_args(const char *cmdline, char *storage, size_t cap, char **argv, int max);

/* Every guest defines this; its return value is the exit status. */
int guest_main(const struct kit_boot_info *bi, const char *cmdline);

#endif
