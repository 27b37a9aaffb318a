/*
 * blockref: the host-side reference for the blockbench guest.
 *
 *     blockref FILE SECTOR_SIZE write|read TOTAL_BYTES
 *
 * The same work as the guest, with no tender and no seccomp filter: one
 * pread/pwrite of SECTOR_SIZE bytes per call, sequential, wrapping at the
 * file's size, timed with CLOCK_MONOTONIC around the loop only. Prints
 * `blockref: bytes=N ns=T` like the guest's `blockbench: bytes=N ns=T`.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint8_t sector_buf[65536];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 5 || (strcmp(argv[3], "write") && strcmp(argv[3], "read"))) {
        fprintf(stderr, "usage: blockref FILE SECTOR_SIZE write|read TOTAL_BYTES\n");
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

    uint64_t done = 0, offset = 0;
    uint64_t start = now_ns();
    while (done < total) {
        ssize_t r = writing ? pwrite(fd, sector_buf, size, (off_t)offset)
                            : pread(fd, sector_buf, size, (off_t)offset);
        if (r != (ssize_t)size) {
            perror("blockref: I/O");
            return 1;
        }
        done += size;
        offset += size;
        if (offset + size > capacity)
            offset = 0;
    }
    uint64_t elapsed = now_ns() - start;
    printf("blockref: bytes=%llu ns=%llu\n", (unsigned long long)done,
           (unsigned long long)elapsed);
    return 0;
}
