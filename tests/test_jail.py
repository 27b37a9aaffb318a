"""The jail: what a running guest holds of whoever launched it.

A root launch's guest runs as a uid and gid of its own with no groups, in
mount (empty root), IPC, UTS and network namespaces of its own, with the
rlimits docs/security.md lists; an unprivileged launch, one without
CAP_SETPCAP, --jail=limits and --jail=off end as that page's table says. All
read from /proc/PID of real guests, from the outside.
"""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess

import pytest

from conftest import SOLO5_SPT, SPT, assert_refused, read_line, run, spt_run, stop, wait_for
from netns_util import enter_netns
from test_tool import installed_filters

GUEST_ID_BASE = 0x7E000000
NOBODY = 65534
ALL_CAPS = (1 << (int(open("/proc/sys/kernel/cap_last_cap").read()) + 1)) - 1
CAP_SETPCAP = 8
ZERO_LIMITS = ("Max processes", "Max locked memory", "Max msgqueue size", "Max nice priority",
               "Max realtime priority")
# Left as the launcher had them (docs/security.md).
KEPT_LIMITS = ("Max cpu time", "Max file size", "Max data size", "Max stack size",
               "Max core file size", "Max resident set", "Max address space", "Max file locks",
               "Max pending signals", "Max realtime timeout")


def read_status(pid: int) -> dict[str, str]:
    status = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    return status


def read_limits(pid: int) -> dict[str, tuple[str, str]]:
    """/proc/PID/limits: name -> (soft, hard) as the kernel prints them."""
    with open("/proc/%d/limits" % pid) as f:
        lines = f.read().splitlines()[1:]
    limits = {}
    for line in lines:
        match = re.match(r"(Max [a-z ]+?)\s{2,}(\S+)\s+(\S+)", line)
        assert match, line
        limits[match[1]] = (match[2], match[3])
    return limits


def namespaces(pid: int | str) -> dict[str, str]:
    return {ns: os.readlink("/proc/%s/ns/%s" % (pid, ns)) for ns in ("mnt", "ipc", "uts", "net")}


def is_filtered(proc) -> bool:
    """The trampoline is done: the filter goes in last, right before the jump."""
    assert proc.poll() is None, proc.communicate(timeout=5)
    return read_status(proc.pid).get("Seccomp") == "2"


def start_sleep(*args, **kwargs) -> subprocess.Popen:
    """The sleep guest as `solo5-spt ARGS`, or as `PREFIX... solo5-spt ARGS`
    with prefix=[...], up to where it blocks in yield."""
    prefix = kwargs.pop("prefix", [])
    proc = subprocess.Popen([*prefix, SOLO5_SPT, *args, "--mem=8", guest_sleep()],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)
    line = read_line(proc.stdout)
    assert line == "sleep: yielding\n", (line, proc.poll(), proc.stderr.read())
    wait_for(lambda: is_filtered(proc))
    return proc


def guest_sleep() -> str:
    from conftest import guest_path

    return guest_path("sleep")


@pytest.fixture
def sleeping():
    procs = []

    def start(*args, **kwargs):
        proc = start_sleep(*args, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop(proc)


def ids(status: dict) -> tuple[list[int], list[int], str]:
    return ([int(x) for x in status["Uid"].split()], [int(x) for x in status["Gid"].split()],
            status["Groups"])


def caps(status: dict) -> dict[str, int]:
    return {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def no_caps_but_bounding(bounding: int) -> dict[str, int]:
    return {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": bounding, "CapAmb": 0}


# --- a root launch -------------------------------------------------------------

def test_root_launch_runs_the_guest_as_its_own_uid_and_gid_without_groups(sleeping):
    assert os.geteuid() == 0, "the suite runs as root"
    proc = sleeping()
    status = read_status(proc.pid)
    own = GUEST_ID_BASE + proc.pid  # the launcher's PID is the guest's: no fork
    assert ids(status) == ([own] * 4, [own] * 4, "")
    assert caps(status) == no_caps_but_bounding(0)
    assert status["NoNewPrivs"] == "1"


def test_two_guests_never_share_a_uid(sleeping):
    first, second = sleeping(), sleeping()
    uids = {ids(read_status(p.pid))[0][0] for p in (first, second)}
    assert uids == {GUEST_ID_BASE + first.pid, GUEST_ID_BASE + second.pid}


@pytest.mark.parametrize("user, expected", [
    ("4242", (4242, 4242)),  # no passwd entry: the uid's number as gid
    ("4242:4343", (4242, 4343)),
    ("nobody", (NOBODY, NOBODY)),  # the user database's uid and group
    ("nobody:777", (NOBODY, 777)),
])
def test_user_option_chooses_the_uid_and_gid(sleeping, user, expected):
    proc = sleeping("--user=" + user)
    uid, gid = expected
    assert ids(read_status(proc.pid)) == ([uid] * 4, [gid] * 4, "")


def test_root_launch_has_its_own_mount_ipc_uts_and_network_namespaces(sleeping):
    proc = sleeping()
    guest, launcher = namespaces(proc.pid), namespaces("self")
    for ns in guest:
        assert guest[ns] != launcher[ns], ns


def test_root_launch_sees_an_empty_root(sleeping):
    proc = sleeping()
    root = "/proc/%d/root" % proc.pid
    assert os.listdir(root) == []
    assert os.stat(root).st_ino != os.stat("/").st_ino
    with pytest.raises(OSError):  # read-only
        os.mkdir(os.path.join(root, "x"))
    # The namespace holds the empty root alone: the host's tree is detached.
    with open("/proc/%d/mountinfo" % proc.pid) as f:
        mounts = f.read().splitlines()
    assert len(mounts) == 1 and " / / ro," in mounts[0] and " - tmpfs " in mounts[0], mounts


def test_root_launch_limits_are_as_documented(sleeping):
    def limits_to_keep():  # distinctive values, to see they pass unchanged
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.RLIM_INFINITY))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 30, resource.RLIM_INFINITY))
        resource.setrlimit(resource.RLIMIT_CPU, (3600, resource.RLIM_INFINITY))

    proc = sleeping(preexec_fn=limits_to_keep)
    control = run(["cat", "/proc/self/limits"], preexec_fn=limits_to_keep)
    expected_kept = {k: v for k, v in parse_limits(control.stdout).items() if k in KEPT_LIMITS}
    limits = read_limits(proc.pid)
    top = max(int(fd) for fd in os.listdir("/proc/%d/fd" % proc.pid))
    assert limits["Max open files"] == (str(top + 1), str(top + 1))
    for name in ZERO_LIMITS:
        assert limits[name] == ("0", "0"), name
    assert {k: v for k, v in limits.items() if k in KEPT_LIMITS} == expected_kept
    assert expected_kept["Max file size"][0] == str(1 << 30)


def parse_limits(text: str) -> dict:
    out = {}
    for line in text.splitlines()[1:]:
        match = re.match(r"(Max [a-z ]+?)\s{2,}(\S+)\s+(\S+)", line)
        out[match[1]] = (match[2], match[3])
    return out


def test_jailed_guest_stays_dumpable_and_root_can_trace_it(sleeping):
    """Dumpable again after the uid change: its /proc files are its own
    uid's (a non-dumpable process's belong to root), and root's ptrace (gdb,
    /proc/PID/mem) still reaches it."""
    proc = sleeping()
    own = GUEST_ID_BASE + proc.pid
    for name in ("", "/status", "/maps", "/fd"):
        assert os.stat("/proc/%d%s" % (proc.pid, name)).st_uid == own, name
    filters = installed_filters(proc.pid)  # PTRACE_SEIZE, interrupt, read, detach
    assert filters and proc.poll() is None
    fd = os.open("/proc/%d/mem" % proc.pid, os.O_RDONLY)
    try:
        assert len(os.pread(fd, 40, 0x11000)) == 40  # the boot info
    finally:
        os.close(fd)


def test_signals_still_reach_a_jailed_guest(sleeping):
    proc = sleeping()
    proc.terminate()
    assert proc.wait(timeout=60) == -15


def test_block_guest_reads_and_writes_its_root_only_file(tmp_path):
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.write(bytes(8 * 512))
    os.chmod(disk, 0o600)  # root's alone: opened before the uid change
    os.chmod(tmp_path, 0o700)
    proc = spt_run("--mem=8", "--block:storage=%s" % disk, guest_block(), "write", "5", "0xA5")
    assert proc.returncode == 0 and "block: wrote 5" in proc.stdout, (proc.stdout, proc.stderr)
    assert disk.read_bytes() == bytes(5 * 512) + b"\xa5" * 512 + bytes(2 * 512)
    with open(disk, "r+b") as f:
        f.seek(2 * 512)
        f.write(bytes.fromhex("0123456789abcdef"))
    proc = spt_run("--mem=8", "--block:storage=%s" % disk, guest_block(), "read", "2")
    assert proc.returncode == 0, proc.stderr
    assert "block: sector 2 first8=0123456789abcdef" in proc.stdout


def guest_block() -> str:
    from conftest import guest_path

    return guest_path("block")


def test_net_guest_answers_ping_from_its_own_network_namespace(guest, tap):
    proc = subprocess.Popen([SOLO5_SPT, "--mem=32", "--net:service0=" + tap.name, guest("net"),
                             "--ipv4=%s/24" % tap.guest_ip], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=enter_netns(tap.ns.name))
    try:
        line = read_line(proc.stdout)
        assert line.startswith("net: ready"), (line, proc.poll())
        wait_for(lambda: is_filtered(proc))
        guest_net = os.readlink("/proc/%d/ns/net" % proc.pid)
        assert guest_net != tap_netns_link(tap.ns.name)
        ping = tap.ns.exec("ping", "-n", "-i", "0.2", "-c", "3", "-W", "2", tap.guest_ip,
                           timeout=30)
        assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
        # The TAP stayed where it was: the host side counts the guest's replies.
        stats = tap.ns.check("cat", "/sys/class/net/%s/statistics/rx_packets" % tap.name)
        assert int(stats.stdout) >= 3
        assert proc.poll() is None
    finally:
        stop(proc)


def tap_netns_link(name: str) -> str:
    """The ns/net link of the namespace the test made (ip netns's file)."""
    probe = run(["ip", "netns", "exec", name, "readlink", "/proc/self/ns/net"])
    assert probe.returncode == 0, probe.stderr
    return probe.stdout.strip()


def test_sd_notify_ready_still_reaches_a_path_socket(tmp_path):
    """NOTIFY_SOCKET is connected before the root changes, READY=1 sent
    after the jail, from the guest's own (the launcher's) PID."""
    for address in (str(tmp_path / "notify"), "@spt-test-notify-%d" % os.getpid()):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address.replace("@", "\0", 1))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.settimeout(20)
        proc = subprocess.Popen([SOLO5_SPT, "--mem=8", guest_sleep()],
                                env=dict(os.environ, NOTIFY_SOCKET=address),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            msg, ancdata, _flags, _addr = sock.recvmsg(64, socket.CMSG_SPACE(12))
            assert msg == b"READY=1", msg
            creds = [data for level, kind, data in ancdata
                     if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
            pid, uid, _gid = (int.from_bytes(creds[0][i:i + 4], "little") for i in (0, 4, 8))
            assert pid == proc.pid and uid == GUEST_ID_BASE + proc.pid, (pid, uid)
            wait_for(lambda: is_filtered(proc))
        finally:
            stop(proc)
            sock.close()


# --- the other ways a launch ends ------------------------------------------------

def test_jail_off_keeps_root_and_the_launchers_namespaces(sleeping):
    proc = sleeping("--jail=off")
    status = read_status(proc.pid)
    assert ids(status) == ([0] * 4, [0] * 4, read_status(os.getpid())["Groups"])
    assert namespaces(proc.pid) == namespaces("self")
    assert read_limits(proc.pid)["Max processes"] == read_limits(os.getpid())["Max processes"]
    assert caps(status) == no_caps_but_bounding(0)


def test_jail_limits_sets_the_rlimits_only(sleeping):
    proc = sleeping("--jail=limits")
    status = read_status(proc.pid)
    assert ids(status)[0] == [0] * 4
    assert namespaces(proc.pid) == namespaces("self")
    assert read_limits(proc.pid)["Max processes"] == ("0", "0")


def test_jail_limits_with_user_changes_the_ids_too(sleeping):
    proc = sleeping("--jail=limits", "--user=4242:4343")
    assert ids(read_status(proc.pid)) == ([4242] * 4, [4343] * 4, "")
    assert namespaces(proc.pid) == namespaces("self")


# nobody, with CAP_DAC_READ_SEARCH as its one (ambient) capability: the
# checkout may sit below a directory only root may enter (CI's, a mktemp -d),
# and the launcher must read it. The trampoline clears ambient, permitted and
# effective sets alike, so the guest ends with none either way.
UNPRIVILEGED = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


def test_unprivileged_launch_keeps_its_uid_and_namespaces_and_gets_the_rlimits(sleeping):
    proc = sleeping(prefix=UNPRIVILEGED)
    status = read_status(proc.pid)
    assert ids(status) == ([NOBODY] * 4, [NOBODY] * 4, "")
    assert namespaces(proc.pid) == namespaces("self")
    limits = read_limits(proc.pid)
    for name in ZERO_LIMITS:
        assert limits[name] == ("0", "0"), name
    # No CAP_SETPCAP: the bounding set stays the launcher's (setpriv keeps
    # ours); everything else is empty.
    own = caps(read_status(os.getpid()))["CapBnd"]
    assert caps(status) == no_caps_but_bounding(own)


def test_root_launch_without_cap_setpcap_keeps_the_bounding_set_and_nothing_else(sleeping):
    """The launcher cannot shrink the bounding set without CAP_SETPCAP, nor
    can the trampoline: the guest keeps the launcher's bounding set and no
    other capability, and the rest of the jail holds."""
    prefix = ["capsh", "--drop=cap_setpcap", "--"]
    control = run([*prefix, "-c", "grep CapBnd /proc/self/status"])
    bounding = int(control.stdout.split()[1], 16)
    assert bounding == caps(read_status(os.getpid()))["CapBnd"] & ~(1 << CAP_SETPCAP), control
    proc = sleeping(prefix=[*prefix, "-c", 'exec "$0" "$@"'])
    status = read_status(proc.pid)
    assert caps(status) == no_caps_but_bounding(bounding)
    own = GUEST_ID_BASE + proc.pid
    assert ids(status) == ([own] * 4, [own] * 4, "")
    assert os.listdir("/proc/%d/root" % proc.pid) == []


# --- refusals and the host check ---------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["--user=0"], "uid 0 is root's"),
    (["--user=root"], "uid 0 is root's"),
    (["--user=4242:0"], "gid 0 is root's"),
    (["--user=no-such-user-here"], "no such user"),
    (["--user=4242:staff"], "GID must be a number"),
    (["--jail=maybe"], "--jail: expected one of auto|limits|off"),
    (["--jail=off", "--user=4242"], "cannot go with --jail=off"),
])
def test_bad_jail_options_are_refused_with_one_line(guest, args, fragment):
    proc = spt_run(*args, "--mem=8", guest("hello"))
    line = assert_refused(proc, fragment)
    assert proc.stderr.splitlines() == [line] and proc.stdout == ""


def test_user_option_of_an_unprivileged_launch_is_refused(guest):
    proc = run([*UNPRIVILEGED, SOLO5_SPT, "--user=4242", "--mem=8", guest("hello")])
    assert_refused(proc, "--user needs a launch as root")


def test_root_launch_where_namespaces_are_denied_is_refused_not_half_jailed(guest):
    """Root without CAP_SYS_ADMIN cannot enter namespaces: the launch is
    refused with one line naming the step and the way out, and that way out
    (--jail=off) works."""
    prefix = ["capsh", "--drop=cap_sys_admin", "--", "-c", 'exec "$0" "$@"']
    proc = run([*prefix, SOLO5_SPT, "--mem=8", guest("hello")])
    line = assert_refused(proc, "jail: namespaces", "Operation not permitted", "--jail=off")
    assert proc.stderr.splitlines() == [line] and proc.stdout == ""
    proc = run([*prefix, SOLO5_SPT, "--jail=off", "--mem=8", guest("hello"), "x"])
    assert proc.returncode == 0 and "cmdline: 'x'" in proc.stdout, proc.stderr


def test_doctor_reports_the_jail():
    proc = run([SPT, "doctor"])
    assert re.search(r"^ok +jail +a root launch runs its guest as a uid and gid of its own",
                     proc.stdout, re.M), proc.stdout
    proc = run(["capsh", "--drop=cap_sys_admin", "--", "-c", 'exec "$0" "$@"', SPT, "doctor"])
    assert re.search(r"^warn +jail +a root launch cannot enter its own namespaces here "
                     r"\(unshare: Operation not permitted\).*--jail=off", proc.stdout, re.M), \
        proc.stdout


def test_doctor_jail_check_over_values():
    from spt.commands import doctor as d

    assert d.check_jail(1000, True, None).status == d.OK
    assert d.check_jail(0, True, None).value == "full"
    assert d.check_jail(0, True, "Operation not permitted").status == d.WARN
    assert d.check_jail(0, False, None).value == "needs --user"


def test_root_launch_in_a_nested_pid_namespace_needs_user(guest):
    """There a PID is unique only among that namespace's processes, so the
    per-guest uid could be another guest's: the default is refused, --user
    works."""
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"]
    proc = run([*prefix, SOLO5_SPT, "--mem=8", guest("hello")])
    assert_refused(proc, "not in the host's PID namespace", "--user=UID[:GID]")
    proc = run([*prefix, SOLO5_SPT, "--user=4242", "--mem=8", guest("hello"), "x"])
    assert proc.returncode == 0 and "cmdline: 'x'" in proc.stdout, proc.stderr
