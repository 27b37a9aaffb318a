"""Security review (issue 13) item 5 and issue 12's cache bullet: the launch
cache is trusted for nothing it cannot check. A filter entry rewritten by a
process of the same uid (valid header, valid checksum) is not installed; a
kernel changed through a shared mapping (no mtime or ctime change) is
checked again; the cache stays bounded; `spt doctor` says where it is."""

from __future__ import annotations

import json
import mmap
import os
import shutil
from pathlib import Path

import pytest

from conftest import SOLO5_SPT, SPT, assert_refused, run
from spt import bpfcheck, bpfcompile, cache, policy
from spt.devices import Attached

X86_64_GETPID = 39


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("SPT_CACHE_DIR", str(path))
    monkeypatch.delenv("SPT_CACHE", raising=False)
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    return path


def launch(*args, **env):
    return run([SOLO5_SPT, *map(str, args)], env=dict(os.environ, **env))


def dump(tmp_path, *args):
    out = tmp_path / "plan.json"
    proc = launch(*args, SPT_PLAN_DUMP=str(out))
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc


def entries(cache_dir, kind):
    return sorted(p for p in cache_dir.iterdir() if p.name.startswith(kind + "-"))


def core_attached(doc):
    """The core device of a launch as bpf_for saw it (a guest without devices)."""
    plan = doc["plan"]
    return [Attached(entry=None, fds=(), policy="core", facts={
        "console_fd": 1, "epoll_fd": plan["epoll_fd"], "timer_fd": plan["timer_fd"]})]


def poison(cache_dir, attached, extra_rule="getpid  # planted"):
    """Rewrite the launch's cached filter the way any process of this uid
    can: spt's own writer, a valid header and checksum, the current
    toolchain stamps; the program allows `extra_rule` too."""
    texts = policy.policy_texts(attached)
    rules = policy.rules_for(attached, texts) + policy.render("planted", extra_rule, {})
    before = entries(cache_dir, "bpf")
    cache.store("bpf", policy.cache_key(attached, texts),
                (bpfcompile.compile_bpf(rules), bpfcompile.toolchain(),
                 bpfcompile.libseccomp_version()),
                (policy.__file__, bpfcheck.__file__))
    assert entries(cache_dir, "bpf") == before  # the very entry the launch reads
    return bpfcompile.compile_bpf(policy.rules_for(attached, texts))


def test_a_rewritten_filter_entry_is_not_installed(tmp_path, cache_dir, guest):
    kernel = guest("syscall")
    doc, _ = dump(tmp_path, "--mem=8", kernel, X86_64_GETPID)
    clean = poison(cache_dir, core_attached(doc))
    assert bytes.fromhex(doc["bpf"]) == clean
    # the launch itself: getpid is killed, as the policy says
    proc = launch("--mem=8", kernel, X86_64_GETPID)
    assert proc.returncode != 0 and "syscall: ret=" not in proc.stdout, proc.stdout
    assert "cached filter allows more than its policy; not installed" in proc.stderr
    # what the plan carries is the policy's filter, and the entry is mended
    poison(cache_dir, core_attached(doc))
    doc2, _ = dump(tmp_path, "--mem=8", kernel, X86_64_GETPID)
    assert bytes.fromhex(doc2["bpf"]) == clean
    hit, _ = dump(tmp_path, "--mem=8", kernel, X86_64_GETPID)
    assert bytes.fromhex(hit["bpf"]) == clean


def test_spt_policy_shows_the_filter_the_next_launch_installs(tmp_path, cache_dir, guest):
    kernel = guest("hello")
    doc, _ = dump(tmp_path, "--mem=8", kernel)
    poison(cache_dir, core_attached(doc))
    proc = run([SPT, "policy", "--json", "--mem=8", kernel])
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert "getpid" not in shown["syscalls"]
    assert shown["bpf"] == doc["bpf"]


def test_spt_policy_refuses_to_show_rules_its_filter_does_not_enforce(tmp_path, cache_dir, guest):
    # A forged entry that allows *less* passes the launch's proof (a guest
    # could only die of it); spt policy compares the bytes and says so.
    kernel = guest("hello")
    doc, _ = dump(tmp_path, "--mem=8", kernel)
    attached = core_attached(doc)
    texts = policy.policy_texts(attached)
    fewer = [r for r in policy.rules_for(attached, texts) if r.syscall != "clock_gettime"]
    cache.store("bpf", policy.cache_key(attached, texts),
                (bpfcompile.compile_bpf(fewer), bpfcompile.toolchain(),
                 bpfcompile.libseccomp_version()),
                (policy.__file__, bpfcheck.__file__))
    proc = run([SPT, "policy", "--mem=8", kernel])
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("spt: ") and "not the one its rules compile to" in proc.stderr


def test_an_entry_from_another_libseccomp_is_a_miss(tmp_path, cache_dir, guest):
    kernel = guest("hello")
    doc, _ = dump(tmp_path, "--mem=8", kernel)
    attached = core_attached(doc)
    texts = policy.policy_texts(attached)
    stamps = tuple(s[:-1] + (s[-1] + 1,) if "libseccomp" in s[0] else s
                   for s in bpfcompile.toolchain())  # the .so changed since
    assert stamps != bpfcompile.toolchain()
    cache.store("bpf", policy.cache_key(attached, texts),
                (b"\x06\0\0\0\0\0\xff\x7f", stamps, "libseccomp 0.0.1"),  # "allow everything"
                (policy.__file__, bpfcheck.__file__))
    again, proc = dump(tmp_path, "--mem=8", kernel)
    assert again["bpf"] == doc["bpf"] and "warning" not in proc.stderr


def test_the_syscall_table_of_the_proof_is_libseccomps():
    import pyseccomp

    for name, number in bpfcheck.SYSCALL_NUMBERS.items():
        assert pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) == number, name
    names = {rule.split("]")[-1].split(":")[0].split("#")[0].strip()
             for path in Path(policy.POLICY_DIR).glob("*.policy")
             for rule in path.read_text().splitlines() if rule.strip() and rule[0] != "#"}
    assert names <= set(bpfcheck.SYSCALL_NUMBERS), names - set(bpfcheck.SYSCALL_NUMBERS)


# --- the proof itself ----------------------------------------------------------------

def rules(text, **facts):
    return policy.render("t", text, facts)


BLOCK = "pread64: fd == {fd} && count == 512 && offset <= {capacity} - 512\nexit_group\n"


@pytest.mark.parametrize("compiled, checked, ok", [
    (BLOCK, BLOCK, True),
    ("exit_group\n", BLOCK, True),  # allows less: passes (only a DoS)
    ("pread64\nexit_group\n", BLOCK, False),  # no argument checks at all
    (BLOCK.replace("{fd}", "5"), BLOCK, False),  # another fd
    (BLOCK.replace("- 512", "- 0"), BLOCK, False),  # one sector past the end
    (BLOCK.replace("<=", "<"), BLOCK, True),
    (BLOCK + "write: fd == 1\n", BLOCK, False),
    ("write: fd != 7\n", "write: fd != 7\n", True),
    ("write: fd != 7\n", "write: fd != 8\n", False),
    ("write: fd >= 7\n", "write: fd > 6\n", True),
    ("write: fd >= 7\n", "write: fd > 7\n", False),
])
def test_the_proof_accepts_what_the_rules_allow_and_nothing_more(compiled, checked, ok):
    facts = {"fd": 4, "capacity": 1 << 20}
    program = bpfcompile.compile_bpf(rules(compiled, **facts))
    assert bpfcheck.allows_only(program, rules(checked, **facts)) is ok


@pytest.mark.parametrize("program", [
    b"", b"\x06\0\0\0\0\0\xff\x7f",  # nothing; allow everything
    b"\x20\0\0\0\x04\0\0\0" + b"\x06\0\0\0\0\0\xff\x7f",  # load arch, allow
    b"\x15\0\0\0\0\0\0\0",  # a jump off the end
    b"\x06\0\0\0\0\0\x05\0",  # SECCOMP_RET_ERRNO: not a kill
    b"\x07\0\0\0\0\0\0\0" + b"\x06\0\0\0\0\0\0\x80",  # an instruction it does not know
])
def test_the_proof_refuses_what_it_cannot_show(program):
    assert bpfcheck.allows_only(program, rules("write\nexit_group\n")) is False


# --- the kernel changed behind the cache's back ----------------------------------------

def _stale_through_a_mapping(kernel, source):
    """Copy `source` to `kernel`, launch it (cached), then set e_machine to
    EM_386 through a shared mapping. True if that write left size, inode,
    mtime and ctime as the cached launch saw them: the kernel stamps the
    times at a page's first write fault, so the page is dirtied first; a
    writeback in between makes the next write fault (and stamp) again."""
    shutil.copy(source, kernel)
    fd = os.open(kernel, os.O_RDWR)
    try:
        with mmap.mmap(fd, 0, mmap.MAP_SHARED) as mapping:
            mapping[18] = mapping[18]  # the first write fault: the times are stamped now
            assert launch("--mem=8", kernel).returncode == 0  # cached as it is
            before = os.stat(kernel)
            mapping[18] = 3  # no new fault, no new stamp
            after = os.stat(kernel)
    finally:
        os.close(fd)
    assert kernel.read_bytes()[18] == 3
    return (before.st_mtime_ns, before.st_ctime_ns, before.st_size, before.st_ino) == (
        after.st_mtime_ns, after.st_ctime_ns, after.st_size, after.st_ino)


def test_a_kernel_changed_through_a_shared_mapping_is_checked_again(tmp_path, cache_dir, guest):
    kernel = tmp_path / "hello.spt"
    for _attempt in range(5):
        if _stale_through_a_mapping(kernel, guest("hello")):
            break
    else:
        pytest.fail("a writeback came between the two writes five times: nothing was tested")
    assert_refused(launch("--mem=8", kernel), "x86_64")


def test_a_forged_image_entry_cannot_make_a_segment_writable_and_executable(tmp_path, cache_dir,
                                                                            guest):
    from spt import abi, image, manifest

    kernel = tmp_path / "hello.spt"
    shutil.copy(guest("hello"), kernel)
    assert launch("--mem=8", kernel).returncode == 0
    with open(kernel, "rb") as f:
        good = image.load(str(kernel), f)
        content = image.content_key(f.fileno())
    segments = tuple(tuple(s._replace(flags=7)) for s in good.segments)  # rwx
    cache.store("image", image.cache_key(content),
                (good.entry, good.kernel_end, good.abi_target, good.abi_version, segments,
                 good.manifest.pack()), (image.__file__, manifest.__file__, abi.__file__))
    out = tmp_path / "plan.json"
    from test_launch_path import with_importtime  # -I ignores PYTHONPROFILEIMPORTTIME

    proc = run([*with_importtime(), "--mem=8", str(kernel)],
               env=dict(os.environ, SPT_PLAN_DUMP=str(out)))
    assert proc.returncode == 0, proc.stderr
    assert "elftools.elf.elffile" in proc.stderr  # the file was checked again


# --- issue 12: the cache is bounded, and doctor says where it is ------------------------

def test_a_store_prunes_old_and_excess_entries_and_nothing_else(tmp_path, cache_dir, guest):
    cache_dir.mkdir(mode=0o700)
    now = __import__("time").time()
    names = ["image-%016x" % i for i in range(300)]
    for age, name in enumerate(reversed(names)):  # image-000...0 is the oldest
        path = cache_dir / name
        path.write_bytes(b"x")
        os.utime(path, (now - 60 - age, now - 60 - age))
    expired = cache_dir / "bpf-000000000000ffff"
    expired.write_bytes(b"x")
    os.utime(expired, (now - 31 * 86400,) * 2)
    leftover = cache_dir / "bpf-000000000000eeee.4242.tmp"
    leftover.write_bytes(b"x")
    os.utime(leftover, (now - 7200,) * 2)
    foreign = cache_dir / "notes.txt"
    foreign.write_text("mine")
    outside = tmp_path / "outside"
    outside.write_text("keep")
    (cache_dir / "bpf-000000000000dddd").symlink_to(outside)
    kernel = tmp_path / "hello.spt"
    shutil.copy(guest("hello"), kernel)
    assert launch("--mem=8", kernel).returncode == 0  # a miss: it stores, then prunes
    left = {p.name for p in cache_dir.iterdir()}
    ours = {n for n in left if cache._ours(n) and not (cache_dir / n).is_symlink()}
    assert len(ours) <= cache.MAX_ENTRIES
    assert names[-1] in left and names[0] not in left  # the newest stay, the oldest go
    assert sum(n.startswith("bpf-") for n in ours) == 1  # the launch's own filter entry
    assert expired.name not in left and leftover.name not in left
    assert foreign.exists() and (cache_dir / "bpf-000000000000dddd").is_symlink()
    assert outside.read_text() == "keep"


def doctor_cache(**env):
    proc = run([SPT, "doctor", "--json"], env=dict(os.environ, **env))
    (check,) = [c for c in json.loads(proc.stdout)["checks"] if c["name"] == "launch cache"]
    return check


def test_doctor_reports_the_cache_directory_and_whether_launches_can_use_it(tmp_path):
    usable = doctor_cache(SPT_CACHE_DIR=str(tmp_path / "cache"))
    assert usable["status"] == "ok" and usable["value"] == str(tmp_path / "cache")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unusable = doctor_cache(SPT_CACHE_DIR=str(blocker / "cache"))
    assert unusable["status"] == "warn" and str(blocker / "cache") in unusable["detail"]
    assert "every launch checks the image and compiles the filter again" in unusable["detail"]
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert "writable by others" in doctor_cache(SPT_CACHE_DIR=str(shared))["detail"]
    assert doctor_cache(SPT_CACHE="0")["status"] == "warn"
