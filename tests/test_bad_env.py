"""A hostile or broken environment: every refusal is one line, exit 1, and
nothing on disk changes.

Missing, down, non-TAP and busy TAPs; read-only, missing, misshapen block
files; --mem beyond RLIMIT_AS or the address space; kernels that cannot be
read, are not files, or declare too many devices. Each launch runs with its
files in a directory of its own whose every file is hashed before and after
(no stray temporary or lock files, no byte changed); the launch cache goes
elsewhere.

Root reads and writes any file whatever its mode, so "unreadable" and
"read-only" are made real by dropping CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH from the launcher's bounding set (it stays uid 0) or by
a read-only bind mount in a private mount namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import elfcraft as ec
import pytest
from conftest import assert_refused, guest_path, read_line, stop
from hostile_util import TapNamespace, launch_env, snapshot, solo5_spt

NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


@pytest.fixture
def workdir(tmp_path):
    """A directory for a launch's files, and a cache directory outside it."""
    work = tmp_path / "work"
    work.mkdir()
    return work


def launch(workdir: Path, *args, wrap=(), timeout: float = 30):
    env = launch_env(SPT_CACHE_DIR=str(workdir.parent / "cache"))
    cmd = [*wrap, *solo5_spt(*args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def refused_without_trace(workdir: Path, *args, contains=(), wrap=()) -> str:
    """Launch, expect a one-line refusal, and no change under `workdir`."""
    before = snapshot(workdir)
    proc = launch(workdir, *args, wrap=wrap)
    line = assert_refused(proc, *contains)
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stdout == "", proc.stdout
    assert snapshot(workdir) == before, "the refused launch changed files on disk"
    return line


def kernel_copy(workdir: Path, name: str) -> Path:
    path = workdir / (name + ".spt")
    shutil.copyfile(guest_path(name), path)
    return path


def disk(workdir: Path, size: int, name: str = "disk.img") -> Path:
    path = workdir / name
    path.write_bytes(bytes((i * 13) & 0xFF for i in range(size)))
    return path


# --- network ------------------------------------------------------------------

@pytest.fixture(scope="module")
def taps():
    """tap0 (up), tap1 (up, for the busy case), tapdown (down), tun0 (a TUN)."""
    ns = TapNamespace(2, prefix="spt-be")
    try:
        ns.check("ip", "tuntap", "add", "dev", "tapdown", "mode", "tap")
        ns.check("ip", "tuntap", "add", "dev", "tun0", "mode", "tun")
        ns.check("ip", "link", "set", "tun0", "up")
        yield ns
    finally:
        ns.close()


@pytest.mark.parametrize("iface,reason", [
    ("nosuchtap", "No such file or directory"),
    ("tapdown", "Network is down"),
    ("tun0", "not a TAP interface"),
])
def test_unusable_tap_is_refused(workdir, taps, iface, reason):
    kernel = kernel_copy(workdir, "net")
    refused_without_trace(workdir, "--net:service0=%s" % iface, kernel, "--ipv4=10.78.0.2/24",
                          contains=("Could not attach interface: %s" % iface, reason),
                          wrap=taps.wrap([]))


def test_tap_attached_by_a_running_guest_is_refused(workdir, taps):
    kernel = kernel_copy(workdir, "net")
    first = subprocess.Popen(taps.wrap(solo5_spt("--net:service0=tap1", kernel,
                                                 "--ipv4=10.78.1.2/24")),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=launch_env())
    try:
        assert read_line(first.stdout, timeout=60).startswith("net: ready")
        refused_without_trace(workdir, "--net:service0=tap1", kernel, "--ipv4=10.78.1.3/24",
                              contains=("Could not attach interface: tap1", "in use"),
                              wrap=taps.wrap([]))
        assert first.poll() is None, "the refused launch disturbed the running guest"
    finally:
        stop(first)


# --- block files ----------------------------------------------------------------

@pytest.mark.parametrize("size,extra,message", [
    (1000, (), "Backing storage size must be block aligned"),
    (0, (), "Backing storage must be at least 1 block"),
    (6144, ("--block-sector-size:storage=4096",), "Backing storage size must be block aligned"),
    (0, ("--block-sector-size:storage=4096",), "Backing storage must be at least 1 block"),
])
def test_block_file_of_the_wrong_size_is_refused(workdir, size, extra, message):
    kernel = kernel_copy(workdir, "block")
    image = disk(workdir, size)
    refused_without_trace(workdir, "--block:storage=%s" % image, *extra, kernel,
                          contains=(message,))


def test_missing_block_file_is_refused_and_not_created(workdir):
    kernel = kernel_copy(workdir, "block")
    refused_without_trace(workdir, "--block:storage=%s" % (workdir / "nope.img"), kernel,
                          contains=("nope.img", "No such file or directory"))


def test_block_path_that_is_a_directory_is_refused(workdir):
    kernel = kernel_copy(workdir, "block")
    (workdir / "dir.img").mkdir()
    refused_without_trace(workdir, "--block:storage=%s" % (workdir / "dir.img"), kernel,
                          contains=("dir.img",))


def test_read_only_block_file_is_refused(workdir):
    """Mode 0444, for a launcher without the capability to override it."""
    kernel = kernel_copy(workdir, "block")
    image = disk(workdir, 4096)
    image.chmod(0o444)
    refused_without_trace(workdir, "--block:storage=%s" % image, kernel,
                          contains=(str(image), "Permission denied"), wrap=NO_DAC)


def test_block_file_on_a_read_only_mount_is_refused(workdir):
    """A read-only bind mount in a mount namespace of the launch's own:
    root cannot write there either."""
    kernel = kernel_copy(workdir, "block")
    image = disk(workdir, 4096)
    ro_mount = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec",
                'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
                str(image)]
    refused_without_trace(workdir, "--block:storage=%s" % image, kernel,
                          contains=(str(image), "Read-only file system"), wrap=ro_mount)


# --- memory ---------------------------------------------------------------------

def test_mem_beyond_rlimit_as_is_refused(workdir):
    kernel = kernel_copy(workdir, "hello")
    one_gib = 1 << 30
    refused_without_trace(workdir, "--mem=2048", kernel,
                          contains=("--mem=2048", "RLIMIT_AS"),
                          wrap=["prlimit", "--as=%d:%d" % (one_gib, one_gib), "--"])


@pytest.mark.parametrize("mem", ["200000000", "134217728", "18014398509481984"])
def test_mem_beyond_the_address_space_is_refused(workdir, mem):
    kernel = kernel_copy(workdir, "hello")
    refused_without_trace(workdir, "--mem=%s" % mem, kernel,
                          contains=("--mem=%s" % mem, "address space"))


def test_mem_too_small_for_the_kernel_is_refused(workdir):
    kernel = kernel_copy(workdir, "hello")
    refused_without_trace(workdir, "--mem=1", kernel, contains=("does not fit", "raise --mem"))


# --- kernels ------------------------------------------------------------------------

def test_unreadable_kernel_is_refused(workdir):
    kernel = kernel_copy(workdir, "hello")
    kernel.chmod(0o000)
    refused_without_trace(workdir, kernel, contains=(str(kernel), "Permission denied"),
                          wrap=NO_DAC)


def test_kernel_that_is_a_fifo_is_refused_without_blocking(workdir):
    fifo = workdir / "fifo.spt"
    os.mkfifo(fifo)
    refused_without_trace(workdir, fifo, contains=(str(fifo), "not a regular file"))


def test_kernel_that_is_a_directory_or_missing_is_refused(workdir):
    (workdir / "dir.spt").mkdir()
    refused_without_trace(workdir, workdir / "dir.spt", contains=("dir.spt",))
    refused_without_trace(workdir, workdir / "none.spt",
                          contains=("none.spt", "No such file or directory"))


@pytest.mark.parametrize("shape", ["header-says-65-entries", "64-device-records"])
def test_kernel_declaring_64_devices_is_refused(workdir, shape):
    """One over the ABI's 63. A manifest whose header counts 65 entries is
    invalid; 65 real records (6772 bytes) do not even fit the largest MFT1
    note the ABI allows (6668): the note is refused, in the same words."""
    data = Path(guest_path("hello")).read_bytes()
    if shape == "header-says-65-entries":
        devices = [("b%d" % i, ec.MFT_DEV_BLOCK_BASIC) for i in range(63)]
        content, message = ec.build_manifest(devices, entries=65), "Solo5 manifest is invalid"
    else:
        devices = [("b%d" % i, ec.MFT_DEV_BLOCK_BASIC) for i in range(64)]
        content, message = ec.build_manifest(devices), "Solo5 manifest is invalid"
    kernel = workdir / "toomany.spt"
    kernel.write_bytes(ec.with_manifest(data, content))
    images = [disk(workdir, 512, "b%d.img" % i) for i in range(64)]
    refused_without_trace(workdir, *["--block:b%d=%s" % (i, p) for i, p in enumerate(images)],
                          kernel, contains=(message,))


def test_63_devices_boot_and_one_more_option_is_refused(workdir):
    """The ABI's maximum works; a 64th --block names nothing declared."""
    kernel = kernel_copy(workdir, "maxdev")
    images = [disk(workdir, 512, "b%d.img" % i) for i in range(64)]
    options = ["--block:b%d=%s" % (i, p) for i, p in enumerate(images[:63])]
    proc = launch(workdir, "--mem=4", *options, kernel)
    assert proc.returncode == 0, proc.stderr
    assert "maxdev: attached=63 " in proc.stdout, proc.stdout
    refused_without_trace(workdir, "--mem=4", *options, "--block:b63=%s" % images[63], kernel,
                          contains=("Resource not declared in manifest: 'b63'",))
