"""The Image stage: read a unikernel ELF and check every rule of the spt ABI
(docs/abi.md, §1 and §2) before anything is mapped, by the loader rules of
the ABI version the image asks for (abi.ABI_VERSIONS).

pyelftools reads the ELF header; the program header table is read in one
piece and unpacked with struct, so an image with 65535 headers is checked in
a time linear in their number and small (pyelftools builds an object per
header). Each check is a small function that raises `ImageError` with the
file, `Invalid or unsupported executable` (the words of Solo5's loader, which
scripts look for), the program header index where one applies, and what was
wrong. The result is plain
data: the entry point, the segments to copy, `kernel_end` and the manifest.
Checks that depend on the guest's memory size live in `check_fits`, because
the image is read before the devices and the memory are settled.
"""

from __future__ import annotations

import os
import struct
from collections import namedtuple

from spt import abi, manifest
from spt.errors import SptError

PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4
# Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
_PHDR = struct.Struct("<IIQQQQQQ")
_NOTE_HEADER = struct.Struct("<III")
_ABI1 = struct.Struct("<IIII")
_U64_MAX = (1 << 64) - 1


class ImageError(SptError):
    """The file is not a unikernel this tender can run."""


# Solo5's loader says this (after the file name) of every image it refuses
# other than for its notes' contents; spt says what was wrong after it.
INVALID = "Invalid or unsupported executable"


class Segment(namedtuple("Segment", "index offset vaddr filesz memsz start end flags")):
    """A PT_LOAD segment to copy: `index` is its program header index (for
    messages), `start`/`end` the page-aligned range its protection applies
    to, `flags` PF_R | PF_W | PF_X."""

    __slots__ = ()

    @property
    def perms(self) -> str:
        return "".join(c if self.flags & bit else "-"
                       for c, bit in (("r", PF_R), ("w", PF_W), ("x", PF_X)))


class Image(namedtuple("Image", "path entry segments kernel_end abi_target abi_version manifest "
                                 "content", defaults=(None,))):
    """A checked unikernel: entry point, segments, the highest segment end,
    its ABI note and its manifest; `content` is (size, CRC-32 of every byte)
    where `load_cached` read them, else None. Nothing is mapped yet."""

    __slots__ = ()

    def abi_json(self) -> dict:
        """The shape Solo5's elftool prints for `query-abi`."""
        return {
            "type": "solo5.abi",
            "target": abi.ABI_TARGETS.get(self.abi_target, str(self.abi_target)),
            "version": self.abi_version,
        }


def load(path: str, stream=None) -> Image:
    """Read and check the image at `path` (from `stream` if one is open)."""
    from elftools.common.exceptions import ELFError
    from elftools.construct.core import ConstructError
    from elftools.elf.elffile import ELFFile

    def fail(why: str) -> ImageError:
        return ImageError("%s: %s" % (path, why))

    def invalid(why: str) -> ImageError:
        return fail("%s: %s" % (INVALID, why))

    own_stream = stream is None
    if own_stream:
        stream = open_kernel(path)
    try:
        try:
            header = ELFFile(stream).header
            _check_header(header, invalid)
        except ImageError:
            raise
        except (ELFError, ConstructError, struct.error, ValueError, OverflowError) as exc:
            raise invalid("not a valid ELF file (%s)" % _short(exc)) from None
        phdrs = _read_phdrs(stream, header["e_phoff"], header["e_phnum"], invalid)
        heads = {}
        target, version = _abi_note(stream, phdrs, fail, invalid, heads)
        if target != abi.ABI_TARGET_SPT:
            raise fail("Executable is not for the solo5-spt target")
        if version not in abi.ABI_VERSIONS:
            raise fail("Executable requests unsupported ABI version %d" % version)
        mft = _manifest_note(stream, phdrs, fail, invalid, heads)
        segments, kernel_end = _load_segments(stream, phdrs, version, invalid)
        entry = header["e_entry"]
        if entry < abi.GUEST_MIN_ADDR:
            raise invalid("entry point %#x is below %#x" % (entry, abi.GUEST_MIN_ADDR))
        return Image(path=path, entry=entry, segments=segments, kernel_end=kernel_end,
                     abi_target=target, abi_version=version, manifest=mft)
    finally:
        if own_stream:
            stream.close()


def load_cached(path: str, stream) -> Image:
    """`load`, remembered per kernel content (see spt/cache.py): a launch of
    an unchanged kernel skips pyelftools entirely. Only images that passed
    every check are remembered, and a remembered layout is checked again
    (`check_layout`) before it is used.

    The key is the file's size and a CRC-32 of all its bytes, not its
    identity: a write through a shared mapping changes the file without
    touching mtime or ctime. (CRC-32 guards against a stale entry, not a
    forged one: whoever could forge a collision can write the entry itself,
    which is why the layout is checked again.) Reading and summing the whole
    file costs about 0.7 ms per MiB."""
    from spt import cache

    size, crc = content_key(stream.fileno())
    key = "%d:%08x" % (size, crc)
    code = (__file__, manifest.__file__, abi.__file__)
    plain = cache.load("image", key, code)
    if plain is not None:
        try:
            entry, kernel_end, target, version, segments, mft = plain
            image = Image(path=path, entry=entry, segments=tuple(Segment(*s) for s in segments),
                          kernel_end=kernel_end, abi_target=target, abi_version=version,
                          manifest=manifest.parse(mft))
            check_layout(image, size)
            return image._replace(content=(size, crc))
        except (TypeError, ValueError, SptError):
            pass  # an entry from another layout, or one spt did not write: check the file
    image = load(path, stream)
    cache.store("image", key, (image.entry, image.kernel_end, image.abi_target,
                               image.abi_version, tuple(tuple(s) for s in image.segments),
                               image.manifest.pack()), code)
    return image._replace(content=(size, crc))


def content_key(fd: int, chunk: int = 1 << 20) -> tuple[int, int]:
    """(size, CRC-32 of every byte) of the open file."""
    import zlib

    size, crc, offset = os.fstat(fd).st_size, 0, 0
    while offset < size:
        data = os.pread(fd, min(chunk, size - offset), offset)
        if not data:
            break
        crc, offset = zlib.crc32(data, crc), offset + len(data)
    return offset, crc


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
    import stat
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        # Solo5's words: "KERNEL: Could not open: REASON"
        raise ImageError("%s: Could not open: %s" % (path, exc.strerror or exc)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):  # Solo5's tender opens it, then fails to read it
            raise ImageError("%s: Is a directory (Could not open: not a regular file)" % path)
        # Solo5's tender reads a device or a FIFO and finds no ELF in it
        raise ImageError("%s: %s: not a regular file" % (path, INVALID))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=0)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:120] if text else type(exc).__name__


def _check_header(h, fail) -> None:
    ident = h["e_ident"]
    if ident["EI_CLASS"] != "ELFCLASS64" or ident["EI_DATA"] != "ELFDATA2LSB":
        raise fail("not a 64-bit little-endian ELF file")
    checks = (
        (h["e_version"] == "EV_CURRENT", "e_version is not EV_CURRENT"),
        (h["e_ehsize"] == 64, "e_ehsize is %s, expected 64" % h["e_ehsize"]),
        (h["e_phentsize"] == 56, "e_phentsize is %s, expected 56" % h["e_phentsize"]),
        (h["e_phnum"] >= 1, "no program headers"),
        (h["e_type"] == "ET_EXEC", "not a static executable (e_type %s)" % h["e_type"]),
    )
    for ok, why in checks:
        if not ok:
            raise fail(why)
    _check_machine(h["e_machine"], fail)


def _check_machine(machine, fail) -> None:
    """The kernel must be built for the host's architecture: guest code runs
    natively, and the filter admits only this architecture's calls."""
    from spt import arch

    host = arch.host()
    if machine != host.ELF_MACHINE:
        built = arch.by_elf_machine(machine)
        raise fail("built for %s (e_machine %s), this host is %s"
                   % (built.NAME if built else "another architecture", machine, host.NAME))


def _read_phdrs(stream, phoff: int, phnum: int, invalid) -> list[tuple]:
    """The program header table, read with one pread and unpacked as tuples
    (p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align)."""
    size = phnum * _PHDR.size
    if phoff + size > os.fstat(stream.fileno()).st_size:
        raise invalid("program headers lie beyond the end of the file")
    table = _read_at(stream, phoff, size)
    if len(table) != size:
        raise invalid("program headers lie beyond the end of the file")
    return list(_PHDR.iter_unpack(table))


def _read_at(stream, offset: int, size: int) -> bytes:
    """Up to `size` bytes at `offset` (one pread, looped only on a short
    read); nothing for an offset at or past 2**63, which pread refuses, so a
    hostile 64-bit offset reads as a short read (callers report that)."""
    if offset >= 1 << 63 or size <= 0:
        return b""
    fd = stream.fileno()
    parts, got = [], 0
    while got < size:
        chunk = os.pread(fd, size - got, offset + got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def _find_note(stream, phdrs, note_type: int, align: int, max_descsz: int, invalid,
               what: str, heads: dict) -> bytes | None:
    """The content of the first Solo5 note of `note_type`, per spt-abi §1.1.
    `heads` keeps the note headers read so far by program header index, so
    that the search for the second note type reads none of them again."""
    for index, ph in enumerate(phdrs):
        if ph[0] != PT_NOTE:
            continue
        offset, filesz = ph[2], ph[5]
        if filesz < 12:
            raise invalid("program header %d: note segment too short (%d bytes)" % (index, filesz))
        if filesz < abi.NOTE_HEADER_SIZE:
            continue
        head = heads.get(index)
        if head is None:
            head = heads[index] = _read_at(stream, offset, abi.NOTE_HEADER_SIZE)
        if len(head) < abi.NOTE_HEADER_SIZE:
            raise invalid("program header %d: note segment lies beyond the end of the file" % index)
        namesz, descsz, ntype = _NOTE_HEADER.unpack_from(head)
        if namesz != len(abi.NOTE_NAME) or head[12:18] != abi.NOTE_NAME or ntype != note_type:
            continue
        content_offset = -(-abi.NOTE_HEADER_SIZE // align) * align
        size = descsz - (content_offset - abi.NOTE_HEADER_SIZE)
        if (not 1 <= descsz <= max_descsz or filesz < abi.NOTE_HEADER_SIZE + descsz
                or size < 0):
            raise invalid("program header %d: %sSolo5 note has a bad size (%d)"
                          % (index, what, descsz))
        content = _read_at(stream, offset + content_offset, size)
        if len(content) != size:
            raise invalid("program header %d: note segment lies beyond the end of the file" % index)
        return content
    return None


def _abi_note(stream, phdrs, fail, invalid, heads: dict) -> tuple[int, int]:
    content = _find_note(stream, phdrs, abi.ABI1_NOTE_TYPE, abi.ABI1_NOTE_ALIGN,
                         abi.ABI1_NOTE_MAX_DESCSZ, invalid, "", heads)
    if content is None or len(content) < _ABI1.size:
        raise fail("No Solo5 ABI information found in executable")
    target, version, _r0, _r1 = _ABI1.unpack_from(content)
    return target, version


def _manifest_note(stream, phdrs, fail, invalid, heads: dict) -> manifest.Manifest:
    # A manifest too large for its note (more than 63 devices) is refused by
    # Solo5's note reader as an invalid executable; to the operator it is a
    # bad manifest too: the line says both.
    content = _find_note(stream, phdrs, abi.MFT1_NOTE_TYPE, abi.MFT1_NOTE_ALIGN,
                         abi.MFT1_NOTE_MAX_DESCSZ, invalid, "Solo5 manifest is invalid: ",
                         heads)
    if content is None:
        raise fail("No Solo5 manifest found in executable")
    try:
        return manifest.parse(content)
    except manifest.ManifestError as exc:
        raise fail(str(exc)) from None


def _load_segments(stream, phdrs, abi_version: int, invalid) -> tuple[tuple[Segment, ...], int]:
    """The PT_LOAD rules of spt-abi §2 that hold for any memory size, by the
    loader of `abi_version`: ABI 2 (Solo5 v0.8.0 on) skips a PT_LOAD with
    p_filesz == 0; ABI 1 (v0.6.0-v0.7.5) checks, maps and protects every
    PT_LOAD, bss-only ones included (their data offset is never read)."""
    file_size = os.fstat(stream.fileno()).st_size
    skip_empty = abi.ABI_VERSIONS[abi_version].skips_empty_load
    segments, prev_vaddr, prev_end = [], 0, 0
    for index, ph in enumerate(phdrs):
        p_type, flags, offset, vaddr, _paddr, filesz, memsz, align = ph
        if p_type != PT_LOAD or (filesz == 0 and skip_empty):
            continue
        where = "program header %d" % index
        if vaddr < abi.GUEST_MIN_ADDR:
            raise invalid("%s: p_vaddr %#x is below %#x" % (where, vaddr, abi.GUEST_MIN_ADDR))
        if vaddr < prev_vaddr:
            raise invalid("%s: segments are not in ascending address order" % where)
        if align == 0 or align & (align - 1):
            raise invalid("%s: p_align %#x is not a power of two" % (where, align))
        start = vaddr & ~(align - 1)
        if start < abi.GUEST_MIN_ADDR:
            raise invalid("%s: segment start %#x (p_vaddr aligned down to p_align) is below %#x"
                          % (where, start, abi.GUEST_MIN_ADDR))
        if start < prev_end:
            raise invalid("%s: segment at %#x overlaps the one before it" % (where, start))
        if vaddr + filesz > _U64_MAX:
            raise invalid("%s: p_vaddr + p_filesz overflows" % where)
        if memsz < filesz:
            raise invalid("%s: p_memsz is smaller than p_filesz" % where)
        end = -(-(vaddr + memsz) // align) * align
        if end > _U64_MAX:
            raise invalid("%s: segment end overflows" % where)
        if start % abi.PAGE_SIZE or end % abi.PAGE_SIZE:
            raise invalid("%s: segment %#x-%#x is not page-aligned" % (where, start, end))
        if flags & PF_W and flags & PF_X:
            raise invalid("%s: phdr[%d] requests WRITE and EXEC permissions" % (where, index))
        if filesz == 0:
            offset = 0  # nothing is read: a bss-only segment's offset is not the file's
        elif offset + filesz > file_size:
            raise invalid("%s: short read: segment data lies beyond the end of the file" % where)
        segments.append(Segment(index=index, offset=offset, vaddr=vaddr, filesz=filesz,
                                memsz=memsz, start=start, end=end, flags=flags))
        prev_vaddr, prev_end = vaddr, end
    if not segments:
        raise invalid("no loadable segments")
    return tuple(segments), prev_end
