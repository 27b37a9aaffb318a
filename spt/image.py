"""The Image stage: a unikernel ELF checked against every rule of the spt
ABI (docs/abi.md, §1 and §2) before anything is mapped, by the loader rules
of the ABI version the image asks for (abi.ABI_VERSIONS).

The result is plain data (`Image`): the entry point, the segments to copy,
`kernel_end` and the manifest. `load` checks the file in full
(spt/elfcheck.py, with pyelftools); `load_cached` remembers what it found
per kernel content and, on a launch of an unchanged kernel, checks the
remembered layout again (`check_layout`) without reading the ELF. Checks
that depend on the guest's memory size live in `check_fits`, because the
image is read before the devices and the memory are settled. A refusal is
an `ImageError` naming the file and, where it is the ELF's, Solo5's words
`Invalid or unsupported executable`, which scripts look for.
"""

import posix  # not os: the launch path's modules do without it (spt/lean.py)

from spt import SptError, abi, lean
from spt.lean import Record

PF_X, PF_W, PF_R = 1, 2, 4


class ImageError(SptError):
    """The file is not a unikernel this tender can run."""


# Solo5's loader says this (after the file name) of every image it refuses
# other than for its notes' contents; spt says what was wrong after it.
INVALID = "Invalid or unsupported executable"


class Segment(Record, fields="index offset vaddr filesz memsz start end flags"):
    """A PT_LOAD segment to copy: `index` is its program header index (for
    messages), `start`/`end` the page-aligned range its protection applies
    to, `flags` PF_R | PF_W | PF_X."""

    __slots__ = ()

    @property
    def perms(self) -> str:
        return "".join(c if self.flags & bit else "-"
                       for c, bit in (("r", PF_R), ("w", PF_W), ("x", PF_X)))


class Image(Record, fields="path entry segments kernel_end abi_target abi_version manifest "
                          "content", defaults=(None,)):
    """A checked unikernel: entry point, segments, the highest segment end,
    its ABI note and its manifest (a spt.manifest.Manifest; from `recall`,
    its packed bytes); `content` is (size, checksum of every byte: see
    `content_key`) where the launch cache read them, else None. Nothing is
    mapped yet."""

    __slots__ = ()

    def abi_json(self) -> dict:
        """The shape Solo5's elftool prints for `query-abi`."""
        return {
            "type": "solo5.abi",
            "target": abi.ABI_TARGETS.get(self.abi_target, str(self.abi_target)),
            "version": self.abi_version,
        }


def load(path: str, stream=None) -> Image:
    """Read and check the image at `path` (from `stream` if one is open),
    every rule (spt/elfcheck.py)."""
    from spt import elfcheck

    return elfcheck.load(path, stream)


def load_cached(path: str, stream) -> Image:
    """`load`, remembered per kernel content (see spt/cache.py): a launch of
    an unchanged kernel skips pyelftools entirely. Only images that passed
    every check are remembered, and a remembered layout is checked again
    (`check_layout`) before it is used.

    The key is the file's size and a checksum of all its bytes, not its
    identity: a write through a shared mapping changes the file without
    touching mtime or ctime. (The checksum guards against a stale entry, not a
    forged one: whoever could forge a collision can write the entry itself,
    which is why the layout is checked again.) Reading and summing the whole
    file costs about 0.7 ms per MiB."""
    from spt import cache, manifest

    image_content = content_key(stream.fileno())
    image = recall(path, stream, image_content)
    if image is not None:
        try:
            return image._replace(manifest=manifest.parse(image.manifest))
        except SptError:
            pass  # an entry spt did not write: check the file
    image = load(path, stream)
    cache.store("image", cache_key(image_content), (
        image.entry, image.kernel_end, image.abi_target, image.abi_version,
        tuple(tuple(s) for s in image.segments), image.manifest.pack()), _CACHE_CODE)
    return image._replace(content=image_content)


# What computes a remembered image: an entry made by other code is a miss
# (spt/cache.py). The manifest's module by path: `recall` does not import it.
_CACHE_CODE = (__file__, lean.join(lean.dirname(__file__), "manifest.py"), abi.__file__)


def recall(path: str, stream, content: tuple[int, int] | None = None) -> Image | None:
    """What the launch cache remembers of this kernel's content (`content`
    if the caller has it: see `content_key`), its layout checked again
    (`check_layout`), or None. The manifest is left as the packed bytes the
    entry holds (`load_cached` parses them; a launch that names no device
    needs only know that they declare none)."""
    from spt import cache

    size, crc = content or content_key(stream.fileno())
    plain = cache.load("image", cache_key((size, crc)), _CACHE_CODE)
    if plain is None:
        return None
    try:
        entry, kernel_end, target, version, segments, mft = plain
        image = Image(path=path, entry=entry, segments=tuple(Segment(*s) for s in segments),
                      kernel_end=kernel_end, abi_target=target, abi_version=version,
                      manifest=mft, content=(size, crc))
        if not isinstance(mft, bytes):
            return None
        check_layout(image, size)
    except (TypeError, ValueError, SptError):
        return None  # an entry from another layout, or one spt did not write: check the file
    return image


def content_key(fd: int, chunk: int = 1 << 20) -> tuple[int, int]:
    """(size, checksum of every byte) of the open file: each MiB checksummed
    as it is read (spt/lean.py's `checksum`), then the list of those."""
    size, offset, sums = posix.fstat(fd).st_size, 0, []
    while offset < size:
        data = posix.pread(fd, min(chunk, size - offset), offset)
        if not data:
            break
        sums.append(lean.checksum(data).to_bytes(8, "little"))
        offset += len(data)
    return offset, lean.checksum(b"".join(sums))


def cache_key(content: tuple[int, int]) -> str:
    """The launch cache's key of a kernel of `content` (see `content_key`)."""
    return "%d:%016x" % content


def check_layout(image: Image, file_size: int) -> None:
    """What the trampoline is handed, checked again on a remembered image:
    the ABI note's target and version, an entry point and segments inside
    the guest's range, page-aligned, ascending, not overlapping, never
    writable and executable, their file bytes inside the file. (`load`
    derives the same from the program headers; this is the short form of
    those rules on their result.)"""
    def fail(why: str) -> ImageError:
        return ImageError("%s: %s" % (image.path, why))

    if image.abi_target != abi.ABI_TARGET_SPT or image.abi_version not in abi.ABI_VERSIONS:
        raise fail("cached ABI note does not match")
    # ABI 1's loader maps PT_LOADs without file bytes too (spt/abi.py).
    empty_ok = not abi.ABI_VERSIONS[image.abi_version].skips_empty_load
    if image.entry < abi.GUEST_MIN_ADDR or not image.segments:
        raise fail("cached entry point or segments out of range")
    prev_end = abi.GUEST_MIN_ADDR
    for seg in image.segments:
        if (seg.start < prev_end or seg.start % abi.PAGE_SIZE or seg.end % abi.PAGE_SIZE
                or not seg.start <= seg.vaddr <= seg.vaddr + seg.memsz <= seg.end
                or not (0 < seg.filesz or empty_ok) or seg.filesz > seg.memsz
                or seg.offset + seg.filesz > file_size
                or (seg.flags & PF_W and seg.flags & PF_X) or seg.flags & ~(PF_R | PF_W | PF_X)):
            raise fail("cached segment %d breaks the layout rules" % seg.index)
        prev_end = seg.end
    if image.kernel_end != prev_end:
        raise fail("cached kernel_end does not match its segments")


def check_fits(image: Image, mem_size: int) -> None:
    """The rules of spt-abi §2 that depend on the guest's memory size."""
    for seg in image.segments:
        if seg.vaddr >= mem_size or seg.vaddr + seg.filesz > mem_size or seg.end > mem_size:
            raise ImageError("%s: %s: program header %d: segment %#x-%#x does not fit in "
                             "guest memory (%d MiB); raise --mem"
                             % (image.path, INVALID, seg.index, seg.start, seg.end,
                                mem_size >> 20))
    if image.entry >= mem_size:
        raise ImageError("%s: %s: entry point %#x is outside guest memory (%d MiB)"
                         % (image.path, INVALID, image.entry, mem_size >> 20))


def open_kernel(path: str):
    """Open the image read-only as a binary stream, refusing anything but a
    regular file. O_NONBLOCK keeps a FIFO from hanging the open."""
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC | posix.O_NOCTTY)
    except OSError as exc:
        # Solo5's words: "KERNEL: Could not open: REASON"
        raise ImageError("%s: Could not open: %s" % (path, exc.strerror or exc)) from None
    mode = posix.fstat(fd).st_mode
    if not lean.stat.S_ISREG(mode):
        posix.close(fd)
        if lean.stat.S_ISDIR(mode):  # Solo5's tender opens it, then fails to read it
            raise ImageError("%s: Is a directory (Could not open: not a regular file)" % path)
        # Solo5's tender reads a device or a FIFO and finds no ELF in it
        raise ImageError("%s: %s: not a regular file" % (path, INVALID))
    posix.set_blocking(fd, True)
    return open(fd, "rb", buffering=0)
