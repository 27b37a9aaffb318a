/*
 * plan.h: the launch plan, byte by byte.
 *
 * The launcher (spt/plan.py) writes a plan into a memfd and execs the
 * trampoline with the memfd's number as argv[1]. The plan holds everything
 * the last step needs as plain bytes; the trampoline never parses text and
 * never decides anything the launcher has not already decided.
 *
 * All integers are little-endian. spt/plan.py builds this layout in one place
 * and tests/test_plan.py checks sizes and offsets against this header (the
 * test compiles a small program that prints offsetof() of every field), so
 * the two sides cannot drift apart unnoticed.
 */
#ifndef SPT_PLAN_H
#define SPT_PLAN_H

#include <stdint.h>

#define SPT_PLAN_MAGIC   "SPTPLAN1"
#define SPT_PLAN_VERSION 1

/* jail (spt/jail.py decides, jail.h executes, in this order) */
#define SPT_JAIL_NAMESPACES 0x1u /* own mount (empty read-only root), IPC, UTS, net namespaces */
#define SPT_JAIL_IDS 0x2u        /* no supplementary groups, gid, uid; dumpable again */
#define SPT_JAIL_LIMITS 0x4u     /* the rlimits at rlimit_off */

/* flags */
#define SPT_PLAN_X_EXEC_HEAP 0x1u /* guest memory outside segments is RWX */
#define SPT_PLAN_STOP_ON_TERM 0x2u /* SIGTERM/SIGINT/SIGHUP end the guest (PID 1) */
#define SPT_PLAN_STOP_AT_ENTRY 0x4u /* trap (int3) right before the jump: --gdb (spt/debug.py) */

struct spt_plan {                /* offset */
    char     magic[8];           /*   0 SPT_PLAN_MAGIC, no NUL */
    uint32_t version;            /*   8 SPT_PLAN_VERSION */
    uint32_t size;               /*  12 sizeof(struct spt_plan) */
    uint64_t mem_size;           /*  16 guest memory is [0x10000, mem_size) */
    uint64_t entry;              /*  24 guest entry point */
    uint64_t boot_addr;          /*  32 where the boot blob goes (0x11000) */
    uint64_t boot_off;           /*  40 boot info + manifest + cmdline */
    uint64_t boot_len;           /*  48 */
    uint64_t bpf_off;            /*  56 struct sock_filter[bpf_count] */
    uint64_t bpf_count;          /*  64 instructions, 8 bytes each */
    uint64_t segs_off;           /*  72 struct spt_plan_segment[nsegs] */
    uint64_t keep_off;           /*  80 int32_t[nkeep], ascending */
    uint64_t epoll_off;          /*  88 struct spt_plan_epoll[nepoll] */
    uint64_t notify_off;         /*  96 struct sockaddr_un bytes, or nothing */
    uint32_t nsegs;              /* 104 */
    uint32_t nkeep;              /* 108 */
    uint32_t nepoll;             /* 112 */
    uint32_t notify_len;         /* 116 0: no sd_notify READY=1 */
    uint32_t flags;              /* 120 SPT_PLAN_* */
    int32_t  kernel_fd;          /* 124 the segments' file: the unikernel, or its
                                  *     view in the image store (spt/imagestore.py) */
    int32_t  epoll_fd;           /* 128 number the epoll instance must have */
    int32_t  timer_fd;           /* 132 number the timerfd must have */
    char     name[16];           /* 136 process name (comm), NUL-terminated */
    uint32_t jail;               /* 152 SPT_JAIL_*, 0: no jail */
    uint32_t uid;                /* 156 with SPT_JAIL_IDS: the guest's uid */
    uint32_t gid;                /* 160 with SPT_JAIL_IDS: the guest's gid */
    uint32_t nrlimits;           /* 164 */
    uint64_t rlimit_off;         /* 168 struct spt_plan_rlimit[nrlimits] */
};                               /* 176 */

/* how a segment is loaded */
#define SPT_SEG_COPY 0u /* pread filesz bytes at file_off to vaddr */
#define SPT_SEG_MAP 1u  /* mmap [start, start + filesz) from file_off, private */

struct spt_plan_segment {        /* offset */
    uint64_t file_off;           /*   0 where the bytes are in kernel_fd */
    uint64_t vaddr;              /*   8 p_vaddr (SPT_SEG_MAP: == start) */
    uint64_t filesz;             /*  16 bytes copied, or mapped */
    uint64_t start;              /*  24 page-aligned range for the protection */
    uint64_t end;                /*  32 */
    uint32_t prot;               /*  40 PROT_* from p_flags */
    uint32_t how;                /*  44 SPT_SEG_* */
};                               /*  48 */

struct spt_plan_epoll {          /* offset */
    int32_t  fd;                 /*   0 fd to watch for EPOLLIN */
    uint32_t pad;                /*   4 */
    uint64_t data;               /*   8 epoll_data.u64 the guest receives */
};                               /*  16 */

struct spt_plan_rlimit {         /* offset */
    uint32_t resource;           /*   0 RLIMIT_* */
    uint32_t pad;                /*   4 */
    uint64_t cur;                /*   8 soft limit (struct rlimit64) */
    uint64_t max;                /*  16 hard limit */
};                               /*  24 */

#endif
