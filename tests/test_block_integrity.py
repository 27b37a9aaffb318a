"""Block data integrity under SIGKILL, and the lock on backing files.

The `blockwriter` guest writes sector i with a pattern the test recomputes
(bytes 0-7: i, 8-15: the seed, byte k: (i*31 + seed + k) & 0xff) in order,
printing `wrote i` after each pwrite returned. Killed at a random point, the
file must hold every reported sector, the one in flight either wholly old or
wholly new, and everything after it untouched - the size unchanged.

The kill lands mid-run by construction, however slow the machine: the
guest's stdout is a one-page pipe, so it can never be more than a page of
`wrote` lines (and one sector) ahead of what the test has read, and the disk
is far larger than the point where the test kills it.

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


def _ramp(start: int, step: int, size: int) -> bytes:
    """bytes (start + step*k) & 0xff for k in 16..size-1, built fast."""
    table = bytes((start + step * k) & 0xFF for k in range(16, 16 + 256))
    return (table * (size // 256 + 1))[:size - 16]


def written(i: int, seed: int, size: int) -> bytes:
    """The blockwriter's sector i: byte k >= 16 is (i*31 + seed + k) & 0xff."""
    return struct.pack("<QQ", i, seed) + _ramp(i * 31 + seed, 1, size)


def background(i: int, size: int) -> bytes:
    """What was there before: unlike any `written` sector (its first 8
    bytes would have to equal i and the next 8 the seed)."""
    return b"BACKGRND" + struct.pack("<Q", ~i & (2**64 - 1)) + _ramp(i * 7 + 5, 13, size)


def make_disk(path, sectors: int, size: int) -> None:
    path.write_bytes(b"".join(background(i, size) for i in range(sectors)))


def start_writer(disk, seed: int, size: int, delay_us: int = 0,
                 stdout=subprocess.PIPE) -> subprocess.Popen:
    args = ["--mem=4", "--block:storage=%s" % disk]
    if size != 512:
        args.append("--block-sector-size:storage=%d" % size)
    words = ["seed=%d" % seed] + (["delay_us=%d" % delay_us] if delay_us else [])
    return subprocess.Popen(solo5_spt(*args, guest_path("blockwriter"), *words),
                            stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.PIPE, env=launch_env())


def one_page_pipe() -> tuple[int, int]:
    """(read fd, write fd) of a pipe that holds one page: a writer blocks
    once PIPE_PAGE bytes are unread."""
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_PAGE)
    assert fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) == PIPE_PAGE
    return r, w


PIPE_PAGE = 4096
SHORTEST_LINE = len("wrote 0\n")
# Lines the guest can have printed beyond those the test has counted: a
# pipe's worth unread, and at most a read's worth (Lines reads a page at a
# time) received but not yet counted; one more sector may be on disk unreported.
MAX_LEAD = 2 * PIPE_PAGE // SHORTEST_LINE + 2


class Lines:
    """Lines from a pipe, in chunks, each wait bounded in time."""

    def __init__(self, stream):
        self.fd, self.pending = stream if isinstance(stream, int) else stream.fileno(), b""

    def _fill(self, timeout: float | None) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            raise AssertionError("no output from the guest within %ss" % timeout)
        chunk = os.read(self.fd, PIPE_PAGE)
        self.pending += chunk
        return bool(chunk)

    def next(self, timeout: float = 60) -> str:
        """The next whole line ('' at end of output)."""
        while b"\n" not in self.pending:
            if not self._fill(timeout):
                return ""
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode() + "\n"

    def rest(self) -> list[str]:
        """Every line still to come, once the writer is dead."""
        while self._fill(60):
            pass
        return self.pending.decode().splitlines(keepends=True)


def reported(lines) -> list[int]:
    """The sector numbers of complete `wrote i` lines, in order."""
    return [int(line[6:]) for line in lines if line.startswith("wrote ") and line.endswith("\n")]


@pytest.mark.parametrize("seed", SEEDS)
def test_every_reported_write_survives_sigkill_and_nothing_else_changes(tmp_path, seed):
    size = 4096 if seed == 8 else 512
    kill_after = random.Random(seed).randrange(1, 512)
    sectors = kill_after + MAX_LEAD + 512  # the guest cannot reach the end before the kill
    disk = tmp_path / "disk.img"
    make_disk(disk, sectors, size)
    r, w = one_page_pipe()
    try:
        # A small delay spreads the writes out, so the kill lands at any point.
        proc = start_writer(disk, seed, size, delay_us=200, stdout=w)
    finally:
        os.close(w)
    out, lines, count = Lines(r), [], 0
    try:
        while count < kill_after:  # each line counted once: the reader keeps pace
            line = out.next()
            assert line, "the writer ended after %d of %d records: %r %r" % (
                count, kill_after, lines[-3:], proc.stderr.read())
            lines.append(line)
            count += line.startswith("wrote ") and line.endswith("\n")
        proc.kill()  # SIGKILL, mid-write or between writes
        proc.wait(timeout=60)
        lines += out.rest()
    finally:
        stop(proc)
        os.close(r)
    done = reported(lines)
    assert done == list(range(len(done))), "writes reported out of order"
    last = done[-1]
    assert kill_after - 1 <= last <= kill_after - 1 + MAX_LEAD, (kill_after, last)
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
    out, err = proc.communicate(timeout=120)
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
        assert read_line(proc.stdout, timeout=60) == "wrote 0\n"
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
        assert read_line(proc.stdout, timeout=60) == "wrote 0\n"
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
