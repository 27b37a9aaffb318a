"""Block data integrity under SIGKILL, and the lock on backing files.

The `blockwriter` guest writes sector i with a pattern the test recomputes
(bytes 0-7: i, 8-15: the seed, byte k: (i*31 + seed + k) & 0xff) in order,
printing `wrote i` after each pwrite returned. Killed at a random point, the
file must hold every reported sector, the one in flight either wholly old or
wholly new, and everything after it untouched - the size unchanged.

A backing file is locked (flock LOCK_EX on the guest's own fd) for the
guest's whole life: a second solo5-spt on it, by any path, is refused with
one line, and the file is not touched.
"""

from __future__ import annotations

import fcntl
import os
import random
import select
import struct
import subprocess

import pytest
from conftest import assert_refused, guest_path, read_line, spt_run, stop
from hostile_util import launch_env, sha256, solo5_spt

SEEDS = (1, 2, 3, 5, 8)


def written(i: int, seed: int, size: int) -> bytes:
    head = struct.pack("<QQ", i, seed)
    return head + bytes((i * 31 + seed + k) & 0xFF for k in range(16, size))


def background(i: int, size: int) -> bytes:
    """What was there before: unlike any `written` sector (its first 8
    bytes would have to equal i and the next 8 the seed)."""
    return (b"BACKGRND" + struct.pack("<Q", ~i & (2**64 - 1))
            + bytes((i * 7 + k * 13 + 5) & 0xFF for k in range(16, size)))


def make_disk(path, sectors: int, size: int) -> None:
    path.write_bytes(b"".join(background(i, size) for i in range(sectors)))


def start_writer(disk, seed: int, size: int, delay_us: int = 0) -> subprocess.Popen:
    args = ["--mem=4", "--block:storage=%s" % disk]
    if size != 512:
        args.append("--block-sector-size:storage=%d" % size)
    words = ["seed=%d" % seed] + (["delay_us=%d" % delay_us] if delay_us else [])
    return subprocess.Popen(solo5_spt(*args, guest_path("blockwriter"), *words),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=launch_env())


class Lines:
    """Lines from a pipe, in chunks, each wait bounded in time."""

    def __init__(self, stream):
        self.fd, self.pending = stream.fileno(), b""

    def _fill(self, timeout: float | None) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            raise AssertionError("no output within %ss" % timeout)
        chunk = os.read(self.fd, 65536)
        self.pending += chunk
        return bool(chunk)

    def next(self, timeout: float = 20) -> str:
        """The next whole line ('' at end of output)."""
        while b"\n" not in self.pending:
            if not self._fill(timeout):
                return ""
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode() + "\n"

    def rest(self) -> list[str]:
        """Every line still to come, once the writer is dead."""
        while self._fill(20):
            pass
        return self.pending.decode().splitlines(keepends=True)


def reported(lines) -> list[int]:
    """The sector numbers of complete `wrote i` lines, in order."""
    return [int(line[6:]) for line in lines if line.startswith("wrote ") and line.endswith("\n")]


@pytest.mark.parametrize("seed", SEEDS)
def test_every_reported_write_survives_sigkill_and_nothing_else_changes(tmp_path, seed):
    size = 4096 if seed == 8 else 512
    sectors = 512
    disk = tmp_path / "disk.img"
    make_disk(disk, sectors, size)
    kill_after = random.Random(seed).randrange(1, sectors - 1)
    # A small delay spreads the writes out, so the kill lands mid-run.
    proc = start_writer(disk, seed, size, delay_us=200)
    out, lines = Lines(proc.stdout), []
    try:
        while len(reported(lines)) < kill_after:
            line = out.next()
            assert line, "the writer ended early: %r %r" % (lines[-3:], proc.stderr.read())
            lines.append(line)
        proc.kill()  # SIGKILL, mid-write or between writes
        proc.wait(timeout=10)
        lines += out.rest()
    finally:
        stop(proc)
    done = reported(lines)
    assert done == list(range(len(done))), "writes reported out of order"
    last = done[-1]
    assert last < sectors - 1, "the writer finished before the kill; nothing was tested"
    data = disk.read_bytes()
    assert len(data) == sectors * size, "the file changed size"
    for i in range(sectors):
        sector = data[i * size:(i + 1) * size]
        if i <= last:
            assert sector == written(i, seed, size), "reported sector %d is not on disk" % i
        elif i == last + 1:  # in flight when killed: all old or all new
            assert sector in (written(i, seed, size), background(i, size)), \
                "sector %d is torn" % i
        else:
            assert sector == background(i, size), "sector %d changed, never written" % i


def test_writer_fills_the_whole_device_when_left_alone(tmp_path):
    """The pattern check above, end to end: without a kill every sector is new."""
    disk = tmp_path / "disk.img"
    make_disk(disk, 64, 512)
    proc = start_writer(disk, 9, 512)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert reported(out.decode().splitlines(keepends=True)) == list(range(64))
    data = disk.read_bytes()
    assert all(data[i * 512:(i + 1) * 512] == written(i, 9, 512) for i in range(64))


# --- the lock -------------------------------------------------------------------

@pytest.fixture
def locked_disk(tmp_path):
    """A disk held by a running blockwriter (one sector written, then it
    waits an hour between sectors)."""
    disk = tmp_path / "disk.img"
    make_disk(disk, 16, 512)
    proc = start_writer(disk, 4, 512, delay_us=3600 * 10**6)
    try:
        assert read_line(proc.stdout, timeout=20) == "wrote 0\n"
        yield disk
    finally:
        stop(proc)


def test_second_launcher_on_a_locked_file_is_refused_and_changes_nothing(locked_disk):
    before = sha256(locked_disk)
    proc = spt_run("--mem=4", "--block:storage=%s" % locked_disk, guest_path("block"),
                   env=launch_env())
    line = assert_refused(proc, "in use")
    assert str(locked_disk) in line
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert sha256(locked_disk) == before


def test_the_lock_follows_the_file_not_the_path(locked_disk, tmp_path):
    link, hard = tmp_path / "link.img", tmp_path / "hard.img"
    link.symlink_to(locked_disk)
    os.link(locked_disk, hard)
    for path in (link, hard):
        proc = spt_run("--mem=4", "--block:storage=%s" % path, guest_path("block"),
                       env=launch_env())
        assert_refused(proc, "in use")


def test_the_lock_is_an_flock_other_tools_see(locked_disk):
    with open(locked_disk, "rb") as f:
        with pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)


def test_the_lock_goes_with_the_guest(tmp_path):
    disk = tmp_path / "disk.img"
    make_disk(disk, 16, 512)
    proc = start_writer(disk, 4, 512, delay_us=3600 * 10**6)
    try:
        assert read_line(proc.stdout, timeout=20) == "wrote 0\n"
    finally:
        stop(proc)  # SIGKILL: no cleanup code runs; the kernel drops the lock
    proc = spt_run("--mem=4", "--block:storage=%s" % disk, guest_path("block"), env=launch_env())
    assert proc.returncode == 0, proc.stderr


def test_a_file_another_flock_user_holds_is_refused(tmp_path):
    disk = tmp_path / "disk.img"
    make_disk(disk, 16, 512)
    before = sha256(disk)
    with open(disk, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_SH)  # e.g. a backup tool reading it
        proc = spt_run("--mem=4", "--block:storage=%s" % disk, guest_path("block"),
                       env=launch_env())
    assert_refused(proc, "in use")
    assert sha256(disk) == before
