"""The launch path stays lean and its cache is never stale or trusted blindly."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from conftest import SOLO5_SPT, assert_refused, run


def with_importtime() -> list[str]:
    """solo5-spt's own command (its #! line: the interpreter and -I -S) with
    -X importtime added: isolated mode ignores PYTHONPROFILEIMPORTTIME."""
    with open(SOLO5_SPT) as f:
        interpreter = f.readline()[2:].split()
    return interpreter + ["-X", "importtime", SOLO5_SPT]


def imported_modules(args, env_extra, cache_dir):
    """Modules a `solo5-spt` run imports (from -X importtime's report)."""
    env = dict(os.environ, SPT_CACHE_DIR=str(cache_dir), **env_extra)
    proc = run([*with_importtime(), *args], env=env)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return proc, names


@pytest.fixture
def kernel_copy(tmp_path, guest):
    path = tmp_path / "hello.spt"
    shutil.copy(guest("hello"), path)
    return path


def test_launch_never_imports_the_operator_tool_stack(kernel_copy, tmp_path):
    for attempt in ("cache miss", "cache hit"):
        proc, names = imported_modules(["--mem=8", kernel_copy], {}, tmp_path / "cache")
        assert proc.returncode == 0, proc.stderr
        assert "spt.warmlaunch" in names
        for heavy in ("typer", "click", "rich", "pyroute2", "spt.tool", "spt.debug"):
            assert heavy not in names, (attempt, heavy)
    for heavy in ("json", "dataclasses", "inspect", "socket", "ctypes", "typing", "re"):
        assert heavy not in names, ("cache hit", heavy)


# What a warm launch without devices does without (spt/lean.py,
# spt/warmlaunch.py): the standard modules lean stands in for, python-prctl
# (the trampoline sets no_new_privs and cuts its capabilities itself), and
# every module of spt only other launches need.
WARM_LAUNCH_DOES_WITHOUT = (
    "os", "collections", "struct", "_struct", "resource", "stat", "zipfile", "prctl",
    "elftools.elf.elffile", "pyseccomp", "spt.launcher", "spt.manifest", "spt.elfcheck",
    "spt.bpfcompile", "spt.devices.block", "spt.devices.net", "spt.fileutil")


@pytest.mark.parametrize("options", [[], ["--mem=8"], ["--mem=64", "--"]])
def test_a_warm_launch_without_devices_imports_only_what_it_needs(kernel_copy, tmp_path,
                                                                  options):
    cache = tmp_path / "cache"
    first, names = imported_modules([*options, kernel_copy, "a"], {}, cache)
    assert first.returncode == 0 and "cmdline: 'a'" in first.stdout, first.stderr
    assert "spt.launcher" in names  # the first launch of a kernel: the full path
    proc, names = imported_modules([*options, kernel_copy, "b"], {}, cache)
    assert proc.returncode == 0 and "cmdline: 'b'" in proc.stdout, proc.stderr
    assert {"spt.warmlaunch", "spt.plan", "spt.bpfcheck", "spt.jail"} <= names
    for module in WARM_LAUNCH_DOES_WITHOUT:
        assert module not in names, module


@pytest.mark.parametrize("options", [["--jail=limits"], ["--x-exec-heap"], ["--mem=08x"],
                                     ["--mem=8", "--user=65534"]])
def test_other_options_take_the_full_launcher(kernel_copy, tmp_path, options):
    cache = tmp_path / "cache"
    for _ in range(2):
        proc, names = imported_modules([*options, kernel_copy], {}, cache)
        assert "spt.launcher" in names, (options, proc.stderr)


def test_second_launch_skips_pyelftools_and_libseccomp(kernel_copy, tmp_path):
    cache = tmp_path / "cache"
    first, names = imported_modules(["--mem=8", kernel_copy], {}, cache)
    assert first.returncode == 0, first.stderr
    assert "elftools.elf.elffile" in names and "pyseccomp" in names
    second, names = imported_modules(["--mem=8", kernel_copy], {}, cache)
    assert second.returncode == 0, second.stderr
    assert "cmdline: ''" in second.stdout
    assert "elftools.elf.elffile" not in names and "pyseccomp" not in names


def test_cache_off_always_does_the_full_work(kernel_copy, tmp_path):
    cache = tmp_path / "cache"
    for _ in range(2):
        proc, names = imported_modules(["--mem=8", kernel_copy], {"SPT_CACHE": "0"}, cache)
        assert proc.returncode == 0, proc.stderr
        assert "elftools.elf.elffile" in names and "pyseccomp" in names
    assert not cache.exists()


def test_a_kernel_changed_after_a_cached_launch_is_checked_again(kernel_copy, tmp_path):
    env = dict(os.environ, SPT_CACHE_DIR=str(tmp_path / "cache"))
    assert run([SOLO5_SPT, "--mem=8", kernel_copy], env=env).returncode == 0
    data = bytearray(kernel_copy.read_bytes())
    data[18] = 3  # e_machine = EM_386: the same file, now refused
    with open(kernel_copy, "r+b") as f:  # same inode, rewritten in place
        f.write(data)
    assert_refused(run([SOLO5_SPT, "--mem=8", kernel_copy], env=env), "x86_64")


def test_a_different_device_set_compiles_a_different_filter(guest, tmp_path, block_file):
    env = dict(os.environ, SPT_CACHE_DIR=str(tmp_path / "cache"))
    dumps = []
    for size in (4096, 8192):
        out = tmp_path / ("dump%d.json" % size)
        proc = run([SOLO5_SPT, "--block:storage=" + block_file(size, "d%d" % size),
                    guest("block")], env=dict(env, SPT_PLAN_DUMP=str(out)))
        assert proc.returncode == 0, proc.stderr
        dumps.append(json.loads(out.read_text())["bpf"])
    assert dumps[0] != dumps[1]  # the capacity is in the filter: never reused across sizes


def _entries(cache):
    return [p for p in cache.iterdir() if p.name.startswith(("image-", "bpf-"))]


def test_cache_entries_writable_by_others_are_ignored(kernel_copy, tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, SPT_CACHE_DIR=str(cache))
    assert run([SOLO5_SPT, "--mem=8", kernel_copy], env=env).returncode == 0
    entries = _entries(cache)
    assert len(entries) == 2
    for entry in entries:
        entry.chmod(0o666)
    proc, names = imported_modules(["--mem=8", kernel_copy], {}, cache)
    assert proc.returncode == 0, proc.stderr
    assert "elftools.elf.elffile" in names and "pyseccomp" in names


def test_a_corrupt_cache_entry_is_recomputed_not_trusted(kernel_copy, tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, SPT_CACHE_DIR=str(cache))
    assert run([SOLO5_SPT, "--mem=8", kernel_copy], env=env).returncode == 0
    for entry in _entries(cache):
        data = bytearray(entry.read_bytes())
        data[-3] ^= 0xFF  # flip a payload byte: the checksum no longer matches
        entry.write_bytes(bytes(data))
        entry.chmod(stat.S_IRUSR | stat.S_IWUSR)
    proc, names = imported_modules(["--mem=8", kernel_copy], {}, cache)
    assert proc.returncode == 0, proc.stderr
    assert "cmdline: ''" in proc.stdout
    assert "elftools.elf.elffile" in names and "pyseccomp" in names


def test_an_unwritable_cache_directory_does_not_stop_a_launch(kernel_copy, tmp_path):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    env = dict(os.environ, SPT_CACHE_DIR=str(blocker / "cache"))
    proc = run([SOLO5_SPT, "--mem=8", kernel_copy, "x"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert "cmdline: 'x'" in proc.stdout


def test_an_entry_made_by_other_code_is_a_miss(tmp_path, monkeypatch):
    from spt import cache

    monkeypatch.setenv("SPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SPT_CACHE", raising=False)
    source = tmp_path / "checker.py"
    source.write_text("RULES = 1\n")
    cache.store("image", "k", (1, 2), (str(source),))
    assert cache.load("image", "k", (str(source),)) == (1, 2)
    source.write_text("RULES = 22\n")  # the code that made the entry changed
    assert cache.load("image", "k", (str(source),)) is None
    assert cache.load("image", "other-key", ()) is None


def test_a_user_without_a_home_launches_without_a_cache(kernel_copy, tmp_path):
    """No $HOME and a uid the user database does not know (a container's
    arbitrary uid): no cache directory, so every launch does the full work,
    and says nothing about it."""
    kernel_copy.chmod(0o644)
    os.chmod(kernel_copy.parent, 0o755)
    prefix = ["setpriv", "--reuid=54321", "--regid=54321", "--clear-groups",
              "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for _ in range(2):
        proc = run([*prefix, SOLO5_SPT, "--mem=8", str(kernel_copy), "nohome"], env=env)
        assert proc.returncode == 0, proc.stderr
        assert "cmdline: 'nohome'" in proc.stdout and proc.stderr == "", proc.stderr
