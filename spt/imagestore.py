"""The image store: immutable copies of unikernel images that guests map.

A guest's segments are mapped from a file of the store instead of being
copied into anonymous memory, so every guest of one image shares the page
cache's copy of each page it only reads (text, rodata, and data it never
writes); a page a guest writes becomes its own (MAP_PRIVATE: copy on write).

The file a guest maps is not the unikernel file the operator named, which
may be rewritten, truncated or deleted while guests run. It is the guest's
view of the image, segment after segment, each one's pages exactly as guest
memory holds them at boot (zero outside the segment's file bytes), written
once under a name taken from its content, made read-only, and never written
again: a running guest sees no byte change and takes no SIGBUS whatever
happens to the original.

Its name says what it holds. A launch that knows the unikernel's content
key (size and checksum of every byte, which the launch cache computes on every
launch: spt/image.py) names the file by that key and the segments' layout,
and uses a stored file of that name if it is a regular file of this user,
read-only, of the right size, in a directory of the same kind, without
reading it: the trust the launch cache gives its image entries. Whoever
could change such a file could change the cache, and ptrace the guest; and
what it holds is guest code, which the filter confines whatever it is.
Without a content key (an uncached image) the name is a checksum of the view
itself, and a stored file is used only if its bytes equal the view built
for this launch.

The store lives in the launch cache's directory (spt/cache.py), in
`images/`. With no usable cache directory (SPT_CACHE=0, or none writable),
or with SPT_SHARE=0, a launch copies its segments as Solo5's tender does.
"""

import posix  # not os: the launch path's modules do without it (spt/lean.py)

from spt import abi, cache, lean

SUBDIR = "images"
# Bound on the files kept: each is one image's worth of pages; the least
# recently launched go first. A running guest keeps its pages whatever
# happens to the name.
MAX_FILES = 32


def _page_up(n: int) -> int:
    return -(-n // abi.PAGE_SIZE) * abi.PAGE_SIZE


def mapped_len(seg) -> int:
    """The part of a segment backed by the store: its pages up to the last
    one holding file bytes (the rest of memsz, bss, is zero memory already)."""
    return _page_up(seg.vaddr + seg.filesz) - seg.start


def view(segments, stream) -> bytearray:
    """The guest's view of every segment's mapped pages, concatenated; read
    straight into place (one pass over the bytes), empty if the file is
    shorter than its segments say."""
    import os

    fd = stream.fileno()
    data = bytearray(sum(mapped_len(seg) for seg in segments))  # zeros
    window = memoryview(data)
    at = 0
    for seg in segments:
        head = at + seg.vaddr - seg.start
        if seg.filesz and os.preadv(fd, [window[head:head + seg.filesz]], seg.offset) != seg.filesz:
            return bytearray()  # the file shrank under us: the caller copies instead
        at += mapped_len(seg)
    return data


# /proc/PID/coredump_filter bit 2: file-backed private mappings. The kernel
# leaves them out of a core by default (their bytes are in the file); a
# guest's image pages are its memory, so its core must hold them, as it did
# when they were copied. The filter survives execve.
_DUMP_FILE_PRIVATE = 0x4


def dump_mapped_pages() -> None:
    """Make this process's core dumps include the mapped image pages."""
    try:
        fd = posix.open("/proc/self/coredump_filter", posix.O_RDWR | posix.O_CLOEXEC)
    except OSError:
        return  # no /proc: cores then hold the guest's written pages only
    try:
        current = int(posix.read(fd, 32).strip() or b"0", 16)
        if not current & _DUMP_FILE_PRIVATE:
            posix.write(fd, b"%x" % (current | _DUMP_FILE_PRIVATE))
    except (OSError, ValueError):
        pass
    finally:
        posix.close(fd)


def store_dir() -> str | None:
    """Where the store's files live, or None if guests copy their images."""
    if lean.getenv("SPT_SHARE") == "0":
        return None
    base = cache.cache_dir()
    return lean.join(base, SUBDIR) if base else None


def publish(image, stream) -> int | None:
    """An fd, open read-only, of a file holding the view of the image's
    segments, shared by every launch of the same image; or None (the launch
    then copies). A plain fd, not a file object: it must stay open until the
    trampoline has mapped it, whatever Python collects before the exec."""
    directory = store_dir()
    if directory is None:
        return None
    length = sum(mapped_len(seg) for seg in image.segments)
    if image.content is not None:
        size, crc = image.content
        layout = lean.checksum(repr(tuple(tuple(seg[1:]) for seg in image.segments)).encode())
        name = "img-%d-%016x-%016x-%d" % (size, crc, layout, length)
        found = _open_trusted(lean.join(directory, name), length)
        if found is not None:
            return found
        data = view(image.segments, stream)
    else:
        data = view(image.segments, stream)
        name = "img-v%016x-%d" % (lean.checksum(data), len(data))
        found = _open_matching(lean.join(directory, name), data)
        if found is not None:
            return found
    if len(data) != length or not _write(directory, name, data):
        return None
    _prune(directory)
    return _open_matching(lean.join(directory, name), data)


def _open_trusted(path: str, length: int) -> int | None:
    """An fd of the stored file at `path` if it is a read-only regular file
    of this user, `length` bytes long, that nobody else may write."""
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = posix.fstat(fd)
        if (lean.stat.S_ISREG(st.st_mode) and cache.trusted(st)
                and not st.st_mode & lean.stat.S_IWUSR and st.st_size == length
                and _trusted_dir(lean.dirname(path))):
            posix.utime(fd)  # most recently used: the last to be pruned
            return fd
    except OSError:
        pass
    posix.close(fd)
    return None


def _trusted_dir(directory: str) -> bool:
    st = posix.stat(directory, follow_symlinks=False)
    return lean.stat.S_ISDIR(st.st_mode) and cache.trusted(st)


def _open_matching(path: str, data: bytearray) -> int | None:
    """An fd of the stored file at `path`, if it is trusted and holds
    exactly `data`."""
    import os

    fd = _open_trusted(path, len(data))
    if fd is not None:
        try:
            if _same_bytes(fd, data):
                return fd
        except OSError:
            pass
        os.close(fd)
    return None


def _same_bytes(fd: int, data: bytearray) -> bool:
    """Does the file at `fd` hold exactly `data`?"""
    import os

    found = bytearray(len(data))
    window, at = memoryview(found), 0
    while at < len(found):
        n = os.preadv(fd, [window[at:]], at)
        if n <= 0:
            return False
        at += n
    return found == data and not os.pread(fd, 1, at)


def _write(directory: str, name: str, data: bytes | bytearray) -> bool:
    """Store `data` as `name`: written to a temporary file of its own
    (created exclusively, never through a link), made read-only, renamed."""
    import os

    tmp = os.path.join(directory, ".%s.%d.%s.tmp" % (name, os.getpid(), os.urandom(4).hex()))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _trusted_dir(directory):
            return False
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o400)
        try:
            view_ = memoryview(data)
            while view_:
                view_ = view_[os.write(fd, view_):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(directory, name))
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def _prune(directory: str) -> None:
    """Keep the MAX_FILES most recently used images, and no temporary file
    a killed launch left behind. Removing a name never touches a running
    guest: its mapping holds the file."""
    import os

    import time

    stale_before = (time.time() - 3600) * 1e9
    try:
        entries = []
        with os.scandir(directory) as it:
            for entry in it:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_uid != os.geteuid():
                    continue
                if entry.name.startswith("img-"):
                    entries.append((st.st_mtime_ns, entry.path))
                elif entry.name.startswith(".img-") and st.st_mtime_ns < stale_before:
                    os.unlink(entry.path)
        entries.sort(reverse=True)
        for _, path in entries[MAX_FILES:]:
            os.unlink(path)
    except OSError:
        pass
