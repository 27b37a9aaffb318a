"""The full check of a unikernel ELF: every rule of the spt ABI (docs/abi.md,
§1 and §2), by the loader of the ABI version the image asks for.

What a launch runs when the launch cache does not know the kernel (and what
`spt inspect` and `spt unit check` run); `spt.image.load` is its entry.
pyelftools reads the ELF header; the program header table is read in one
piece and unpacked with struct, so an image with 65535 headers is checked in
a time linear in their number and small (pyelftools builds an object per
header). Each check is a small function that raises `ImageError` with the
file, `Invalid or unsupported executable` (the words of Solo5's loader, which
scripts look for), the program header index where one applies, and what was
wrong.
"""

import os
import struct

from elftools.common.exceptions import ELFError
from elftools.construct.core import ConstructError
from elftools.elf.elffile import ELFFile

from spt import abi, manifest
from spt.image import INVALID, PF_W, PF_X, Image, ImageError, Segment, open_kernel

PT_LOAD, PT_NOTE = 1, 4
# Elf64_Phdr (p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz,
# p_align), a note's header, the ABI1 note
_PHDR = struct.Struct("<IIQQQQQQ")
_NOTE_HEADER = struct.Struct("<III")
_ABI1 = struct.Struct("<IIII")
_U64_MAX = (1 << 64) - 1


def load(path: str, stream=None) -> Image:
    """Read and check the image at `path` (from `stream` if one is open)."""
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
