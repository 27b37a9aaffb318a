/*
 * trampoline.c: the last step of a launch, freestanding (no libc).
 *
 * The launcher execs this program with the plan's memfd as argv[1]. exec
 * already replaced the interpreter, libc and ld.so with this small static
 * image, linked far above any guest memory (see the Makefile), so guest
 * memory can start at 0x10000 whatever the launcher's interpreter was.
 *
 * Order matters: everything that can fail runs while stderr is still open,
 * so every failure is one line and exit status 1. The jail (jail.h) comes
 * once every fd the guest keeps exists; then the fds the guest must not have
 * are closed and spt_final (keep.S, the one page that stays) drops every
 * other mapping, installs the seccomp filter and jumps.
 *
 * What differs by architecture (the system call instruction, the entry
 * point, the kept page, the top of user space, the guest's initial stack)
 * lives in native/<arch>/; this file is the same for every architecture.
 */
#include "plan.h"
#include "sys.h"

/* Linux ABI values used below. */
#define PROT_READ 1
#define PROT_WRITE 2
#define PROT_EXEC 4
#define MAP_PRIVATE 0x02
#define MAP_ANONYMOUS 0x20
#define MAP_FIXED 0x10
#define MAP_NORESERVE 0x4000
#define MAP_FIXED_NOREPLACE 0x100000
#define SIG_SETMASK 2
#define SA_RESTORER 0x04000000
#define SIGKILL 9
#define SIGSTOP 19
#define SIGHUP 1
#define SIGINT 2
#define SIGTERM 15
#define NSIG 64
#define PR_SET_NAME 15
#define PR_SET_NO_NEW_PRIVS 38
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#define LINUX_CAPABILITY_VERSION_3 0x20080522
#define EPOLL_CTL_ADD 1
#define EPOLLIN 0x001
#define CLOCK_MONOTONIC 1
#define TFD_NONBLOCK 04000
#define AF_UNIX 1
#define SOCK_DGRAM 2
#define SOCK_CLOEXEC 02000000

#define GUEST_MEM_START 0x10000UL
#define PAGE 4096UL

/* From keep.S: the page that survives, and its entry points. Hidden, so
 * the compiler addresses them RIP-relative instead of through a GOT. */
#pragma GCC visibility push(hidden)
extern char spt_keep_start[];
extern void spt_final(const void *args) __attribute__((noreturn));
extern void spt_stop_handler(int sig);
#pragma GCC visibility pop

/*
 * What spt_final needs, placed in guest memory (the scratch area at the top)
 * because nothing else stays mapped. keep.S reads it by these offsets.
 */
struct final_args {          /* offset */
    uint64_t unmap[3][2];    /*  0 (addr, len) ranges to drop */
    uint64_t fprog;          /* 48 struct sock_fprog * */
    uint64_t scratch_lo;     /* 56 zeroed just before the jump */
    uint64_t scratch_hi;     /* 64 */
    uint64_t stack_top;      /* 72 the guest's sp: mem_size - ARCH_STACK_GAP */
    uint64_t boot_info;      /* 80 the guest's first argument: 0x11000 */
    uint64_t entry;          /* 88 */
    uint64_t stop_at_entry;  /* 96 non-zero: int3 before the jump (--gdb) */
};

struct sock_fprog_raw {
    uint16_t len;
    uint16_t pad[3];
    uint64_t filter;
};

struct kernel_sigaction {
    uint64_t handler;
    uint64_t flags;
    uint64_t restorer;
    uint64_t mask;
};

/* gcc may emit calls to these even in freestanding code. */
void *memcpy(void *d, const void *s, size_t n)
{
    char *dp = d;
    const char *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memset(void *d, int c, size_t n)
{
    char *dp = d;
    while (n--)
        *dp++ = (char)c;
    return d;
}

static const char *errname(long err)
{
    switch (-err) {
    case 1: return "Operation not permitted";
    case 2: return "No such file or directory";
    case 5: return "Input/output error";
    case 9: return "Bad file descriptor";
    case 11: return "Resource temporarily unavailable";
    case 12: return "Cannot allocate memory";
    case 13: return "Permission denied";
    case 14: return "Bad address";
    case 17: return "File exists";
    case 22: return "Invalid argument";
    case 24: return "Too many open files";
    case 38: return "Function not implemented";
    case 111: return "Connection refused";
    default: return "Unknown error";
    }
}

/* One line on stderr, exit status 1: the launcher's error contract. */
static __attribute__((noreturn)) void die_hint(const char *what, long err, const char *hint)
{
    char line[320];
    size_t n = 0;
    const char *parts[5] = { "solo5-spt: ", what, err ? ": " : "", err ? errname(err) : "", hint };
    for (int i = 0; i < 5; i++)
        for (const char *p = parts[i]; *p && n < sizeof line - 1; p++)
            line[n++] = *p;
    line[n++] = '\n';
    sys_write(2, line, n);
    sys_exit_group(1);
}

static __attribute__((noreturn)) void die(const char *what, long err)
{
    die_hint(what, err, "");
}

static void check(long r, const char *what)
{
    if (r < 0)
        die(what, r);
}

#include "jail.h"

static int parse_fd(const char *s)
{
    long v = 0;
    if (!s || !*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 100000000)
            return -1;
        v = v * 10 + (*s - '0');
    }
    return (int)v;
}

/* Read exactly n bytes at off, or fail with `what`. */
static void read_exact(int fd, void *buf, uint64_t n, uint64_t off, const char *what)
{
    char *p = buf;
    while (n) {
        long r = sys_pread(fd, p, n, off);
        if (r == -4) /* EINTR */
            continue;
        if (r < 0)
            die(what, r);
        if (r == 0)
            die(what, -5);
        p += r;
        n -= (uint64_t)r;
        off += (uint64_t)r;
    }
}

/*
 * Default dispositions and an empty mask: exec keeps ignored signals ignored
 * and keeps the blocked mask (Python ignores SIGPIPE, for one), and the guest
 * must start from a clean slate. A container's PID 1 is the exception: the
 * kernel delivers to PID 1 only signals it handles, so with STOP_ON_TERM the
 * stop signals get a handler that lives in the kept page and only exits.
 */
static void reset_signals(uint32_t flags)
{
    struct kernel_sigaction dfl = { 0 };
    for (int sig = 1; sig <= NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        sys_rt_sigaction(sig, &dfl, 0);
    }
    if (flags & SPT_PLAN_STOP_ON_TERM) {
        struct kernel_sigaction stop = {
            .handler = (uint64_t)spt_stop_handler,
            .flags = SA_RESTORER, /* x86_64 refuses to deliver without one; the vdso
                                  * that would serve aarch64 is unmapped */
            .restorer = (uint64_t)spt_stop_handler,
            .mask = ~0UL,
        };
        check(sys_rt_sigaction(SIGTERM, &stop, 0), "sigaction");
        check(sys_rt_sigaction(SIGINT, &stop, 0), "sigaction");
        check(sys_rt_sigaction(SIGHUP, &stop, 0), "sigaction");
    }
    uint64_t empty = 0;
    check(sys_rt_sigprocmask(SIG_SETMASK, &empty), "sigprocmask");
}

/*
 * The guest needs no capability, whoever started it. A root launcher that
 * could empty the bounding set arrives here with none that exec could give
 * back; one without CAP_SETPCAP (a unit granting CAP_NET_ADMIN, say) may
 * still hold ambient or permitted ones: clear the ambient set and drop
 * effective, permitted and inheritable, which is always allowed. The
 * bounding set stays as it came (lowering it needs CAP_SETPCAP); with
 * no_new_privs no exec could gain from it, and the guest cannot exec. This
 * runs after the jail, whose steps need CAP_SYS_ADMIN, CAP_SETUID and
 * CAP_SETGID.
 */
static void drop_capabilities(void)
{
    struct { uint32_t version; int32_t pid; } header = { LINUX_CAPABILITY_VERSION_3, 0 };
    uint32_t none[6] = { 0 }; /* two struct __user_cap_data_struct, all zero */
    sys_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL);
    check(sys_capset(&header, none), "capset");
}

/* Give a fresh fd the number the plan (and so the filter) expects. */
static void place_fd(long fd, int target, const char *what)
{
    check(fd, what);
    if (fd != target) {
        check(sys_dup3((int)fd, target), what);
        sys_close((int)fd);
    }
}

/*
 * Yield: one epoll instance and one timerfd, both at the numbers the boot
 * info and the filter name; the timer and every net device watched for
 * EPOLLIN with the data the guest expects (its manifest index).
 */
static void setup_yield(const struct spt_plan *plan, const struct spt_plan_epoll *watch)
{
    place_fd(sys_epoll_create1(0), plan->epoll_fd, "epoll_create1");
    place_fd(sys_timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK), plan->timer_fd,
             "timerfd_create");
    for (uint32_t i = 0; i < plan->nepoll; i++) {
        struct epoll_event_raw ev = { .events = EPOLLIN, .data = watch[i].data };
        check(sys_epoll_ctl(plan->epoll_fd, EPOLL_CTL_ADD, watch[i].fd, &ev), "epoll_ctl");
    }
}

/*
 * sd_notify: connected before the jail (a path socket is out of reach once
 * the root is empty, an abstract one once the network namespace is new),
 * READY=1 sent after it: the guest is about to run, so the unit is started.
 */
static long notify_connect(const void *addr, uint32_t len)
{
    long s = sys_socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    check(s, "notify socket");
    check(sys_connect((int)s, addr, len), "sd_notify READY=1");
    return s;
}

static void notify_ready(long s)
{
    static const char ready[] = "READY=1";
    check(sys_sendto((int)s, ready, sizeof ready - 1, 0, 0), "sd_notify READY=1");
    sys_close((int)s);
}

/*
 * Close every fd but the ascending list `keep`. The range above the last kept
 * fd goes first, while stderr is still open: close_range needs Linux 5.9, and
 * a kernel without it must refuse loudly rather than leak fds to the guest.
 */
static void close_all_but(const int32_t *keep, uint32_t n)
{
    unsigned top = n ? (unsigned)keep[n - 1] + 1 : 0;
    check(sys_close_range(top, ~0U), "close_range (Linux 5.9 or later is needed)");
    unsigned lo = 0;
    for (uint32_t i = 0; i < n; i++) {
        if ((unsigned)keep[i] > lo)
            sys_close_range(lo, (unsigned)keep[i] - 1);
        lo = (unsigned)keep[i] + 1;
    }
}

/* Called from _start below; not static so the asm can name it. */
void tramp_main(long *sp) __attribute__((noreturn, used));
void tramp_main(long *sp)
{
    /* First of all: no exec from here on can gain privileges (the guest's
     * filter forbids exec anyway), and seccomp may load without
     * CAP_SYS_ADMIN. The launcher execs this file without setting it. */
    check(sys_prctl(PR_SET_NO_NEW_PRIVS, 1), "prctl(PR_SET_NO_NEW_PRIVS)");
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    int plan_fd = parse_fd(argc > 1 ? argv[1] : 0);
    if (plan_fd < 0)
        die("trampoline: usage: spt-trampoline PLAN_FD (run by solo5-spt)", 0);

    uint64_t plan_size = 0;
    check(sys_fstat_size(plan_fd, &plan_size), "plan");
    if (plan_size < sizeof(struct spt_plan))
        die("plan: truncated", 0);
    long m = sys_mmap(0, plan_size, PROT_READ, MAP_PRIVATE, plan_fd, 0);
    check(m, "plan: mmap");
    const char *base = (const char *)m;
    const struct spt_plan *plan = (const struct spt_plan *)base;
    for (int i = 0; i < 8; i++)
        if (plan->magic[i] != SPT_PLAN_MAGIC[i])
            die("plan: bad magic", 0);
    if (plan->version != SPT_PLAN_VERSION || plan->size != sizeof *plan)
        die("plan: version mismatch between launcher and trampoline", 0);

    /* Guest addresses are host addresses; the filter (not this code)
     * enforces what the guest may do, so the plan is trusted as written by
     * the launcher, but offsets are still kept inside the plan. */
    uint64_t ends[] = {
        plan->boot_off + plan->boot_len,
        plan->bpf_off + plan->bpf_count * 8,
        plan->segs_off + plan->nsegs * sizeof(struct spt_plan_segment),
        plan->keep_off + plan->nkeep * 4,
        plan->epoll_off + plan->nepoll * sizeof(struct spt_plan_epoll),
        plan->notify_off + plan->notify_len,
        plan->rlimit_off + plan->nrlimits * sizeof(struct spt_plan_rlimit),
    };
    for (unsigned i = 0; i < sizeof ends / sizeof ends[0]; i++)
        if (ends[i] > plan_size)
            die("plan: truncated", 0);
    if (plan->bpf_count == 0 || plan->bpf_count > 4096)
        die("plan: bad filter length", 0);

    char name[16];
    memcpy(name, plan->name, sizeof name);
    name[15] = 0;
    sys_prctl(PR_SET_NAME, (long)name);
    jail_keep_only(jail_capabilities(plan->jail));
    reset_signals(plan->flags);

    /* Guest memory: one private anonymous mapping, [0x10000, mem_size).
     * [0, 0x10000) stays unmapped so a NULL dereference faults. */
    uint64_t mem = plan->mem_size;
    if (mem <= GUEST_MEM_START || mem > (uint64_t)spt_keep_start || mem % PAGE)
        die("guest memory size is out of range", 0);
    int heap_prot = PROT_READ | PROT_WRITE |
                    ((plan->flags & SPT_PLAN_X_EXEC_HEAP) ? PROT_EXEC : 0);
    long g = sys_mmap(GUEST_MEM_START, mem - GUEST_MEM_START, heap_prot,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    /* EEXIST is the kernel's "something is mapped there already"; its
     * strerror ("File exists") alone would not tell the operator that. */
    if (g == -17)
        die("guest memory overlaps a mapping already in place "
            "(mmap MAP_FIXED_NOREPLACE)", g);
    check(g, "guest memory: mmap");
    if ((uint64_t)g != GUEST_MEM_START)
        die("guest memory: kernel ignored MAP_FIXED_NOREPLACE", 0);

    /* Segments: either copy p_filesz bytes straight from the unikernel
     * file (the rest up to p_memsz is already zero), or map the segment's
     * pages from the image store's file, privately (copy on write), so
     * every guest of one image shares the pages it does not write. Then
     * apply the segment's protection to its page-aligned range. */
    const struct spt_plan_segment *seg = (const void *)(base + plan->segs_off);
    for (uint32_t i = 0; i < plan->nsegs; i++) {
        if (seg[i].start < GUEST_MEM_START || seg[i].end > mem || seg[i].vaddr < seg[i].start
            || seg[i].filesz > seg[i].end - seg[i].vaddr)
            die("plan: segment outside guest memory", 0);
        if (seg[i].how == SPT_SEG_MAP) {
            if (seg[i].vaddr != seg[i].start || seg[i].filesz % PAGE || seg[i].file_off % PAGE)
                die("plan: mapped segment not page-aligned", 0);
            if (seg[i].filesz) {
                long r = sys_mmap(seg[i].start, seg[i].filesz, (int)seg[i].prot,
                                  MAP_PRIVATE | MAP_FIXED, plan->kernel_fd, seg[i].file_off);
                check(r, "unikernel: mmap of the stored image");
                if ((uint64_t)r != seg[i].start)
                    die("unikernel: the stored image was mapped elsewhere", 0);
            }
        } else if (seg[i].how == SPT_SEG_COPY) {
            read_exact(plan->kernel_fd, (void *)seg[i].vaddr, seg[i].filesz, seg[i].file_off,
                       "unikernel: short read");
        } else {
            die("plan: unknown segment kind", 0);
        }
        check(sys_mprotect(seg[i].start, seg[i].end - seg[i].start, (int)seg[i].prot),
              "mprotect");
    }

    /* Boot info, manifest and command line, laid out by the launcher. */
    if (plan->boot_addr < GUEST_MEM_START || plan->boot_addr + plan->boot_len > mem)
        die("plan: boot info outside guest memory", 0);
    memcpy((void *)plan->boot_addr, base + plan->boot_off, plan->boot_len);

    /* Scratch at the top of guest memory, below the guest's first stack
     * slot: the filter, its sock_fprog and spt_final's arguments. It is all
     * zeroed before the jump, so the guest finds fresh memory there. */
    uint64_t stack_top = mem - ARCH_STACK_GAP; /* the guest's first stack slot (arch.h) */
    uint64_t bpf_bytes = plan->bpf_count * 8;
    uint64_t bpf = (stack_top - 8 - bpf_bytes) & ~15UL;
    struct sock_fprog_raw *fprog = (void *)(bpf - 16);
    struct final_args *fa = (void *)(((uint64_t)fprog - sizeof *fa) & ~15UL);
    if ((uint64_t)fa < plan->boot_addr + plan->boot_len + PAGE)
        die("guest memory too small for the launch scratch area", 0);
    memcpy((void *)bpf, base + plan->bpf_off, bpf_bytes);
    fprog->len = (uint16_t)plan->bpf_count;
    fprog->filter = bpf;

    uint64_t keep_page = (uint64_t)spt_keep_start;
    *fa = (struct final_args){
        .unmap = {
            { 0, GUEST_MEM_START },
            { mem, keep_page - mem },
            { keep_page + PAGE, ARCH_USER_TOP - (keep_page + PAGE) },
        },
        .fprog = (uint64_t)fprog,
        .scratch_lo = (uint64_t)fa,
        .scratch_hi = stack_top,
        .stack_top = stack_top,
        .boot_info = plan->boot_addr,
        .entry = plan->entry,
        .stop_at_entry = plan->flags & SPT_PLAN_STOP_AT_ENTRY,
    };

    setup_yield(plan, (const void *)(base + plan->epoll_off));
    long notify = plan->notify_len ? notify_connect(base + plan->notify_off, plan->notify_len) : -1;
    /* The image is copied and the plan is mapped: their fds make room for
     * the two the jail's empty root needs, so it needs no more than a launch. */
    sys_close(plan->kernel_fd);
    sys_close(plan_fd);
    jail(plan, base);
    drop_capabilities();
    if (notify >= 0)
        notify_ready(notify);

    /* From here on nothing can be reported: stderr is about to close. The
     * plan's mapping goes with the big munmap in spt_final. */
    close_all_but((const int32_t *)(base + plan->keep_off), plan->nkeep);
    spt_final(fa);
}

/* _start, the process entry point, is the architecture's start.S. */
