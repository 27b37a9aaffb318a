"""The jail: what a launch drops once its devices are open, before the guest runs."""

# This module decides; the trampoline executes (native/jail.h), because
# Python 3.11 has no unshare(2) and the launch path loads no ctypes. The
# steps, in the order they run, each failure one line naming its step:
#
#   0. bounding set   emptied (the launcher kept only what 1-4 need)
#   1. namespaces     new mount, IPC, UTS and network namespaces
#   2. private mounts nothing mounted from here on reaches the host
#   3. empty root     an empty read-only tmpfs becomes /, the host's tree is
#                     detached
#   4. groups, gid, uid  no supplementary groups; real, effective and saved
#                     gid and uid become the guest's (no way back to root)
#   5. dumpable       set again after the uid change: cores, gdb and /proc
#                     stay the operator's
#   6. rlimits        RLIMITS below, never above what the launcher had
#
# Which steps a launch gets (docs/security.md has the table per launch path):
#   --jail=auto (default)  root: all six; any other uid: rlimits only
#   --jail=limits          rlimits only, and the ids if --user is given: what
#                          `spt unit` (systemd's sandbox does the rest) and
#                          `spt entrypoint` (the container is the rest) use
#   --jail=off             nothing (a host without namespaces, file cores)

import posix  # not os: the launch path's modules do without it (spt/lean.py)

from spt import SptError, lean, plan
from spt.lean import Record

MODES = ("auto", "limits", "off")

# The default uid and gid of a root launch: GUEST_ID_BASE + the launch's PID.
# No fork happens, so that PID is the guest's for its whole life, and no two
# live processes share a PID: no two running guests share a uid, so an escaped
# guest could not signal, ptrace or read another one as its owner. The range
# (0x7E000000 up to 0x7E000000 + 2^22, the largest pid_max) lies in what
# systemd's UID table leaves unused (1879048192...2147483647) and clear of
# its foreign range at 0x7FFE0000; no file is owned by these ids. A PID is
# unique only in its own PID namespace, and the ids must exist in the user
# namespace, so the default needs the host's own of both.
GUEST_ID_BASE = 0x7E000000
PROC_USER_INIT_INO = 0xEFFFFFFD  # include/linux/proc_ns.h: the initial namespaces'
PROC_PID_INIT_INO = 0xEFFFFFFC  # fixed inode numbers


class Jail(Record, fields="jail uid gid rlimits"):
    """What the jail of a launch is: the LaunchPlan fields it fills."""

    __slots__ = ()


OFF = Jail(0, 0, 0, ())


def parse_mode(value: str) -> str:
    if value not in MODES:
        raise SptError("--jail: expected one of %s, got `%s'" % ("|".join(MODES), value))
    return value


def parse_user(value: str) -> tuple[int, int]:
    """--user=USER|UID[:GID] -> (uid, gid); a UID alone gets its own
    number as gid unless the user database names its group."""
    name, colon, group = value.partition(":")
    if name.isdigit():
        uid = int(name)
        gid = _primary_gid(uid=uid)
    else:
        import pwd

        try:
            entry = pwd.getpwnam(name)
        except (KeyError, ValueError):
            raise SptError("--user: no such user: `%s'" % name) from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if colon:
        if not group.isdigit():
            raise SptError("--user: GID must be a number, got `%s'" % group)
        gid = int(group)
    for what, value in (("uid", uid), ("gid", gid)):
        if value == 0:
            raise SptError("--user: %s 0 is root's: the jail runs a guest as anything but "
                           "root (--jail=off keeps root)" % what)
        if value >= 0xFFFFFFFF:
            raise SptError("--user: %s %d is out of range" % (what, value))
    return uid, gid


def _primary_gid(uid: int) -> int:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_gid
    except (KeyError, OverflowError):
        return uid


def decide(mode: str, user: tuple[int, int] | None, keep_fds) -> Jail:
    """The jail of this launch (see the table above), as plan fields."""
    if mode == "off":
        if user is not None:
            raise SptError("--user needs the jail; it cannot go with --jail=off")
        return OFF
    root = posix.geteuid() == 0
    if user is not None and not root:
        raise SptError("--user needs a launch as root (this one runs as uid %d)" % posix.geteuid())
    flags = plan.JAIL_LIMITS
    uid = gid = 0
    if mode == "auto" and root:
        flags |= plan.JAIL_NAMESPACES | plan.JAIL_IDS
        uid, gid = user if user is not None else default_ids()
    elif user is not None:
        flags |= plan.JAIL_IDS
        uid, gid = user
    return Jail(flags, uid, gid, rlimits(keep_fds))


def default_ids() -> tuple[int, int]:
    """GUEST_ID_BASE + PID, where that is sound (see GUEST_ID_BASE)."""
    for ns, init, what in (("pid", PROC_PID_INIT_INO, "PID namespace (the PID is unique only "
                            "in its own)"),
                           ("user", PROC_USER_INIT_INO, "user namespace (the per-guest uid "
                            "may not be mapped)")):
        try:
            same = posix.stat("/proc/self/ns/" + ns).st_ino == init
        except OSError:
            same = False
        if not same:
            raise SptError("jail: this root launch is not in the host's %s: give the guest "
                           "its ids with --user=UID[:GID], or --jail=limits" % what)
    return ids_for_pid(posix.getpid())


def ids_for_pid(pid: int) -> tuple[int, int]:
    """The per-guest uid and gid of the guest whose PID in the host's PID
    namespace is `pid` (unique among live processes: no two running guests
    share them)."""
    guest_id = GUEST_ID_BASE + pid
    return guest_id, guest_id


# What the guest can use of each limit. The guest's filter already forbids
# every call these limits govern; they hold should the filter ever not.
# Left as the launcher had them (docs/security.md says why): RLIMIT_CORE (the
# operator's choice of core dumps), RLIMIT_FSIZE (a block file is written up
# to its capacity and the console may be a growing log file: any write at an
# offset past the limit would be SIGXFSZ), RLIMIT_CPU, RLIMIT_AS, RLIMIT_DATA,
# RLIMIT_STACK (guest memory is mapped already), RLIMIT_SIGPENDING (how the
# operator's signals arrive), RLIMIT_RSS and RLIMIT_LOCKS (not enforced by
# Linux), RLIMIT_RTTIME (with RLIMIT_RTPRIO 0 no real-time policy is set).
ZERO_LIMITS = (
    lean.RLIMIT_NPROC,  # no new processes or threads
    lean.RLIMIT_MEMLOCK,  # no locked memory
    lean.RLIMIT_MSGQUEUE,  # no POSIX message queue bytes
    lean.RLIMIT_NICE,  # no raising the priority
    lean.RLIMIT_RTPRIO,  # no real-time priority
)


def rlimits(keep_fds) -> tuple:
    """(resource, soft, hard) triples: RLIMIT_NOFILE just above the guest's
    highest fd, the ZERO_LIMITS 0; never above the launcher's hard limit."""
    wanted = [(lean.RLIMIT_NOFILE, max(keep_fds, default=2) + 1)]
    wanted += [(res, 0) for res in ZERO_LIMITS]
    out = []
    hard_limits = [hard for _soft, hard in lean.getrlimits(*(res for res, _ in wanted))]
    for (res, value), hard in zip(wanted, hard_limits):
        if hard != lean.RLIM_INFINITY:
            value = min(value, hard)
        out.append((res, value, value))
    return tuple(out)
