/*
 * fault: does one forbidden or borderline thing, chosen on the command line,
 * so that tests can check how the tender's memory layout and filter react.
 *
 *   null        read address 0 (never mapped)             -> SIGSEGV
 *   write-text  store into our own .text (R-X)            -> SIGSEGV
 *   exec-data   call into .data (RW-, W^X)                -> SIGSEGV
 *   exec-heap   call a `ret` copied above kernel_end      -> SIGSEGV, or
 *               "fault: exec-heap ran" + exit 0 under --x-exec-heap
 *   syscall NR  raw system call NR, zero arguments        -> SIGSYS unless allowed
 *   tls         set the TLS base (x86_64: arch_prctl(ARCH_SET_FS); aarch64:
 *               msr tpidr_el0), read offset 0x28 back through it -> exit 0
 *   tls-get     arch_prctl(ARCH_GET_FS), x86_64 only      -> SIGSYS
 *
 * "fault: <mode>" is printed before each attempt.
 */
#include "kit.h"

#define ARCH_GET_FS 0x1003
#define TLS_CANARY 0x5370744b69744e21ULL

/* A `ret` in a writable, non-executable data page. */
static volatile uint8_t data_code[16] = KIT_RET_CODE;
static const uint8_t ret_code[] = KIT_RET_CODE;

/* A TLS block as gcc's stack protector sees it on x86_64: the canary at
 * %fs:0x28 (on aarch64 the test reads the same offset from tpidr_el0). */
static uint64_t tls_block[8] __attribute__((aligned(64)));

typedef void (*code_fn)(void);

static int fault_null(void)
{
    /* Hide the constant from gcc, which would otherwise emit a trap (SIGILL)
     * instead of the load. */
    uintptr_t zero = 0;
    __asm__ volatile("" : "+r"(zero));
    volatile uint64_t *null = (volatile uint64_t *)zero;
    return (int)*null;
}

static int fault_write_text(void)
{
    volatile uint8_t *text = (volatile uint8_t *)(uintptr_t)&guest_main;
    *text = ret_code[0];
    return 0;
}

static int fault_exec_data(void)
{
    code_fn fn = (code_fn)(uintptr_t)data_code;
    fn();
    return 0;
}

static int fault_exec_heap(const struct kit_boot_info *bi)
{
    /* kernel_end is page-aligned and below the stack: plain guest memory. */
    volatile uint8_t *heap = (volatile uint8_t *)bi->kernel_end;
    for (unsigned i = 0; i < sizeof ret_code; i++)
        heap[i] = ret_code[i];
    kit_sync_code(heap);
    __asm__ volatile("" ::: "memory");
    code_fn fn = (code_fn)(uintptr_t)heap;
    fn();
    kit_puts("fault: exec-heap ran\n");
    return 0;
}

static int fault_syscall(const char *nr_text)
{
    uint64_t nr;
    if (!kit_parse_num(nr_text, &nr)) {
        kit_puts("fault: syscall needs a number\n");
        return 64;
    }
    long r = kit_syscall((long)nr, 0, 0, 0, 0, 0, 0);
    kit_puts("fault: syscall ret=");
    kit_put_i64(r);
    kit_puts("\n");
    return 0;
}

static int fault_tls(void)
{
    tls_block[0] = (uint64_t)(uintptr_t)tls_block; /* x86_64 TLS: %fs:0 points to itself */
    tls_block[0x28 / 8] = TLS_CANARY;
    long r = kit_set_tls_base(tls_block);
    if (r != 0) {
        kit_puts("fault: tls arch_prctl ret=");
        kit_put_i64(r);
        kit_puts("\n");
        return 1;
    }
    uint64_t canary = kit_tls_read_0x28();
    if (canary != TLS_CANARY) {
        kit_puts("fault: tls mismatch\n");
        return 1;
    }
    kit_puts("fault: tls ok\n");
    return 0;
}

#ifdef KIT_SYS_arch_prctl
static int fault_tls_get(void)
{
    uint64_t base = 0;
    long r = kit_syscall(KIT_SYS_arch_prctl, ARCH_GET_FS, (long)&base, 0, 0, 0, 0);
    kit_puts("fault: tls-get ret=");
    kit_put_i64(r);
    kit_puts("\n");
    return 0;
}
#endif

int guest_main(const struct kit_boot_info *bi, const char *cmdline)
{
    static char storage[128];
    char *argv[3];
    int argc = kit_split_args(cmdline, storage, sizeof storage, argv, 3);
    if (argc < 1) {
        kit_puts("fault: usage: null | write-text | exec-data | exec-heap | syscall NR"
                 " | tls | tls-get\n");
        return 64;
    }
    const char *mode = argv[0];
    kit_puts("fault: ");
    kit_puts(mode);
    kit_puts("\n");
    if (argc == 1 && kit_streq(mode, "null"))
        return fault_null();
    if (argc == 1 && kit_streq(mode, "write-text"))
        return fault_write_text();
    if (argc == 1 && kit_streq(mode, "exec-data"))
        return fault_exec_data();
    if (argc == 1 && kit_streq(mode, "exec-heap"))
        return fault_exec_heap(bi);
    if (argc == 2 && kit_streq(mode, "syscall"))
        return fault_syscall(argv[1]);
    if (argc == 1 && kit_streq(mode, "tls"))
        return fault_tls();
#ifdef KIT_SYS_arch_prctl
    if (argc == 1 && kit_streq(mode, "tls-get"))
        return fault_tls_get();
#endif
    kit_puts("fault: unknown mode\n");
    return 64;
}
