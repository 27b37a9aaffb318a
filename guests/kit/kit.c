/*
 * kit.c: console, exit, devices, time and yield over raw system calls.
 */
#include "kit.h"

long kit_syscall(long n, long a, long b, long c, long d, long e, long f)
{
    return kit_arch_syscall(n, a, b, c, d, e, f);
}

void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *dp = d;
    const uint8_t *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memset(void *d, int c, size_t n)
{
    uint8_t *dp = d;
    while (n--)
        *dp++ = (uint8_t)c;
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x - *y;
    return 0;
}

size_t kit_strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int kit_streq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

int kit_startswith(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return 0;
    return 1;
}

uint64_t kit_atou(const char *s)
{
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (uint64_t)(*s++ - '0');
    return v;
}

void kit_write(const void *buf, size_t n)
{
    kit_syscall(KIT_SYS_write, 1, (long)buf, (long)n, 0, 0, 0);
}

void kit_puts(const char *s)
{
    kit_write(s, kit_strlen(s));
}

void kit_put_u64(uint64_t v)
{
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    kit_puts(buf + i);
}

void kit_put_hex(uint64_t v)
{
    char buf[19];
    buf[0] = '0';
    buf[1] = 'x';
    for (int i = 0; i < 16; i++)
        buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
    buf[18] = 0;
    kit_puts(buf);
}

__attribute__((noreturn)) void kit_exit(int status)
{
    for (;;)
        kit_syscall(KIT_SYS_exit_group, status, 0, 0, 0, 0, 0);
}

__attribute__((noreturn)) void kit_abort(void)
{
    kit_puts("kit: abort\n");
    kit_exit(255);
}

const struct kit_mft_entry *kit_device(const struct kit_boot_info *bi, const char *name,
                                       uint32_t type, uint32_t *index)
{
    const struct kit_mft *m = (const struct kit_mft *)bi->mft;
    for (uint32_t i = 1; i < m->entries; i++) {
        if (m->e[i].type == type && kit_streq(m->e[i].name, name)) {
            if (index)
                *index = i;
            return &m->e[i];
        }
    }
    return 0;
}

struct kit_timespec {
    int64_t sec, nsec;
};

static uint64_t clock_ns(int clock)
{
    struct kit_timespec ts;
    if (kit_syscall(KIT_SYS_clock_gettime, clock, (long)&ts, 0, 0, 0, 0) < 0)
        kit_abort();
    return (uint64_t)ts.sec * 1000000000ULL + (uint64_t)ts.nsec;
}

uint64_t kit_monotonic_ns(void) { return clock_ns(1); }
uint64_t kit_wall_ns(void) { return clock_ns(0); }

struct kit_itimerspec {
    struct kit_timespec interval, value;
};

#define KIT_TFD_TIMER_ABSTIME 1

uint64_t kit_yield(const struct kit_boot_info *bi, uint64_t deadline_ns)
{
    struct kit_itimerspec it = {
        .value = { (int64_t)(deadline_ns / 1000000000ULL), (int64_t)(deadline_ns % 1000000000ULL) },
    };
    if (it.value.sec == 0 && it.value.nsec == 0)
        it.value.nsec = 1; /* zero would disarm the timer */
    if (kit_syscall(KIT_SYS_timerfd_settime, bi->timerfd, KIT_TFD_TIMER_ABSTIME, (long)&it, 0,
                    0, 0) < 0)
        kit_abort();
    struct kit_epoll_event ev[16];
    long n;
    do {
        n = kit_syscall(KIT_SYS_epoll_pwait, bi->epollfd, (long)ev, 16, -1, 0, 8);
    } while (n == -4); /* EINTR */
    if (n < 0)
        kit_abort();
    uint64_t ready = 0;
    for (long i = 0; i < n; i++)
        if (ev[i].data != KIT_TIMER_DATA && ev[i].data < 64)
            ready |= 1ULL << ev[i].data;
    return ready;
}

void kit_put_i64(int64_t v)
{
    if (v < 0) {
        kit_puts("-");
        kit_put_u64(-(uint64_t)v); /* well-defined for INT64_MIN too */
    } else {
        kit_put_u64((uint64_t)v);
    }
}

void kit_put_hex_byte(uint8_t b)
{
    char buf[2] = { "0123456789abcdef"[b >> 4], "0123456789abcdef"[b & 0xf] };
    kit_write(buf, 2);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int kit_parse_num(const char *s, uint64_t *out)
{
    int negative = (*s == '-');
    if (negative)
        s++;
    uint64_t base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s)
        return 0;
    uint64_t v = 0;
    for (; *s; s++) {
        int d = hex_digit(*s);
        if (d < 0 || (uint64_t)d >= base)
            return 0;
        if (v > (UINT64_MAX - (uint64_t)d) / base)
            return 0;
        v = v * base + (uint64_t)d;
    }
    *out = negative ? -v : v;
    return 1;
}

int kit_split_args(const char *cmdline, char *storage, size_t cap, char **argv, int max)
{
    int argc = 0;
    size_t used = 0;
    while (*cmdline) {
        while (*cmdline == ' ')
            cmdline++;
        if (!*cmdline)
            break;
        if (argc == max)
            return -1;
        argv[argc++] = storage + used;
        while (*cmdline && *cmdline != ' ') {
            if (used + 1 >= cap)
                return -1;
            storage[used++] = *cmdline++;
        }
        storage[used++] = 0;
    }
    return argc;
}
