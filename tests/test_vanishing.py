"""The vanishing tender: a running guest's process holds the guest and nothing else.

Once the trampoline jumps, the process must keep guest memory, one page of
trampoline code and the kernel's [vsyscall] page - no interpreter, libc,
ld.so, vdso/vvar, heap, host stack or plan - one thread under a seccomp
filter with no_new_privs, default signal dispositions and an empty mask,
and exactly the fds the guest was given (console, epoll, timer, devices),
whatever the launcher inherited. These tests look at /proc/PID of real
guests from the outside, and at the core dump of a crashing one.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from conftest import ROOT, SOLO5_SPT, read_line, run, stop, wait_for
from netns_util import enter_netns
from spt import arch

GUEST_MEM_START = 0x10000
PAGE = 4096
BOOT_INFO_ADDR = 0x11000
BOOT_INFO = struct.Struct("<QQQQii")  # mem_size, kernel_end, cmdline, mft, epollfd, timerfd
MFT_HEADER = struct.Struct("<II")  # version, entries
MFT_ENTRY_SIZE = 104
VSYSCALL = "[vsyscall]"
TRAMPOLINE = ROOT / "spt" / "libexec" / "spt-trampoline"
RSS_LIMIT_KB = 1700
# The launcher keeps fds it is told to; the test fills every number up to here.
INHERITED_FD_TOP = 1023


# --- reading a live guest from the outside ---------------------------------

@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    perms: str
    path: str

    @property
    def size(self) -> int:
        return self.end - self.start


def read_maps(pid: int) -> list[Mapping]:
    return parse_maps(Path("/proc/%d/maps" % pid).read_text())


def parse_maps(text: str) -> list[Mapping]:
    mappings = []
    for line in filter(None, text.splitlines()):
        fields = line.split(None, 5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        mappings.append(Mapping(start, end, fields[1], fields[5] if len(fields) > 5 else ""))
    return mappings


def read_status(pid: int) -> dict[str, str]:
    status = {}
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    return status


def fd_table(pid: int) -> dict[int, str]:
    """fd number -> what it points at (readlink of /proc/PID/fd/N)."""
    fd_dir = "/proc/%d/fd" % pid
    return {int(n): os.readlink(os.path.join(fd_dir, n)) for n in os.listdir(fd_dir)}


@dataclass(frozen=True)
class GuestFacts:
    """What the guest was told at boot: read back from its own memory."""
    mem_size: int
    epoll_fd: int
    timer_fd: int
    device_fds: dict[str, int]  # manifest name -> hostfd

    @property
    def declared_fds(self) -> set[int]:
        return {1, self.epoll_fd, self.timer_fd, *self.device_fds.values()}


def read_guest_facts(pid: int) -> GuestFacts:
    """Boot info at 0x11000 and the attached manifest it points at, read
    through /proc/PID/mem: the fd numbers the guest will use, so the test
    compares the fd table with what the guest was actually handed."""
    fd = os.open("/proc/%d/mem" % pid, os.O_RDONLY | os.O_CLOEXEC)
    try:
        mem_size, _kernel_end, _cmdline, mft, epoll_fd, timer_fd = BOOT_INFO.unpack(
            os.pread(fd, BOOT_INFO.size, BOOT_INFO_ADDR))
        _version, entries = MFT_HEADER.unpack(os.pread(fd, MFT_HEADER.size, mft))
        raw = os.pread(fd, entries * MFT_ENTRY_SIZE, mft + MFT_HEADER.size)
    finally:
        os.close(fd)
    devices = {}
    for i in range(1, entries):
        entry = raw[i * MFT_ENTRY_SIZE:(i + 1) * MFT_ENTRY_SIZE]
        name = entry[:68].split(b"\0", 1)[0].decode()
        (hostfd,) = struct.unpack_from("<i", entry, 88)
        assert entry[96] == 1, "device %r is not marked attached" % name
        devices[name] = hostfd
    return GuestFacts(mem_size, epoll_fd, timer_fd, devices)


def trampoline_keep_page() -> int | None:
    """Address of the one trampoline page that stays (symbol spt_keep_start),
    or None if the binary carries no symbol table."""
    with open(TRAMPOLINE, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        symbols = symtab.get_symbol_by_name("spt_keep_start") if symtab else None
        return symbols[0]["st_value"] if symbols else None


def is_trampoline_page(start: int, size: int, keep_page: int | None) -> bool:
    return size == PAGE and (start == keep_page if keep_page is not None
                             else start >= 0x700000000000)


def assert_maps_hold_only_the_guest(maps: list[Mapping], mem_size: int) -> None:
    """Every mapping is guest memory, the single trampoline page, or
    [vsyscall]; and guest memory is all of [0x10000, mem_size)."""
    keep_page = trampoline_keep_page()
    guest, trampoline = [], []
    for m in maps:
        if m.path == VSYSCALL:
            continue
        if GUEST_MEM_START <= m.start and m.end <= mem_size:
            assert m.path == "" or is_image_store_file(m.path), (
                "guest memory must be anonymous or the image's stored pages: %s" % (m,))
            guest.append(m)
        elif m.path == str(TRAMPOLINE) or os.path.basename(m.path) == "spt-trampoline":
            trampoline.append(m)
        else:
            pytest.fail("mapping outside guest memory: %s\nall maps:\n%s" % (m, format_maps(maps)))
    assert len(trampoline) == 1, format_maps(maps)
    page = trampoline[0]
    assert page.perms == "r-xp", page
    assert is_trampoline_page(page.start, page.size, keep_page), page
    covered = sorted((m.start, m.end) for m in guest)
    assert covered and covered[0][0] == GUEST_MEM_START, format_maps(maps)
    assert covered[-1][1] == mem_size, format_maps(maps)
    for (_, end), (start, _) in zip(covered, covered[1:]):
        assert end == start, "hole in guest memory at %#x\n%s" % (end, format_maps(maps))


def is_image_store_file(path: str) -> bool:
    """A file of the image store (spt/imagestore.py): the guest's own image
    pages, shared with other guests of the image. Guest memory, not the
    tender's."""
    from spt import imagestore

    store = imagestore.store_dir()
    return (store is not None and os.path.dirname(path) == store
            and os.path.basename(path).startswith("img-"))


def format_maps(maps: list[Mapping]) -> str:
    return "\n".join("%x-%x %s %s" % (m.start, m.end, m.perms, m.path) for m in maps)


def start_idle(running, *args, **kwargs):
    """The sleep guest, up to the point where it blocks in yield."""
    proc = running(*args, **kwargs)
    line = read_line(proc.stdout)
    assert line == "sleep: yielding\n", (line, proc.poll())
    return proc


# --- address space -----------------------------------------------------------

def test_running_guest_maps_only_guest_memory_and_one_trampoline_page(running, guest):
    proc = start_idle(running, "--mem=512", guest("sleep"))
    facts = read_guest_facts(proc.pid)
    assert facts.mem_size == 512 << 20
    assert_maps_hold_only_the_guest(read_maps(proc.pid), 512 << 20)


def test_no_host_library_interpreter_vdso_heap_or_stack_remains(running, guest):
    """The named kinds of host mapping, checked by name as well, so a failure
    says which one stayed behind."""
    proc = start_idle(running, "--mem=32", guest("sleep"))
    maps = read_maps(proc.pid)
    names = {m.path for m in maps}
    for host_thing in ("[heap]", "[stack]", "[vdso]", "[vvar]", "[vvar_vclock]"):
        assert host_thing not in names, format_maps(maps)
    for m in maps:
        assert not re.search(r"python|libc|ld-linux|\.so|memfd:|spt-plan", m.path), m


def test_trampoline_page_is_the_keep_page(running, guest):
    """The page that stays is the one keep.S put there (spt_keep_start),
    not some other page of the trampoline."""
    keep_page = trampoline_keep_page()
    if keep_page is None:
        pytest.skip("spt-trampoline has no symbol table to name its keep page")
    proc = start_idle(running, "--mem=8", guest("sleep"))
    pages = [m for m in read_maps(proc.pid) if "spt-trampoline" in m.path]
    assert [(m.start, m.end) for m in pages] == [(keep_page, keep_page + PAGE)]


# --- process status ----------------------------------------------------------

def test_running_guest_is_one_filtered_thread_with_clean_signals(running, guest):
    proc = start_idle(running, "--mem=8", guest("sleep"))
    status = read_status(proc.pid)
    assert status["Threads"] == "1"
    assert status["Seccomp"] == "2"
    assert status["NoNewPrivs"] == "1"
    for key in ("SigBlk", "SigIgn", "SigCgt"):
        assert int(status[key], 16) == 0, (key, status[key])


def ignore_and_block_signals():
    """preexec_fn: what a careless parent leaves behind for its child."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK,
                           {signal.SIGUSR2, signal.SIGHUP, signal.SIGALRM, signal.SIGCHLD})


def test_signals_ignored_and_blocked_by_the_parent_are_reset(running, guest):
    control = run(["grep", "^Sig", "/proc/self/status"], preexec_fn=ignore_and_block_signals)
    sig = dict(line.split(":\t") for line in control.stdout.splitlines())
    assert int(sig["SigIgn"], 16) and int(sig["SigBlk"], 16), "setup had no effect: %r" % sig

    proc = start_idle(running, "--mem=8", guest("sleep"), preexec_fn=ignore_and_block_signals)
    status = read_status(proc.pid)
    for key in ("SigBlk", "SigIgn", "SigCgt"):
        assert int(status[key], 16) == 0, (key, status[key])


def test_idle_guest_resident_memory_is_small(running, guest):
    proc = start_idle(running, "--mem=512", guest("sleep"))
    rss_kb = int(read_status(proc.pid)["VmRSS"].split()[0])
    assert rss_kb <= RSS_LIMIT_KB, "VmRSS %d kB > %d kB" % (rss_kb, RSS_LIMIT_KB)


# --- file descriptors --------------------------------------------------------

def assert_fd_table_is_declared_set(pid: int, facts: GuestFacts) -> dict[int, str]:
    table = fd_table(pid)
    assert set(table) == facts.declared_fds, (table, facts)
    assert table[facts.epoll_fd] == "anon_inode:[eventpoll]", table
    assert table[facts.timer_fd] == "anon_inode:[timerfd]", table
    return table


def test_guest_holds_console_epoll_and_timer_only(running, guest):
    proc = start_idle(running, "--mem=8", guest("sleep"))
    facts = read_guest_facts(proc.pid)
    assert facts.device_fds == {}
    assert_fd_table_is_declared_set(proc.pid, facts)
    # fd 1 is the very pipe the test reads the console from.
    assert os.stat("/proc/%d/fd/1" % proc.pid).st_ino == os.fstat(proc.stdout.fileno()).st_ino


def test_guest_with_block_and_net_holds_exactly_its_devices(running, guest, tap, block_file):
    disk = block_file(8 * 512)
    # No IPv6 on the TAP: no router solicitation or DAD frame can wake the
    # guest's epoll_pwait below while the test looks at it.
    tap.ns.check("sysctl", "-qw", "net.ipv6.conf.%s.disable_ipv6=1" % tap.name)
    proc = running("--mem=8", "--block:storage=" + disk, "--net:service0=" + tap.name,
                   guest("syscall_dev"), *BLOCK_IN_EPOLL_PWAIT,
                   preexec_fn=enter_netns(tap.ns.name))
    wait_for(lambda: guest_is_running(proc), what="the guest under its filter")
    facts = read_guest_facts(proc.pid)
    assert set(facts.device_fds) == {"storage", "service0"}
    table = assert_fd_table_is_declared_set(proc.pid, facts)
    assert table[facts.device_fds["storage"]] == disk
    assert table[facts.device_fds["service0"]] == "/dev/net/tun"
    assert len(table) == 5
    assert proc.poll() is None, "the guest left epoll_pwait: %r" % (proc.communicate(timeout=5),)


# syscall_dev makes the call named on its command line: epoll_pwait (by the
# host architecture's number) on its epoll fd with an infinite timeout
# blocks, keeping the guest alive (with both devices attached) while the
# test reads /proc.
BLOCK_IN_EPOLL_PWAIT = (str(arch.host().SYSCALLS["epoll_pwait"]), "epoll", "buf", "1", "-1", "0",
                        "0")


def guest_is_running(proc) -> bool:
    """The trampoline is done: the filter is on (it is installed last,
    right before the jump)."""
    assert proc.poll() is None, proc.communicate(timeout=5)
    return read_status(proc.pid).get("Seccomp") == "2"


def inherit_every_fd_up_to_1023():
    """preexec_fn: fill fds 3..1023 with assorted open files - sockets,
    pipes, a directory, an eventfd, a regular file, a memfd - half of them
    close-on-exec, the rest inheritable, as a sloppy parent would."""
    import select

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < INHERITED_FD_TOP + 1:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(INHERITED_FD_TOP + 1, hard), hard))
    sock_a, sock_b = socket.socketpair()
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    pipe_r, pipe_w = os.pipe()
    epoll = select.epoll()
    sources = [
        sock_a.detach(), sock_b.detach(), tcp.detach(), udp.detach(), pipe_r, pipe_w,
        os.open("/", os.O_RDONLY | os.O_DIRECTORY),
        os.eventfd(0),
        os.open("/etc/hostname" if os.path.exists("/etc/hostname") else "/etc/passwd",
                os.O_RDONLY),
        os.memfd_create("spt-test-inherited"),
        epoll.fileno(),
        os.open(os.devnull, os.O_WRONLY),
    ]
    for n in range(3, INHERITED_FD_TOP + 1):
        if n not in sources:
            os.dup2(sources[n % len(sources)], n, inheritable=n % 2 == 1)


def test_inherited_fds_3_to_1023_do_not_reach_the_guest(running, guest):
    # Control: the preexec_fn really hands an exec'd program hundreds of fds.
    control = run(["ls", "/proc/self/fd"], preexec_fn=inherit_every_fd_up_to_1023,
                  close_fds=False)
    inherited = {int(n) for n in control.stdout.split()}
    assert len(inherited) > 500 and INHERITED_FD_TOP in inherited, sorted(inherited)[-5:]

    proc = start_idle(running, "--mem=8", guest("sleep"),
                      preexec_fn=inherit_every_fd_up_to_1023, close_fds=False)
    facts = read_guest_facts(proc.pid)
    assert_fd_table_is_declared_set(proc.pid, facts)
    assert len(fd_table(proc.pid)) == 3


# --- core dump -----------------------------------------------------------------

def core_pattern() -> str:
    return Path("/proc/sys/kernel/core_pattern").read_text().strip()


def core_file_regex(pattern: str, pid: int, uses_pid: bool) -> re.Pattern:
    """The core file's name as the kernel expands core_pattern for this pid
    (core(5)); specifiers whose value the test does not know match anything
    reasonable."""
    values = {"p": str(pid), "P": str(pid), "i": str(pid), "I": str(pid), "u": "0",
              "g": "0", "s": str(int(signal.SIGSEGV)), "%": "%"}
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern):
            spec = pattern[i + 1]
            out.append(re.escape(values[spec]) if spec in values else r"[^/]*")
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    if uses_pid and "%p" not in pattern:
        out.append(r"\." + str(pid))
    return re.compile("".join(out))


def find_core(directory: Path, regex: re.Pattern, before: set[str]) -> Path | None:
    for name in sorted(os.listdir(directory)):
        if name not in before and regex.fullmatch(name):
            return directory / name
    return None


def test_core_dump_of_a_crashing_guest_holds_guest_memory_only(guest, tmp_path):
    pattern = core_pattern()
    if pattern.startswith("|"):
        pytest.skip("core_pattern pipes cores to a helper (%s): the test cannot "
                    "collect the file" % pattern.split()[0])
    pattern_dir, _, pattern_name = pattern.rpartition("/")
    if "%" in pattern_dir:
        pytest.skip("core_pattern %r names a per-process directory" % pattern)
    directory = tmp_path / pattern_dir if not pattern.startswith("/") else Path(pattern_dir or "/")
    if not directory.is_dir():
        pytest.skip("core_pattern directory %s does not exist" % directory)
    uses_pid = Path("/proc/sys/kernel/core_uses_pid").read_text().strip() == "1"
    before = set(os.listdir(directory))
    mem_size = 8 << 20

    def unlimited_core():
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    # --jail=off: a jailed guest's core is written with its own uid inside
    # its empty root, so a file core_pattern gets nothing (docs/security.md);
    # tests/test_jail.py pins what a jailed guest keeps of dumpability.
    proc = subprocess.Popen([SOLO5_SPT, "--mem=8", "--jail=off",
                             guest("fault"), "null"],
                            cwd=tmp_path, preexec_fn=unlimited_core, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        stop(proc)
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, out, err)
    regex = core_file_regex(pattern_name, proc.pid, uses_pid)
    core = wait_for(lambda: find_core(directory, regex, before), timeout=60,
                    what="the core file")
    try:
        check_core_holds_only_guest(core, mem_size, guest("fault"))
    finally:
        if directory != tmp_path:
            core.unlink()


def check_core_holds_only_guest(core: Path, mem_size: int, kernel: str) -> None:
    keep_page = trampoline_keep_page()
    with open(core, "rb") as f:
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_CORE"
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        assert loads, "core has no PT_LOAD segments"
        guest_loads = []
        for s in loads:
            start, size = s["p_vaddr"], s["p_memsz"]
            if GUEST_MEM_START <= start and start + size <= mem_size:
                guest_loads.append(s)
            elif is_trampoline_page(start, size, keep_page):
                assert s["p_flags"] & 1, "trampoline page not executable in core"  # PF_X
            elif start == 0xFFFFFFFFFF600000 and size == PAGE:
                pass  # [vsyscall], dumped by some kernels
            else:
                pytest.fail("core holds %#x-%#x: not guest memory" % (start, start + size))
        covered = sorted((s["p_vaddr"], s["p_vaddr"] + s["p_memsz"]) for s in guest_loads)
        assert covered[0][0] == GUEST_MEM_START and covered[-1][1] == mem_size, covered
        # The guest's own image is in the dump, byte for byte.
        image_segment = first_loaded_segment(kernel)
        vaddr, data = image_segment
        dumped = [s for s in guest_loads if s["p_vaddr"] <= vaddr < s["p_vaddr"] + s["p_filesz"]]
        assert dumped, "guest image at %#x is not in the core" % vaddr
        s = dumped[0]
        f.seek(s["p_offset"] + vaddr - s["p_vaddr"])
        assert f.read(len(data)) == data


def first_loaded_segment(kernel: str) -> tuple[int, bytes]:
    with open(kernel, "rb") as f:
        for s in ELFFile(f).iter_segments():
            if s["p_type"] == "PT_LOAD" and s["p_filesz"]:
                return s["p_vaddr"], s.data()
    raise AssertionError("%s has no loadable segment" % kernel)


# --- a non-PIE interpreter -----------------------------------------------------

SYSTEM_PYTHON = "/usr/bin/python3"
NON_PIE_BASE = 0x400000


def elf_type(path: str) -> str:
    with open(path, "rb") as f:
        return ELFFile(f)["e_type"]


@pytest.fixture(scope="module")
def system_python_venv(tmp_path_factory):
    """A venv made from Debian's /usr/bin/python3 (non-PIE, mapped at
    0x400000) that imports this checkout of spt and the main venv's
    dependencies (both are CPython 3.11)."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("%s is not installed" % SYSTEM_PYTHON)
    if elf_type(os.path.realpath(SYSTEM_PYTHON)) != "ET_EXEC":
        pytest.skip("%s is position-independent here: no non-PIE case to test" % SYSTEM_PYTHON)
    venv = tmp_path_factory.mktemp("system-python") / "venv"
    made = run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], timeout=60)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    probe = run([str(python), "-c", "import sys, sysconfig; print(sys.version_info[:2]); "
                 "print(sysconfig.get_paths()['purelib'])"])
    assert probe.returncode == 0, probe.stderr
    version, purelib = probe.stdout.splitlines()
    assert version == str(tuple(sys.version_info[:2])), (version, sys.version_info)
    # The checkout first, then the site directories this test runs with
    # (the main venv's: pyseccomp, prctl, pyelftools, ...).
    site_dirs = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    (Path(purelib) / "spt-checkout.pth").write_text("".join(
        "%s\n" % p for p in [ROOT, *site_dirs]))
    return python


def test_system_python_is_mapped_at_0x400000(system_python_venv):
    proc = run([str(system_python_venv), "-c",
                "import spt.launcher, prctl, pyseccomp, elftools; "
                "print(open('/proc/self/maps').read())"])
    assert proc.returncode == 0, proc.stderr
    first = parse_maps(proc.stdout)[0]
    assert first.start == NON_PIE_BASE and "python3" in first.path, first


def test_non_pie_interpreter_boots_a_512_mib_guest(system_python_venv, guest):
    proc = run([str(system_python_venv), "-m", "spt.launcher", "--mem=512", guest("hello"), "x"])
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "cmdline: 'x'" in proc.stdout


def test_non_pie_interpreter_leaves_only_the_guest_mapped(system_python_venv, guest):
    proc = subprocess.Popen([str(system_python_venv), "-m", "spt.launcher", "--mem=512",
                             guest("sleep")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = read_line(proc.stdout)
        assert line == "sleep: yielding\n", (line, proc.poll())
        maps = read_maps(proc.pid)
        assert_maps_hold_only_the_guest(maps, 512 << 20)
        # Guest memory now covers 0x400000, where the interpreter was.
        assert any(m.start <= NON_PIE_BASE < m.end and m.path == "" for m in maps)
    finally:
        stop(proc)
