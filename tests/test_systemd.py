"""spt@.service under a real systemd.

One systemd per module, booted as PID 1 of its own PID, mount, network,
UTS, IPC and cgroup namespaces with fresh /run, /tmp and /var/tmp (see
tests/systemd_util.py); every command below runs inside them, every TAP
and every packet too. `spt unit install` writes /etc/spt and the unit files
into that namespace's /etc, an overlay that vanishes with it.
"""

from __future__ import annotations

import fcntl
import re
import shutil
from pathlib import Path

import pytest

import systemd_util
from conftest import GUESTS, ROOT, SPT, guest_path, wait_for

pytestmark = pytest.mark.slow

SYSTEMD = "/lib/systemd/systemd"
DISKS = "/var/lib/spt-test"  # in the namespace's /var overlay
MIB = 1 << 20
OVERHEAD_MIB = 64  # spt.devices.core.OVERHEAD_BYTES: MemoryMax = mem + this


@pytest.fixture(scope="module")
def systemd():
    for tool in ("unshare", "nsenter", "ip", "ping", "ethtool", "useradd"):
        if not shutil.which(tool):
            pytest.fail("%s is not installed (scripts/install-deps installs it)" % tool)
    if not Path(SYSTEMD).exists() or not shutil.which("systemctl"):
        pytest.fail("systemd is not installed (scripts/install-deps installs it)")
    for name in ("hello", "sleep", "exit", "net", "blockwriter"):
        guest_path(name)
    booted = systemd_util.boot(ROOT)
    try:
        yield booted
    finally:
        booted.poweroff()
    assert booted.proc.returncode is not None


def install(systemd, name: str, kernel: str, *options) -> None:
    """`spt unit install` inside, then a daemon-reload."""
    systemd.run(SPT, "unit", "install", name, "--kernel", str(GUESTS / (kernel + ".spt")),
                *options, check=True)
    systemd.run("systemctl", "daemon-reload", check=True)


def start(systemd, unit: str):
    return systemd.run("systemctl", "start", unit, timeout=120)


def state(systemd, unit: str) -> dict:
    props = ("ActiveState", "SubState", "Result", "MainPID", "ExecMainPID", "ExecMainStatus",
             "NRestarts", "MemoryMax")
    out = systemd.run("systemctl", "show", unit, *("-p" + p for p in props), check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(systemd, unit: str) -> str:
    return systemd.run("journalctl", "-u", unit, "-o", "cat", "--no-pager").stdout


def proc_file(systemd, pid: str, name: str) -> str:
    return systemd.run("cat", "/proc/%s/%s" % (pid, name), check=True).stdout


def status_field(status: str, field: str) -> str:
    return re.search(r"^%s:\s*(.*)$" % field, status, re.M).group(1)


def stop(systemd, unit: str) -> None:
    systemd.run("systemctl", "stop", unit, check=True)


def make_tap(systemd, name: str, host_cidr: str, *owner: str) -> None:
    """A TAP inside the namespace, up; `owner`: ("user", U)."""
    systemd.run("ip", "tuntap", "add", "dev", name, "mode", "tap", *owner, check=True)
    systemd.run("ip", "addr", "add", host_cidr, "dev", name, check=True)
    systemd.run("ip", "link", "set", name, "up", check=True)


def offloads_off(systemd, name: str) -> None:
    systemd.run("ethtool", "-K", name, "gso", "off", "gro", "off", check=True)


def test_start_returns_once_the_guest_runs_in_the_same_process(systemd):
    install(systemd, "nap", "sleep", "--mem", "8", "--arg", "3600")
    assert systemd.path("/etc/spt/nap.conf").stat().st_mode & 0o777 == 0o600
    proc = start(systemd, "spt@nap")
    assert proc.returncode == 0, proc.stderr
    # Type=notify: when start returns, READY=1 came from the trampoline's
    # last step, so Python is gone and the guest's memory is all there is
    now = state(systemd, "spt@nap")
    assert (now["ActiveState"], now["SubState"]) == ("active", "running"), now
    pid = now["MainPID"]
    assert pid == now["ExecMainPID"]  # no fork: the process ExecStart made
    maps = proc_file(systemd, pid, "maps")
    assert "python" not in maps and "spt-trampoline" in maps, maps
    assert maps.startswith("00010000-"), maps
    status = proc_file(systemd, pid, "status")
    assert status_field(status, "Name") == "spt:nap"
    # the sandbox is in force on the guest's process
    assert status_field(status, "NoNewPrivs") == "1"
    assert status_field(status, "CapBnd") == "0000000000000000"
    assert status_field(status, "CapEff") == "0000000000000000"
    assert status_field(status, "Seccomp") == "2"
    root_mount = next(line for line in proc_file(systemd, pid, "mountinfo").splitlines()
                      if line.split()[4] == "/")
    assert "ro" in root_mount.split()[5].split(","), root_mount  # ProtectSystem=strict
    assert int(now["MemoryMax"]) == (8 + OVERHEAD_MIB) * MIB
    # the launcher's cache, writable in the otherwise read-only system
    cache = systemd.path("/var/cache/spt/nap")
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    # the filter, the checked image, and the image store's shared pages
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["bpf", "image", "images"]
    wait_for(lambda: "sleep: yielding" in journal(systemd, "spt@nap"), timeout=60,
             what="the guest's first line in the journal")
    stop(systemd, "spt@nap")
    after = state(systemd, "spt@nap")
    assert (after["ActiveState"], after["Result"], after["MainPID"]) == ("inactive", "success",
                                                                         "0"), after
    assert systemd.run("test", "-e", "/proc/%s" % pid).returncode != 0


def test_guest_output_reaches_the_journal_and_a_clean_exit_is_success(systemd):
    install(systemd, "hi", "hello", "--mem", "8", "--arg", "hello", "--arg", "from systemd")
    assert start(systemd, "spt@hi").returncode == 0
    wait_for(lambda: state(systemd, "spt@hi")["ActiveState"] == "inactive", timeout=60,
             what="spt@hi to end")
    done = state(systemd, "spt@hi")
    assert (done["Result"], done["ExecMainStatus"], done["NRestarts"]) == ("success", "0", "0")
    assert "cmdline: 'hello from systemd'" in journal(systemd, "spt@hi").splitlines()


def test_a_launch_refused_fails_the_start_with_the_launchers_line(systemd):
    """Type=notify: start waits for READY=1, so a launch that never reaches
    the guest fails `systemctl start` itself."""
    disk = DISKS + "/gone.img"
    systemd.path(DISKS).mkdir(parents=True, exist_ok=True)
    with open(systemd.path(disk), "wb") as f:
        f.truncate(4096)
    install(systemd, "gone", "blockwriter", "--mem", "8", "--block", "storage=" + disk)
    systemd.path(disk).unlink()
    proc = start(systemd, "spt@gone")
    assert proc.returncode != 0
    assert "solo5-spt: Could not open block device: %s: No such file or directory" % disk in journal(systemd, "spt@gone")
    stop(systemd, "spt@gone")


def test_a_broken_configuration_fails_the_unit_without_restarts(systemd):
    install(systemd, "typo", "hello", "--mem", "8")
    systemd.path("/etc/spt/typo.conf").write_text("kernel = %s\nmem = 8M\n"
                                                  % (GUESTS / "hello.spt"))
    assert start(systemd, "spt@typo").returncode != 0
    now = state(systemd, "spt@typo")
    assert (now["ActiveState"], now["ExecMainStatus"], now["NRestarts"]) == ("failed", "78",
                                                                             "0"), now
    assert "spt: /etc/spt/typo.conf:2: mem = 8M: Malformed argument to --mem" in \
        journal(systemd, "spt@typo")
    systemd.run("systemctl", "reset-failed", "spt@typo")


def test_a_failing_guest_is_restarted_and_then_the_unit_fails(systemd):
    install(systemd, "one", "exit", "--mem", "8", "--arg", "1")
    # systemd's start limit (5 starts in 10 s) ends the restarts; over a
    # longer interval here, so that a slow machine's restarts still fall in it.
    limit = systemd.path("/run/systemd/system/spt@one.service.d/limit.conf")
    limit.parent.mkdir(parents=True, exist_ok=True)
    limit.write_text("[Unit]\nStartLimitIntervalSec=600\nStartLimitBurst=5\n")
    systemd.run("systemctl", "daemon-reload", check=True)
    start(systemd, "spt@one")  # READY came, then the guest exited 1
    wait_for(lambda: int(state(systemd, "spt@one")["NRestarts"]) >= 1, timeout=60,
             what="a restart of spt@one")
    assert "Main process exited, code=exited, status=1/FAILURE" in journal(systemd, "spt@one")
    # the start limit ends the restarts: the unit is failed
    wait_for(lambda: state(systemd, "spt@one")["ActiveState"] == "failed", timeout=120,
             interval=0.2, what="spt@one to fail by its start limit")
    assert systemd.run("systemctl", "is-failed", "spt@one").stdout.strip() == "failed"
    assert state(systemd, "spt@one")["ExecMainStatus"] == "1"
    systemd.run("systemctl", "reset-failed", "spt@one")


@pytest.mark.parametrize("signal", ["SEGV", "KILL"])
def test_a_killed_guest_is_restarted(systemd, signal):
    unit = "spt@kill%s" % signal.lower()
    install(systemd, unit[4:], "sleep", "--mem", "8")
    assert start(systemd, unit).returncode == 0
    before = state(systemd, unit)
    systemd.run("kill", "-" + signal, before["MainPID"], check=True)

    def restarted():
        now = state(systemd, unit)
        return now if now["SubState"] == "running" and now["MainPID"] != before["MainPID"] \
            else None

    now = wait_for(restarted, timeout=60, interval=0.1, what="%s restarted" % unit)
    assert int(now["NRestarts"]) == int(before["NRestarts"]) + 1
    assert proc_file(systemd, now["MainPID"], "comm").strip() == "spt:" + unit[4:]
    number = {"SEGV": 11, "KILL": 9}[signal]
    assert "Main process exited, code=killed, status=%d/%s" % (number, signal) \
        in journal(systemd, unit)
    stop(systemd, unit)


def test_stop_ends_the_guest_and_leaves_its_block_file_whole(systemd):
    sector, sectors = 512, 256
    disk = DISKS + "/writer.img"
    systemd.path(DISKS).mkdir(parents=True, exist_ok=True)
    with open(systemd.path(disk), "wb") as f:
        f.truncate(sector * sectors)
    install(systemd, "writer", "blockwriter", "--mem", "8", "--block", "storage=" + disk,
            "--arg", "seed=7", "--arg", "delay_us=20000")
    assert start(systemd, "spt@writer").returncode == 0
    pid = state(systemd, "spt@writer")["MainPID"]
    wait_for(lambda: "wrote 5" in journal(systemd, "spt@writer").splitlines(), timeout=60,
             what="'wrote 5' in the journal")
    stop(systemd, "spt@writer")
    assert systemd.run("test", "-e", "/proc/%s" % pid).returncode != 0
    data = systemd.path(disk).read_bytes()
    assert len(data) == sector * sectors
    written = sum(1 for i in range(sectors)
                  if data[i * sector:(i + 1) * sector] == blockwriter_sector(i, 7, sector))
    assert written >= 6
    # whole sectors, in order: the written ones, then untouched zeros
    assert data[written * sector:] == bytes(len(data) - written * sector)
    # Nothing holds the file any more: the guest's flock went with its fd.
    with open(systemd.path(disk), "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert f.read() == data


def blockwriter_sector(i: int, seed: int, size: int) -> bytes:
    """guests/blockwriter's pattern for sector i."""
    head = i.to_bytes(8, "little") + seed.to_bytes(8, "little")
    return head + bytes((i * 31 + seed + k) & 0xFF for k in range(16, size))


def test_a_net_guest_on_a_tap_answers_ping_as_root_with_only_net_admin(systemd):
    make_tap(systemd, "sptsd0", "10.77.0.1/24")
    install(systemd, "web", "net", "--mem", "8", "--net", "service0=sptsd0",
            "--arg", "--ipv4=10.77.0.2/24")
    assert start(systemd, "spt@web").returncode == 0
    wait_for(lambda: "net: ready" in journal(systemd, "spt@web"), timeout=60,
             what="'net: ready' from spt@web")
    ping = systemd.run("ping", "-c", "3", "-i", "0.2", "-W", "10", "10.77.0.2", timeout=60)
    assert ping.returncode == 0, ping.stdout
    assert "3 received" in ping.stdout
    status = proc_file(systemd, state(systemd, "spt@web")["MainPID"], "status")
    assert status_field(status, "CapBnd") == "0000000000001000"  # CAP_NET_ADMIN alone
    assert status_field(status, "CapEff") == "0000000000000000"  # dropped before the jump
    stop(systemd, "spt@web")


def test_a_net_guest_runs_as_a_user_without_capabilities_on_its_own_tap(systemd):
    systemd.run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                "spt-guest", check=True)
    uid = systemd.run("id", "-u", "spt-guest", check=True).stdout.strip()
    make_tap(systemd, "sptsd1", "10.78.0.1/24", "user", "spt-guest")
    install(systemd, "own", "net", "--mem", "8", "--net", "service0=sptsd1",
            "--arg", "--ipv4=10.78.0.2/24", "--user", "spt-guest")
    # the guest's arguments: root's, and readable by the group of the user
    # the unit reads them as, no one else's
    gid = systemd.run("id", "-g", "spt-guest", check=True).stdout.strip()
    conf = systemd.path("/etc/spt/own.conf").stat()
    assert (oct(conf.st_mode & 0o777), conf.st_uid, str(conf.st_gid)) == ("0o640", 0, gid)
    # GSO/GRO are on and the user may not switch them off: refused, with the fix
    assert start(systemd, "spt@own").returncode != 0
    assert "solo5-spt: Could not attach interface: sptsd1: cannot switch offloads off: " \
           "Operation not permitted (without CAP_NET_ADMIN, switch them off when making " \
           "the TAP: ethtool -K sptsd1 gso off gro off)" in journal(systemd, "spt@own")
    # the operator does so; the next automatic restart attaches
    offloads_off(systemd, "sptsd1")
    wait_for(lambda: state(systemd, "spt@own")["SubState"] == "running", timeout=60,
             interval=0.1, what="spt@own running after its restart")
    wait_for(lambda: "net: ready" in journal(systemd, "spt@own"), timeout=60,
             what="'net: ready' from spt@own")
    ping = systemd.run("ping", "-c", "3", "-i", "0.2", "-W", "10", "10.78.0.2", timeout=60)
    assert ping.returncode == 0, ping.stdout
    status = proc_file(systemd, state(systemd, "spt@own")["MainPID"], "status")
    assert status_field(status, "Uid").split() == [uid] * 4
    assert status_field(status, "CapBnd") == "0000000000000000"
    stop(systemd, "spt@own")


# --- what spt writes into unit files, as this systemd reads it -------------------

# File names that systemd's unit syntax gives a meaning: separators (`:` of
# BindPaths=, blanks), quotes, escapes, specifiers, variables, a line's last
# backslash, comment and prefix characters, and text beyond ASCII.
HOSTILE_NAMES = [
    "pci-0000:00:1f.2-ata-1", "a b", "two  blanks", "tab\there", "100%", "%i%n%%",
    "q'uote", 'd"quote', "'\"'", "back\\slash", "trail\\", "\\:", "semi;colon", "$HOME",
    "${X}x", "#hash", ";semi", "-dash", "+plus", "@at", "ünï cödé", "x\\x41",
]


def test_unit_words_read_back_as_the_path_they_were_written_for(systemd):
    """spt.unitsyntax against this systemd: each name as a bind source and
    destination (BindReadOnlyPaths=), a writable path (ReadWritePaths=) and
    ExecStart= arguments. The unit copies the bound file over the writable
    one: the copy is there only if systemd read every word as the name."""
    from spt.unitsyntax import exec_word, path_word

    def paths(name):  # the bind's destination: in the unit's own /tmp
        return "/tmp/words/" + name, "/tmp/words-in/" + name, DISKS + "/words/" + name

    for number, name in enumerate(HOSTILE_NAMES):
        src, dest, out = paths(name)
        for path, text in ((src, "from %d\n" % number), (out, "")):
            systemd.path(path).parent.mkdir(parents=True, exist_ok=True)
            systemd.path(path).write_text(text)
        systemd.path("/etc/systemd/system/spt-words-%d.service" % number).write_text("\n".join([
            "[Service]", "Type=oneshot", "PrivateTmp=yes", "ProtectSystem=strict",
            "BindReadOnlyPaths=%s:%s" % (path_word(src), path_word(dest)),
            "ReadWritePaths=-%s" % path_word(out),
            "ExecStart=%s" % " ".join(map(exec_word, ["/bin/cp", dest, out])), ""]))
    systemd.run("systemctl", "daemon-reload", check=True)
    for number, name in enumerate(HOSTILE_NAMES):
        src, dest, out = paths(name)
        unit = "spt-words-%d.service" % number
        proc = start(systemd, unit)
        assert proc.returncode == 0, (name, proc.stderr, journal(systemd, unit))
        assert systemd.path(out).read_text() == "from %d\n" % number, name


@pytest.mark.parametrize("where", ["/tmp/spt-colon", DISKS + "/by-path"])
def test_a_block_file_with_a_colon_in_its_path_is_bound_and_written(systemd, where):
    """/tmp is the unit's own (PrivateTmp=): the file is bound in
    (BindPaths=); elsewhere it is made writable (ReadWritePaths=)."""
    sector, sectors = 512, 4096  # more than the test waits for
    disk = where + "/pci-0000:00:1f.2-ata-1"
    systemd.path(where).mkdir(parents=True, exist_ok=True)
    with open(systemd.path(disk), "wb") as f:
        f.truncate(sector * sectors)
    name = "colon" + str(len(where))
    install(systemd, name, "blockwriter", "--mem", "8", "--block", "storage=" + disk,
            "--arg", "seed=3", "--arg", "delay_us=20000")
    proc = start(systemd, "spt@" + name)
    assert proc.returncode == 0, (proc.stderr, journal(systemd, "spt@" + name))
    wait_for(lambda: "wrote 2" in journal(systemd, "spt@" + name).splitlines(), timeout=60,
             what="the guest's second write in the journal")
    stop(systemd, "spt@" + name)
    assert systemd.path(disk).read_bytes()[:sector] == blockwriter_sector(0, 3, sector)


def test_a_block_path_naming_a_destination_binds_nothing_over_it(systemd):
    """`--block storage=/tmp/alice/vm/disk.img:/etc` (a real file `etc` in a
    directory `disk.img:`) once bound Alice's directory disk.img over the
    unit's /etc. Now it is one path: the unit's /etc is the system's, and
    the guest writes Alice's file."""
    sector = 512
    top = "/tmp/alice/vm"
    systemd.path(top + "/disk.img").mkdir(parents=True, exist_ok=True)
    systemd.path(top + "/disk.img/alice-was-here").write_text("")
    systemd.path(top + "/disk.img:").mkdir(exist_ok=True)
    disk = top + "/disk.img:/etc"
    with open(systemd.path(disk), "wb") as f:
        f.truncate(sector * 4096)  # more than the test waits for
    install(systemd, "alice", "blockwriter", "--mem", "8", "--block", "storage=" + disk,
            "--arg", "seed=5", "--arg", "delay_us=20000")
    dropin = systemd.path("/etc/systemd/system/spt@alice.service.d/spt.conf").read_text()
    assert "BindPaths=-/tmp/alice/vm/disk.img\":\"/etc" in dropin.splitlines(), dropin
    proc = start(systemd, "spt@alice")
    assert proc.returncode == 0, (proc.stderr, journal(systemd, "spt@alice"))
    pid = state(systemd, "spt@alice")["MainPID"]
    mounts = [line.split() for line in proc_file(systemd, pid, "mountinfo").splitlines()]
    assert not [m for m in mounts if m[4] == "/etc" and "disk.img" in m[3]], mounts
    assert systemd.run("test", "-e", "/proc/%s/root/etc/alice-was-here" % pid).returncode != 0
    assert systemd.run("test", "-e", "/proc/%s/root/etc/passwd" % pid).returncode == 0
    wait_for(lambda: "wrote 2" in journal(systemd, "spt@alice").splitlines(), timeout=60,
             what="the guest's second write in the journal")
    stop(systemd, "spt@alice")
    assert systemd.path(disk).read_bytes()[:sector] == blockwriter_sector(0, 5, sector)


def test_a_unit_guest_gets_the_jails_rlimits_inside_the_units_own_sandbox(systemd):
    """spt unit launches with --jail=limits: systemd's sandbox is the rest
    of the jail (docs/security.md), the rlimits are the launcher's to set
    (prlimit64 passes the unit's system call filter)."""
    install(systemd, "lim", "sleep", "--mem", "8", "--arg", "3600")
    assert start(systemd, "spt@lim").returncode == 0
    pid = state(systemd, "spt@lim")["MainPID"]
    limits = proc_file(systemd, pid, "limits")
    fds = [int(n) for n in systemd.run("ls", "/proc/%s/fd" % pid, check=True).stdout.split()]
    for name, value in (("Max processes", "0"), ("Max locked memory", "0"),
                        ("Max open files", str(max(fds) + 1))):
        line = next(line for line in limits.splitlines() if line.startswith(name))
        assert line[len(name):].split()[:2] == [value, value], line
    status = proc_file(systemd, pid, "status")
    assert status_field(status, "Uid").split() == ["0"] * 4  # PrivateUsers=yes maps it
    assert status_field(status, "CapBnd") == "0000000000000000"
    stop(systemd, "spt@lim")
