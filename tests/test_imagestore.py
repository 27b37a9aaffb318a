"""Guests of one image share its pages (spt/imagestore.py), and no change to
the unikernel file on disk reaches a running guest.

The `big` guest has 1.25 MiB of text and 384 KiB of rodata, reads all of
both, and prints a checksum of them ("big: sum=0x..."); with `watch` it
prints the sum again every 20 ms. Physical pages are read from
/proc/PID/pagemap (root sees page frame numbers).
"""

from __future__ import annotations

import os
import shutil
import struct

import pytest

from conftest import guest_path, read_line, spt_run
from spt import imagestore

PAGE = 4096
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63


def image_range(kernel: str) -> tuple[int, int]:
    """[start, end) of the image's text and rodata (its first two segments)."""
    from spt import image

    segs = image.load(kernel).segments
    return segs[0].start, segs[1].end


def frames(pid: int, start: int, end: int) -> list[int]:
    """The physical frame of every page in [start, end) of process `pid`."""
    with open("/proc/%d/pagemap" % pid, "rb") as f:
        f.seek(start // PAGE * 8)
        raw = f.read((end - start) // PAGE * 8)
    entries = struct.unpack("<%dQ" % (len(raw) // 8), raw)
    assert all(e & PRESENT for e in entries), "the guest has not touched all its image"
    return [e & PFN_MASK for e in entries]


def start_big(running, kernel: str, *args, env=None) -> tuple[object, str]:
    proc = running("--mem=8", kernel, *args, env=env)
    line = read_line(proc.stdout, timeout=30)
    assert line.startswith("big: sum=0x"), (line, proc.poll())
    return proc, line


@pytest.fixture
def big_copy(tmp_path):
    """A copy of the big guest that the test may rewrite, truncate or delete."""
    path = tmp_path / "big.spt"
    shutil.copy(guest_path("big"), path)
    return str(path)


def test_two_guests_of_one_image_share_its_physical_pages(running):
    kernel = guest_path("big")
    start, end = image_range(kernel)
    first, sum_one = start_big(running, kernel)
    second, sum_two = start_big(running, kernel)
    assert sum_one == sum_two
    a, b = frames(first.pid, start, end), frames(second.pid, start, end)
    assert len(a) >= (0x140000 + 0x60000) // PAGE
    assert a == b, "%d of %d pages are not shared" % (sum(x != y for x, y in zip(a, b)), len(a))


@pytest.mark.parametrize("switch", ["SPT_SHARE", "SPT_CACHE"])
def test_with_sharing_or_the_cache_off_each_guest_copies_its_image(running, switch):
    """The control for the test above: copies are other pages."""
    kernel = guest_path("big")
    start, end = image_range(kernel)
    env = dict(os.environ, **{switch: "0"})
    first, _ = start_big(running, kernel, env=env)
    second, _ = start_big(running, kernel, env=env)
    a, b = frames(first.pid, start, end), frames(second.pid, start, end)
    assert not set(a) & set(b)
    assert not any("images/img-" in line for line in open("/proc/%d/maps" % first.pid))


def test_shared_pages_halve_the_image_pss_of_two_guests(running):
    kernel = guest_path("big")
    start, end = image_range(kernel)
    first, _ = start_big(running, kernel)
    second, _ = start_big(running, kernel)

    def image_pss_kb(pid: int) -> int:
        total, inside = 0, False
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                head = line.split()[0]
                if "-" in head and not head.endswith(":"):
                    lo, hi = (int(x, 16) for x in head.split("-"))
                    inside = start <= lo and hi <= end
                elif head == "Pss:" and inside:
                    total += int(line.split()[1])
        return total

    image_kb = (end - start) // 1024
    pss = image_pss_kb(first.pid)
    assert pss <= image_kb * 0.55, (pss, image_kb)


def test_rewriting_truncating_and_deleting_the_file_changes_nothing_in_running_guests(
        running, big_copy):
    watcher, first = start_big(running, big_copy, "watch")
    idle, _ = start_big(running, big_copy)
    start, end = image_range(big_copy)
    before = frames(idle.pid, start, end)

    def still_the_same() -> None:
        for _ in range(3):
            assert read_line(watcher.stdout, timeout=30) == first
        assert watcher.poll() is None and idle.poll() is None

    with open(big_copy, "r+b") as f:  # in place, as `cp new.spt old.spt` does
        f.seek(0x1000)
        f.write(bytes(0x150000))  # zeros: the text now faults at once (NULL or udf)
    still_the_same()
    rewritten = spt_run("--mem=8", big_copy, timeout=60)  # never ends by itself: bounded
    assert rewritten.returncode < 0  # a new launch sees the new bytes: it faults
    os.truncate(big_copy, 0)
    still_the_same()
    os.unlink(big_copy)
    still_the_same()
    assert frames(idle.pid, start, end) == before  # no page was replaced or dropped


def _newest_stored() -> str:
    store = imagestore.store_dir()
    stored = [os.path.join(store, n) for n in os.listdir(store) if n.startswith("img-")]
    return max(stored, key=os.path.getmtime)


@pytest.mark.parametrize("spoil", ["writable", "other owner", "short"])
def test_a_stored_image_that_is_not_immutable_and_ours_is_not_used(running, spoil):
    kernel = guest_path("big")
    _, expected = start_big(running, kernel)
    newest = _newest_stored()
    if spoil == "writable":
        os.chmod(newest, 0o600)
    elif spoil == "other owner":
        os.chown(newest, 65534, 65534)
    else:
        os.truncate(newest, os.path.getsize(newest) - PAGE)
    _, again = start_big(running, kernel)
    assert again == expected
    st = os.stat(_newest_stored())
    assert (st.st_mode & 0o777, st.st_uid) == (0o400, os.geteuid())  # written anew


def test_an_uncached_image_is_used_only_if_its_stored_bytes_match(tmp_path, monkeypatch):
    """Without a content key (an image loaded without the launch cache) the
    store compares what it finds with the view it built."""
    from spt.image import load

    monkeypatch.setenv("SPT_CACHE_DIR", str(tmp_path / "cache"))
    kernel = guest_path("big")
    with open(kernel, "rb") as stream:
        image = load(kernel, stream)
        fd = imagestore.publish(image, stream)
        os.close(fd)
        path = _newest_stored()
        with open(path, "r+b") as f:  # root may write a 0400 file
            f.write(b"\xcc" * PAGE)
        fd = imagestore.publish(image, stream)
        try:
            assert os.pread(fd, PAGE, 0) == bytes(imagestore.view(image.segments, stream)[:PAGE])
        finally:
            os.close(fd)


def test_stored_images_are_read_only_and_private_to_their_owner():
    spt_run("--mem=8", guest_path("hello"))
    store = imagestore.store_dir()
    st = os.stat(store)
    assert st.st_uid == os.geteuid() and st.st_mode & 0o077 == 0
    for name in os.listdir(store):
        if name.startswith("img-"):
            st = os.stat(os.path.join(store, name))
            assert st.st_mode & 0o777 == 0o400, (name, oct(st.st_mode))


def test_the_store_keeps_a_bounded_number_of_images(tmp_path, monkeypatch):
    monkeypatch.setenv("SPT_CACHE_DIR", str(tmp_path / "cache"))
    kernel = guest_path("hello")
    for i in range(imagestore.MAX_FILES + 5):
        proc = spt_run("--mem=8", kernel, "x" * i)  # one image: args do not change it
        assert proc.returncode == 0, proc.stderr
    names = os.listdir(tmp_path / "cache" / imagestore.SUBDIR)
    assert [n for n in names if n.startswith("img-")] and len(names) == 1, names

    from spt.image import load

    image = load(kernel)
    with open(kernel, "rb") as stream:
        data = bytes(imagestore.view(image.segments, stream))
    for i in range(imagestore.MAX_FILES + 5):
        data += bytes([i]) * PAGE
        assert imagestore._write(str(tmp_path / "cache" / imagestore.SUBDIR),
                                 "img-test%02d" % i, data)
    imagestore._prune(str(tmp_path / "cache" / imagestore.SUBDIR))
    left = os.listdir(tmp_path / "cache" / imagestore.SUBDIR)
    assert len(left) == imagestore.MAX_FILES


def test_the_guest_sees_exactly_what_the_copy_shows(guest):
    """Bit for bit: every guest of the kit prints the same under both."""
    for name, args in (("hello", ("a", "b")), ("time", ()), ("exit", ("7",))):
        shared = spt_run("--mem=8", guest(name), *args)
        copied = spt_run("--mem=8", guest(name), *args, env=dict(os.environ, SPT_SHARE="0"))
        assert shared.returncode == copied.returncode, name
        if name != "time":
            assert shared.stdout == copied.stdout, name


def test_mapped_image_pages_are_in_a_guests_core(running):
    """The store's pages are file-backed, which cores leave out by default;
    the launcher asks the kernel to dump them (coredump_filter bit 2, kept
    across exec), so a core is as complete as with copied pages
    (test_vanishing.py checks the image bytes in a real core)."""
    proc, _ = start_big(running, guest_path("big"))
    with open("/proc/%d/coredump_filter" % proc.pid) as f:
        assert int(f.read(), 16) & 0x4
