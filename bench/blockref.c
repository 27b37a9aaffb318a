/*
 * blockref: the host-side reference for the blockbench guest.
 *
 *     blockref FILE SECTOR_SIZE write|read TOTAL_BYTES [FILTER FD]
 *
 * The same work as the guest, with no tender: one pread/pwrite of
 * SECTOR_SIZE bytes per call from a page-aligned buffer (the guest's is
 * page-aligned too, so the kernel copies the same way for both),
 * sequential, wrapping at the file's size, timed with CLOCK_MONOTONIC
 * around the loop only. Prints `blockref: bytes=N ns=T` like the guest's
 * `blockbench: bytes=N ns=T`.
 *
 * With FILTER (a BPF program as `spt policy --bpf` writes it) and FD (the
 * block fd of that launch, which the filter names), FILE is opened as FD
 * and the filter is installed before the loop: the same calls through the
 * same allow-list, without the guest. Only the loop's calls and the final
 * write to fd 1 and exit_group run under it (the clock is the vDSO's).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint8_t sector_buf[65536] __attribute__((aligned(4096)));
static struct sock_filter program[4096];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Read the filter and move `fd` to `at`; the filter goes in later. */
static int load_filter(const char *path, int *fd, int at, struct sock_fprog *prog)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t n = fread(program, 1, sizeof program, f);
    int bad = ferror(f) || n == 0 || n % sizeof program[0];
    fclose(f);
    if (bad || at < 3 || dup2(*fd, at) < 0)
        return -1;
    if (*fd != at)
        close(*fd);
    *fd = at;
    prog->len = (unsigned short)(n / sizeof program[0]);
    prog->filter = program;
    return 0;
}

int main(int argc, char **argv)
{
    if ((argc != 5 && argc != 7) || (strcmp(argv[3], "write") && strcmp(argv[3], "read"))) {
        fprintf(stderr, "usage: blockref FILE SECTOR_SIZE write|read TOTAL_BYTES [FILTER FD]\n");
        return 64;
    }
    int writing = strcmp(argv[3], "write") == 0;
    uint64_t size = strtoull(argv[2], NULL, 10);
    uint64_t total = strtoull(argv[4], NULL, 10);
    if (size == 0 || size > sizeof sector_buf) {
        fprintf(stderr, "blockref: unsupported sector size\n");
        return 64;
    }
    int fd = open(argv[1], O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size < size) {
        perror("blockref: open");
        return 1;
    }
    uint64_t capacity = (uint64_t)st.st_size;
    memset(sector_buf, 0xa5, size);

    struct sock_fprog prog = {0};
    if (argc == 7) {
        if (load_filter(argv[5], &fd, atoi(argv[6]), &prog) < 0) {
            fprintf(stderr, "blockref: cannot read filter %s or use fd %s\n", argv[5], argv[6]);
            return 1;
        }
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0
            || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0) {
            perror("blockref: seccomp");
            return 1;
        }
    }

    /* From here on: no stdio (its first use would fstat), only write(1). */
    char line[96];
    uint64_t done = 0, offset = 0;
    uint64_t start = now_ns();
    while (done < total) {
        ssize_t r = writing ? pwrite(fd, sector_buf, size, (off_t)offset)
                            : pread(fd, sector_buf, size, (off_t)offset);
        if (r != (ssize_t)size) {
            int n = snprintf(line, sizeof line, "blockref: I/O failed ret=%zd\n", r);
            (void)!write(1, line, (size_t)n);
            _exit(1);
        }
        done += size;
        offset += size;
        if (offset + size > capacity)
            offset = 0;
    }
    uint64_t elapsed = now_ns() - start;
    int n = snprintf(line, sizeof line, "blockref: bytes=%llu ns=%llu\n",
                     (unsigned long long)done, (unsigned long long)elapsed);
    (void)!write(1, line, (size_t)n);
    _exit(0);
}
