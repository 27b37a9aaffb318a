"""elfcraft: make broken (or differently shaped) unikernels from good ones.

Small pure functions over the bytes of an ELF64 little-endian file, such as a
kit guest (`guests/out/*.spt`). Each takes `data: bytes` and returns new
bytes (or plain facts); nothing is written to disk and nothing is imported
from `spt`, so a test that builds an image here does not trust the code it
tests. The layout comes from the ELF64 specification and spt-abi §1.

Typical use:

    data = Path(guest("hello")).read_bytes()
    bad = set_abi1(data, target=1)                 # an hvt image
    bad = set_phdr(data, load_segments(data)[0], p_flags=PF_R | PF_W | PF_X)
    bad = set_manifest_entry(data, 0, type=MFT_DEV_BLOCK_BASIC)
    bad = with_manifest(data, build_manifest([("storage", MFT_DEV_BLOCK_BASIC)]))

Fields are named as in <elf.h> (`e_phnum`, `p_filesz`, ...); `e_ident`
bytes are reachable as `ei_class`, `ei_data`, `ei_version`, `ei_osabi`.
Functions that look for a Solo5 note use the same rule as the loader: the
first note of each PT_NOTE segment, named "Solo5", of the given n_type.
"""

from __future__ import annotations

import os
import struct

# ELF64 header and program header (<elf.h>: Elf64_Ehdr, Elf64_Phdr).
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
EHDR_FIELDS = ("e_ident", "e_type", "e_machine", "e_version", "e_entry", "e_phoff",
               "e_shoff", "e_flags", "e_ehsize", "e_phentsize", "e_phnum",
               "e_shentsize", "e_shnum", "e_shstrndx")
IDENT_OFFSETS = {"ei_class": 4, "ei_data": 5, "ei_version": 6, "ei_osabi": 7}
PHDR = struct.Struct("<IIQQQQQQ")
PHDR_FIELDS = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz",
               "p_memsz", "p_align")
assert EHDR.size == 64 and PHDR.size == 56

ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_EXEC, ET_DYN = 2, 3
EM_386, EM_X86_64, EM_AARCH64 = 3, 62, 183
# The machine a kernel for this host carries (spt/arch/).
EM_HOST = {"x86_64": EM_X86_64, "aarch64": EM_AARCH64}[os.uname().machine]
PT_NULL, PT_LOAD, PT_NOTE, PT_INTERP = 0, 1, 4, 3
PF_X, PF_W, PF_R = 1, 2, 4

# Solo5 notes (spt-abi §1.1).
NOTE_HEADER = struct.Struct("<III")  # n_namesz, n_descsz, n_type
NOTE_NAME = b"Solo5\0"
NOTE_HEADER_SIZE = 20  # the 12-byte header plus "Solo5\0" padded to 8
ABI1 = 0x31494241
MFT1 = 0x3154464D
NOTE_ALIGN = {ABI1: 4, MFT1: 8}
ABI1_CONTENT = struct.Struct("<IIII")  # abi_target, abi_version, reserved0, reserved1
ABI1_FIELDS = ("target", "version", "reserved0", "reserved1")

# The manifest (spt-abi §1.2).
MFT_HEADER = struct.Struct("<II")  # version, entries
MFT_ENTRY_SIZE = 104
MFT_NAME_SIZE = 68
MFT_TYPE_OFFSET = 68
MFT_ATTACHED_OFFSET = 96
MFT_DEV_BLOCK_BASIC = 1
MFT_DEV_NET_BASIC = 2
MFT_RESERVED_FIRST = 0x40000000


class CraftError(ValueError):
    """The input does not have the shape a function needs (a test bug)."""


def patch(data: bytes, offset: int, raw: bytes) -> bytes:
    """`data` with `raw` written at `offset` (the file grows if needed)."""
    if offset > len(data):
        data = data + bytes(offset - len(data))
    return data[:offset] + raw + data[offset + len(raw):]


def truncate(data: bytes, size: int) -> bytes:
    """The first `size` bytes."""
    return data[:size]


def pad_to(data: bytes, align: int) -> bytes:
    """`data` zero-padded to a multiple of `align`."""
    return data + bytes(-len(data) % align)


# --- ELF header ---------------------------------------------------------

def ehdr(data: bytes) -> dict:
    """The ELF header as a dict of its fields (plus the ei_* ident bytes)."""
    fields = dict(zip(EHDR_FIELDS, EHDR.unpack_from(data, 0)))
    for name, offset in IDENT_OFFSETS.items():
        fields[name] = data[offset]
    return fields


def set_ehdr(data: bytes, **fields) -> bytes:
    """Change ELF header fields: `set_ehdr(data, e_type=ET_DYN, ei_class=1)`."""
    values = dict(zip(EHDR_FIELDS, EHDR.unpack_from(data, 0)))
    ident = bytearray(values["e_ident"])
    for name, value in fields.items():
        if name in IDENT_OFFSETS:
            ident[IDENT_OFFSETS[name]] = value
        elif name in values:
            values[name] = value
        else:
            raise CraftError("no ELF header field %r" % name)
    if "e_ident" not in fields:
        values["e_ident"] = bytes(ident)
    return patch(data, 0, EHDR.pack(*(values[n] for n in EHDR_FIELDS)))


# --- program headers ----------------------------------------------------

def phdr_offset(data: bytes, index: int) -> int:
    """File offset of program header `index`."""
    h = ehdr(data)
    return h["e_phoff"] + index * h["e_phentsize"]


def phdr(data: bytes, index: int) -> dict:
    """Program header `index` as a dict of its fields."""
    return dict(zip(PHDR_FIELDS, PHDR.unpack_from(data, phdr_offset(data, index))))


def phdrs(data: bytes) -> list[dict]:
    """Every program header, in file order, as dicts of fields."""
    return [phdr(data, i) for i in range(ehdr(data)["e_phnum"])]


def set_phdr(data: bytes, index: int, **fields) -> bytes:
    """Change fields of program header `index`: `set_phdr(d, 1, p_align=0)`."""
    values = phdr(data, index)
    for name, value in fields.items():
        if name not in values:
            raise CraftError("no program header field %r" % name)
        values[name] = value
    return patch(data, phdr_offset(data, index), PHDR.pack(*(values[n] for n in PHDR_FIELDS)))


def find_phdrs(data: bytes, p_type: int) -> list[int]:
    """Indexes of the program headers of type `p_type`."""
    return [i for i, ph in enumerate(phdrs(data)) if ph["p_type"] == p_type]


def load_segments(data: bytes) -> list[int]:
    """Indexes of the PT_LOADs the loader copies (p_filesz != 0), in order."""
    return [i for i, ph in enumerate(phdrs(data))
            if ph["p_type"] == PT_LOAD and ph["p_filesz"] != 0]


def append_phdr(data: bytes, **fields) -> bytes:
    """A new program header after the last one (unset fields are 0).

    The table is copied to the end of the file (8-aligned) so there is
    always room; e_phoff and e_phnum follow it."""
    h = ehdr(data)
    table = data[h["e_phoff"]:h["e_phoff"] + h["e_phnum"] * PHDR.size]
    values = {name: 0 for name in PHDR_FIELDS}
    for name, value in fields.items():
        if name not in values:
            raise CraftError("no program header field %r" % name)
        values[name] = value
    data = pad_to(data, 8)
    new_off = len(data)
    data = data + table + PHDR.pack(*(values[n] for n in PHDR_FIELDS))
    return set_ehdr(data, e_phoff=new_off, e_phnum=h["e_phnum"] + 1)


# --- Solo5 notes ----------------------------------------------------------

def note_header(data: bytes, index: int) -> dict:
    """The first note of PT_NOTE `index`: n_namesz, n_descsz, n_type, name."""
    off = phdr(data, index)["p_offset"]
    namesz, descsz, ntype = NOTE_HEADER.unpack_from(data, off)
    return {"n_namesz": namesz, "n_descsz": descsz, "n_type": ntype,
            "name": data[off + 12:off + 20]}


def note_segment(data: bytes, n_type: int) -> int:
    """Index of the PT_NOTE whose first note is the Solo5 note `n_type`."""
    for index in find_phdrs(data, PT_NOTE):
        ph = phdr(data, index)
        if ph["p_filesz"] < NOTE_HEADER_SIZE or ph["p_offset"] + NOTE_HEADER_SIZE > len(data):
            continue
        note = note_header(data, index)
        if note["n_namesz"] == 6 and note["name"][:6] == NOTE_NAME and note["n_type"] == n_type:
            return index
    raise CraftError("no Solo5 note of type %#x" % n_type)


def set_note_header(data: bytes, which: int, /, **fields) -> bytes:
    """Change the header of Solo5 note `which` (ABI1 or MFT1): n_namesz,
    n_descsz, n_type or name (8 bytes, padded with NULs)."""
    index = note_segment(data, which)
    off = phdr(data, index)["p_offset"]
    note = note_header(data, index)
    for name, value in fields.items():
        if name not in note:
            raise CraftError("no note header field %r" % name)
        note[name] = value
    raw = NOTE_HEADER.pack(note["n_namesz"], note["n_descsz"], note["n_type"])
    return patch(data, off, raw + bytes(note["name"]).ljust(8, b"\0")[:8])


def note_content_offset(data: bytes, n_type: int) -> int:
    """File offset where the content of Solo5 note `n_type` starts."""
    align = NOTE_ALIGN[n_type]
    start = phdr(data, note_segment(data, n_type))["p_offset"]
    return start + -(-NOTE_HEADER_SIZE // align) * align


def note_content(data: bytes, n_type: int) -> bytes:
    """The content of Solo5 note `n_type` (n_descsz minus alignment padding)."""
    index = note_segment(data, n_type)
    off = note_content_offset(data, n_type)
    pad = off - phdr(data, index)["p_offset"] - NOTE_HEADER_SIZE
    return data[off:off + note_header(data, index)["n_descsz"] - pad]


def replace_note(data: bytes, n_type: int, content: bytes, *, n_descsz: int | None = None,
                 p_filesz: int | None = None) -> bytes:
    """Solo5 note `n_type` with new `content`, of any size.

    A fresh note is appended at the end of the file and its PT_NOTE is
    pointed at it (a note segment need not lie inside a PT_LOAD). n_descsz
    and p_filesz default to the consistent values."""
    index = note_segment(data, n_type)
    align = NOTE_ALIGN[n_type]
    pad = -NOTE_HEADER_SIZE % align
    descsz = pad + len(content) if n_descsz is None else n_descsz
    note = (NOTE_HEADER.pack(len(NOTE_NAME), descsz, n_type) + NOTE_NAME.ljust(8, b"\0")
            + bytes(pad) + content)
    data = pad_to(data, 8)
    offset = len(data)
    data = data + note
    filesz = len(note) if p_filesz is None else p_filesz
    return set_phdr(data, index, p_offset=offset, p_filesz=filesz, p_memsz=filesz)


# --- the ABI1 note ---------------------------------------------------------

def abi1(data: bytes) -> dict:
    """The ABI1 content: target, version, reserved0, reserved1."""
    return dict(zip(ABI1_FIELDS, ABI1_CONTENT.unpack_from(data, note_content_offset(data, ABI1))))


def set_abi1(data: bytes, **fields) -> bytes:
    """Change the ABI1 content: `set_abi1(data, target=1, version=3)`."""
    values = abi1(data)
    for name, value in fields.items():
        if name not in values:
            raise CraftError("no ABI1 field %r" % name)
        values[name] = value
    raw = ABI1_CONTENT.pack(*(values[n] for n in ABI1_FIELDS))
    return patch(data, note_content_offset(data, ABI1), raw)


# --- the manifest -------------------------------------------------------------

def manifest_offset(data: bytes) -> int:
    """File offset of the manifest (the MFT1 note's content)."""
    return note_content_offset(data, MFT1)


def manifest_bytes(data: bytes) -> bytes:
    """The manifest as stored in the image."""
    return note_content(data, MFT1)


def set_manifest_header(data: bytes, **fields) -> bytes:
    """Change the manifest header in place: version, entries."""
    off = manifest_offset(data)
    values = dict(zip(("version", "entries"), MFT_HEADER.unpack_from(data, off)))
    for name, value in fields.items():
        if name not in values:
            raise CraftError("no manifest header field %r" % name)
        values[name] = value
    return patch(data, off, MFT_HEADER.pack(values["version"], values["entries"]))


def manifest_entry_offset(data: bytes, index: int) -> int:
    """File offset of manifest entry `index`."""
    return manifest_offset(data) + MFT_HEADER.size + index * MFT_ENTRY_SIZE


def set_manifest_entry(data: bytes, index: int, *, name: bytes | str | None = None,
                       type: int | None = None, attached: int | None = None) -> bytes:
    """Change a manifest entry in place. `name` is written as given, padded
    with NULs to 68 bytes (pass 68 bytes to leave no terminator)."""
    off = manifest_entry_offset(data, index)
    if name is not None:
        raw = name.encode() if isinstance(name, str) else name
        data = patch(data, off, raw.ljust(MFT_NAME_SIZE, b"\0")[:MFT_NAME_SIZE])
    if type is not None:
        data = patch(data, off + MFT_TYPE_OFFSET, struct.pack("<I", type))
    if attached is not None:
        data = patch(data, off + MFT_ATTACHED_OFFSET, bytes([attached]))
    return data


def build_manifest(devices=(), *, version: int = 1, entries: int | None = None,
                   hostfd: int = -1) -> bytes:
    """Manifest content with the reserved first entry and `devices`, a
    sequence of (name, type) pairs; `entries` overrides the header count.
    Every entry gets `hostfd` (the kit writes -1) and attached = 0."""
    records = [(b"", MFT_RESERVED_FIRST)] + [
        (n.encode() if isinstance(n, str) else n, t) for n, t in devices]
    count = len(records) if entries is None else entries
    out = [MFT_HEADER.pack(version, count)]
    for name, type_ in records:
        out.append(name.ljust(MFT_NAME_SIZE, b"\0")[:MFT_NAME_SIZE]
                   + struct.pack("<I16sq8x", type_, b"", hostfd))
    return b"".join(out)


def with_manifest(data: bytes, content: bytes, **sizes) -> bytes:
    """The image with manifest `content` (any size) in place of its own;
    `n_descsz=` / `p_filesz=` override the note's sizes."""
    return replace_note(data, MFT1, content, **sizes)
