/*
 * jail.h: the jail's steps, run by the trampoline in this order.
 *
 * spt/jail.py decides what a launch gets (plan.h: jail, uid, gid, rlimits);
 * this file only executes it. It runs after every fd the guest keeps exists
 * (devices, epoll, timer, a connected sd_notify socket) and while stderr is
 * still open, so each failure is one line naming its step and exit status 1.
 * Included by trampoline.c, after die() and check().
 */
#ifndef SPT_JAIL_H
#define SPT_JAIL_H

#define CLONE_NEWNS 0x00020000
#define CLONE_NEWUTS 0x04000000
#define CLONE_NEWIPC 0x08000000
#define CLONE_NEWNET 0x40000000
#define MS_REC 0x4000
#define MS_PRIVATE (1 << 18)
#define MNT_DETACH 2
#define AT_FDCWD (-100)
#define FSOPEN_CLOEXEC 1
#define FSCONFIG_SET_STRING 1
#define FSCONFIG_CMD_CREATE 6
#define FSMOUNT_CLOEXEC 1
#define MOUNT_ATTR_RDONLY 0x1
#define MOUNT_ATTR_NOSUID 0x2
#define MOUNT_ATTR_NODEV 0x4
#define MOUNT_ATTR_NOEXEC 0x8
#define MOVE_MOUNT_F_EMPTY_PATH 0x4
#define PR_SET_DUMPABLE 4
#define PR_CAPBSET_DROP 24
#define EPERM 1
#define EINVAL 22

/* A failure of the jail's own steps: the line also says how to look and how
 * to do without. */
static void jail_check(long r, const char *step)
{
    if (r < 0)
        die_hint(step, r, " (spt doctor says what the host allows; --jail=off runs without)");
}

/* linux/capability.h: the capabilities the jail's steps use. */
#define CAP_SETGID 6
#define CAP_SETUID 7
#define CAP_SETPCAP 8
#define CAP_SYS_ADMIN 21

/* What the jail's steps need of `flags` (SPT_JAIL_*), as a capability mask:
 * CAP_SETPCAP to empty the bounding set, CAP_SETUID and CAP_SETGID for the
 * ids, CAP_SYS_ADMIN for the namespaces. Nothing without those steps. */
static uint64_t jail_capabilities(uint32_t flags)
{
    uint64_t caps = 0;
    if (flags & (SPT_JAIL_NAMESPACES | SPT_JAIL_IDS))
        caps |= 1ULL << CAP_SETPCAP | 1ULL << CAP_SETGID | 1ULL << CAP_SETUID;
    if (flags & SPT_JAIL_NAMESPACES)
        caps |= 1ULL << CAP_SYS_ADMIN;
    return caps;
}

/*
 * Before the jail, first thing after reading the plan: the trampoline keeps
 * only the capabilities its jail needs, in every set. A root exec arrives
 * with all of them; this leaves what exec would have given had the bounding
 * set held only `keep` (the bounding set shrunk, then the effective,
 * permitted and inheritable sets cut to it, which is always allowed, and
 * the ambient set follows the permitted one). Without CAP_SETPCAP the
 * bounding set stays as it came (docs/security.md); the other sets are cut
 * all the same.
 */
static void jail_keep_only(uint64_t keep)
{
    for (int cap = 0; cap < 64; cap++) {
        if (keep & (1ULL << cap))
            continue;
        long r = sys_prctl(PR_CAPBSET_DROP, cap);
        if (r == -EINVAL || r == -EPERM)
            break; /* past the last capability, or no CAP_SETPCAP */
        check(r, "jail: bounding set: prctl(PR_CAPBSET_DROP)");
    }
    struct { uint32_t version; int32_t pid; } header = { 0x20080522, 0 }; /* _V3 */
    uint32_t sets[6]; /* two struct __user_cap_data_struct: effective, permitted, inheritable */
    check(sys_capget(&header, sets), "capget");
    for (int half = 0; half < 2; half++)
        for (int set = 0; set < 3; set++)
            sets[half * 3 + set] &= (uint32_t)(keep >> (32 * half));
    check(sys_capset(&header, sets), "capset");
}

/*
 * Step 0. The bounding set emptied. The launcher kept in it only what the
 * steps below need (CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID) and CAP_SETPCAP
 * for this; dropping a capability from the bounding set leaves it effective,
 * so the steps still work, and the uid change clears the rest. Without
 * CAP_SETPCAP (a launcher that had it dropped) nothing can be dropped here:
 * the set stays as it came, which no_new_privs and a guest that cannot exec
 * make harmless (docs/security.md).
 */
static void jail_bounding_set(void)
{
    for (int cap = 0; cap < 64; cap++) {
        long r = sys_prctl(PR_CAPBSET_DROP, cap);
        if (r == -EINVAL || r == -EPERM)
            return; /* past the last capability, or no CAP_SETPCAP */
        check(r, "jail: bounding set: prctl(PR_CAPBSET_DROP)");
    }
}

/*
 * Step 1. New mount, IPC, UTS and network namespaces. Fds opened before
 * stay what they are: the TAP stays in the network namespace it lives in
 * (its counters and tooling there see it), the block file stays writable.
 */
static void jail_namespaces(void)
{
    jail_check(sys_unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET),
               "jail: namespaces: unshare(mount, IPC, UTS, network)");
}

/*
 * Step 2. Nothing mounted or unmounted from here on reaches the host's
 * mount namespace.
 */
static void jail_private_mounts(void)
{
    jail_check(sys_mount(0, "/", 0, MS_REC | MS_PRIVATE, 0),
               "jail: private mounts: mount(/, MS_PRIVATE)");
}

/*
 * Step 3. The root becomes an empty, read-only tmpfs and the host's tree is
 * detached from this namespace: nothing of the host can be reached by path
 * and no host file system is kept busy by the guest. The tmpfs is made with
 * the mount API (Linux 5.2), attached on top of /, entered by its fd, and
 * pivot_root(".", ".") puts the old root on top of it, to be detached.
 */
static void jail_empty_root(void)
{
    const char *step = "jail: empty root: tmpfs";
    long fs = sys_fsopen("tmpfs", FSOPEN_CLOEXEC);
    jail_check(fs, step);
    jail_check(sys_fsconfig((int)fs, FSCONFIG_SET_STRING, "size", "4k", 0), step);
    jail_check(sys_fsconfig((int)fs, FSCONFIG_SET_STRING, "mode", "0555", 0), step);
    jail_check(sys_fsconfig((int)fs, FSCONFIG_CMD_CREATE, 0, 0, 0), step);
    long mnt = sys_fsmount((int)fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID
                           | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    jail_check(mnt, step);
    sys_close((int)fs);
    jail_check(sys_move_mount((int)mnt, "", AT_FDCWD, "/", MOVE_MOUNT_F_EMPTY_PATH),
          "jail: empty root: move_mount");
    jail_check(sys_fchdir((int)mnt), "jail: empty root: fchdir");
    sys_close((int)mnt);
    jail_check(sys_pivot_root(".", "."), "jail: empty root: pivot_root");
    jail_check(sys_umount2(".", MNT_DETACH), "jail: empty root: detach the host's root");
    jail_check(sys_chdir("/"), "jail: empty root: chdir");
}

/*
 * Step 4. No supplementary groups, then the gid, then the uid (the uid last:
 * after it nothing may change ids any more), real, effective and saved
 * alike, so no way back to root remains. Leaving uid 0 also clears the
 * permitted, effective and ambient capabilities.
 */
static void jail_ids(uint32_t uid, uint32_t gid)
{
    jail_check(sys_setgroups(0, 0), "jail: groups: setgroups(0)");
    jail_check(sys_setresgid(gid, gid, gid), "jail: gid: setresgid");
    jail_check(sys_setresuid(uid, uid, uid), "jail: uid: setresuid");
}

/*
 * Step 5. The uid change made the process non-dumpable: the kernel would
 * then write no core (or root's, per fs.suid_dumpable), and only
 * CAP_SYS_PTRACE could look at it. It is the operator's guest: dumpable
 * again, its /proc files belong to its own uid, and a core goes where the
 * core pattern says, as for any process of that uid.
 */
static void jail_dumpable(void)
{
    jail_check(sys_prctl(PR_SET_DUMPABLE, 1), "jail: dumpable: prctl(PR_SET_DUMPABLE)");
}

static const char *const rlimit_step[16] = {
    "jail: rlimits: RLIMIT_CPU", "jail: rlimits: RLIMIT_FSIZE", "jail: rlimits: RLIMIT_DATA",
    "jail: rlimits: RLIMIT_STACK", "jail: rlimits: RLIMIT_CORE", "jail: rlimits: RLIMIT_RSS",
    "jail: rlimits: RLIMIT_NPROC", "jail: rlimits: RLIMIT_NOFILE",
    "jail: rlimits: RLIMIT_MEMLOCK", "jail: rlimits: RLIMIT_AS", "jail: rlimits: RLIMIT_LOCKS",
    "jail: rlimits: RLIMIT_SIGPENDING", "jail: rlimits: RLIMIT_MSGQUEUE",
    "jail: rlimits: RLIMIT_NICE", "jail: rlimits: RLIMIT_RTPRIO", "jail: rlimits: RLIMIT_RTTIME",
};

/*
 * Step 6. The limits, last: they only ever lower what the launcher had, which
 * needs no privilege (prlimit64, which systemd's @default set allows too).
 */
static void jail_rlimits(const struct spt_plan_rlimit *lim, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t value[2] = { lim[i].cur, lim[i].max };
        jail_check(sys_prlimit64((int)lim[i].resource, value),
              lim[i].resource < 16 ? rlimit_step[lim[i].resource] : "jail: rlimits");
    }
}

static void jail(const struct spt_plan *plan, const char *base)
{
    if (plan->jail & (SPT_JAIL_NAMESPACES | SPT_JAIL_IDS))
        jail_bounding_set();
    if (plan->jail & SPT_JAIL_NAMESPACES) {
        jail_namespaces();
        jail_private_mounts();
        jail_empty_root();
    }
    if (plan->jail & SPT_JAIL_IDS) {
        jail_ids(plan->uid, plan->gid);
        jail_dumpable();
    }
    if (plan->jail & SPT_JAIL_LIMITS)
        jail_rlimits((const void *)(base + plan->rlimit_off), plan->nrlimits);
}

#endif
