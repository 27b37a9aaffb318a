"""Block devices with real files: what the guest writes lands in the file at
the right offsets, what the host wrote is what the guest reads, and the
refusals (read-only, in use) are one line each."""

from __future__ import annotations

import os
import stat

import pytest

from conftest import SOLO5_SPT, assert_refused, guest_path, read_line, run, spt_run, stop, which


def roundtrip_pattern(sector: int, size: int, idx: int) -> bytes:
    """What the `block` guest writes to `sector`, the idx-th it tests."""
    return bytes((k * 7 + sector * 13 + idx * 101 + 1) & 0xFF for k in range(size))


def block_guest(path: str, *args, sector: int | None = None, **kwargs):
    opts = ["--block-sector-size:storage=%d" % sector] if sector else []
    return spt_run("--mem=8", "--block:storage=" + path, *opts, guest_path("block"),
                   *map(str, args), **kwargs)


def refused_one_line(proc, *fragments: str) -> str:
    line = assert_refused(proc, *fragments)
    assert proc.stderr.splitlines() == [line] and proc.stdout == "", proc.stderr
    return line


@pytest.mark.parametrize("sector, sectors", [(512, 8), (4096, 4), (512, 2), (4096, 1)],
                         ids=["512x8", "4096x4", "512x2", "4096x1"])
def test_block_round_trip_leaves_the_pattern_in_the_file(block_file, sector, sectors):
    disk = block_file(sector * sectors)
    proc = block_guest(disk, sector=sector if sector != 512 else None)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "block: roundtrip ok" in proc.stdout
    data = open(disk, "rb").read()
    assert len(data) == sector * sectors
    tested = [0, 1, sectors - 1][:min(3, sectors)]
    expected = bytearray(len(data))
    for idx, number in enumerate(dict.fromkeys(tested)):  # no duplicates on tiny disks
        expected[number * sector:(number + 1) * sector] = roundtrip_pattern(number, sector, idx)
    assert data == bytes(expected)


@pytest.mark.parametrize("sector", [None, 512, 1024, 4096, 65536 // 2])
def test_capacity_and_sector_size_are_reported_to_the_guest(block_file, sector):
    size = (sector or 512) * 3
    proc = block_guest(block_file(size), "read", 0, sector=sector)
    assert proc.returncode == 0, proc.stderr
    assert "block: capacity=%d sector=%d\n" % (size, sector or 512) in proc.stdout


def test_guest_reads_what_the_host_wrote(block_file):
    disk = block_file(4 * 4096)
    with open(disk, "r+b") as f:
        f.seek(2 * 4096)
        f.write(bytes.fromhex("0123456789abcdef"))
    proc = block_guest(disk, "read", 2, sector=4096)
    assert proc.returncode == 0, proc.stderr
    assert "block: sector 2 first8=0123456789abcdef" in proc.stdout
    proc = block_guest(disk, "read", 2)  # 512-byte sectors: sector 2 is still zero
    assert "block: sector 2 first8=0000000000000000" in proc.stdout


def test_guest_write_lands_at_its_sector_and_nowhere_else(block_file):
    disk = block_file(8 * 512)
    proc = block_guest(disk, "write", 5, 0xA5)
    assert proc.returncode == 0 and "block: wrote 5" in proc.stdout, proc.stdout
    data = open(disk, "rb").read()
    assert data == bytes(5 * 512) + b"\xa5" * 512 + bytes(2 * 512)


def test_file_keeps_its_size_and_the_bytes_beyond_the_guest_are_untouched(block_file):
    disk = block_file(4 * 512)
    proc = block_guest(disk)
    assert proc.returncode == 0, proc.stdout
    assert os.path.getsize(disk) == 4 * 512


def test_block_device_by_symlink_works(block_file, tmp_path):
    disk = block_file(4 * 512)
    link = tmp_path / "link-to-disk.img"
    link.symlink_to(disk)
    proc = block_guest(str(link), "write", 3, 0x5A)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert open(disk, "rb").read()[3 * 512:] == b"\x5a" * 512
    assert link.is_symlink()


def test_dangling_symlink_is_refused(tmp_path):
    link = tmp_path / "dangling.img"
    link.symlink_to(tmp_path / "gone.img")
    refused_one_line(block_guest(str(link)), str(link), "No such file or directory")


def test_read_only_file_is_refused(block_file):
    disk = block_file(4 * 512)
    os.chmod(disk, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    # As root the mode alone would not stop an open for writing: take away
    # the capability that overrides it.
    cmd = [which("setpriv"), "--bounding-set=-dac_override,-dac_read_search", "--",
           SOLO5_SPT, "--mem=8", "--block:storage=" + disk, guest_path("block")]
    refused_one_line(run(cmd), disk, "Permission denied")
    assert open(disk, "rb").read() == bytes(4 * 512)


def test_file_on_a_read_only_mount_is_refused(block_file, tmp_path):
    disk = block_file(4 * 512)
    # A read-only bind mount of the test's own directory, in a private mount
    # namespace that vanishes with the command.
    script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    cmd = [which("unshare"), "--mount", "--propagation", "private", "sh", "-c", script, "sh",
           str(tmp_path), SOLO5_SPT, "--mem=8", "--block:storage=" + disk, guest_path("block")]
    refused_one_line(run(cmd), disk, "Read-only file system")


def test_directory_as_block_device_is_refused(tmp_path):
    refused_one_line(block_guest(str(tmp_path)), str(tmp_path))


def test_character_device_as_block_device_is_refused():
    refused_one_line(block_guest("/dev/null"), "/dev/null", "not a regular file or block device")


def test_file_in_use_by_a_running_guest_is_refused_until_it_exits(block_file, running):
    disk = block_file(64 * 512)
    # blockwriter writes one sector a second: it holds the file for a minute
    first = running("--mem=8", "--block:storage=" + disk, guest_path("blockwriter"),
                    "delay_us=1000000")
    assert read_line(first.stdout).strip() == "wrote 0"
    line = refused_one_line(block_guest(disk), disk, "in use")
    assert first.poll() is None  # the refusal did not disturb the running guest
    # through a symlink it is the same file, and the same lock
    link = os.path.join(os.path.dirname(disk), "same.img")
    os.symlink(disk, link)
    refused_one_line(block_guest(link), "in use")
    stop(first)
    proc = block_guest(disk)
    assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
    assert "block: roundtrip ok" in proc.stdout
