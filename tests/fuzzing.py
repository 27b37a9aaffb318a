"""fuzzing: a mutation fuzzer over unikernel images, and a reference verdict.

Two halves, both plain functions over bytes:

- `mutate(data, rng)` breaks a good image (a kit guest) in the ways a hostile
  or damaged file can be broken: ELF header fields, program header fields,
  overlapping or descending segments, huge sizes and offsets, note headers
  and contents, manifest headers and entries, rebuilt manifests of any size,
  truncations, stray bytes, extra program headers. Cases are derived from
  (seed, guest, index) alone, so any one case can be rebuilt for replay:

      .venv/bin/python tests/fuzzing.py SEED GUEST INDEX OUT.spt

- `spec_verdict(data, mem_size)` decides, from spt-abi §1-§2 read on its
  own (this module imports nothing from `spt`), whether a tender must accept
  the image and what it must load. The fuzz tests compare the real loader
  with it, so a check that goes missing (a W+X segment let through, an
  overlap not seen) fails a test, not only a crash.

Byte surgery comes from elfcraft (the ELF64 field helpers the image tests use).
"""

from __future__ import annotations

import random
import struct
import sys
from typing import NamedTuple

import elfcraft as ec

U64_TOP = (1 << 64) - 1
GUEST_MIN_ADDR = 0x100000
PAGE = 4096
NOTE_HEADER_SIZE = 20
ABI1_MAX_DESCSZ, MFT1_MAX_DESCSZ = 32, 6668
MFT_MAX_ENTRIES = 64

# What elfcraft raises when a previous mutation left no shape to work on
# (no note any more, program headers beyond the end of the file...).
SHAPE_ERRORS = (ec.CraftError, struct.error, IndexError, ValueError, OverflowError)

EHDR_WIDTHS = {
    "e_type": 16, "e_machine": 16, "e_version": 32, "e_entry": 64, "e_phoff": 64,
    "e_shoff": 64, "e_flags": 32, "e_ehsize": 16, "e_phentsize": 16, "e_phnum": 16,
    "e_shentsize": 16, "e_shnum": 16, "e_shstrndx": 16,
    "ei_class": 8, "ei_data": 8, "ei_version": 8, "ei_osabi": 8,
}
PHDR_WIDTHS = {
    "p_type": 32, "p_flags": 32, "p_offset": 64, "p_vaddr": 64, "p_paddr": 64,
    "p_filesz": 64, "p_memsz": 64, "p_align": 64,
}


# --- values -------------------------------------------------------------------

def interesting(rng: random.Random, bits: int, original: int, file_size: int) -> int:
    """A value likely to sit on a boundary some check must get right."""
    top = (1 << bits) - 1
    pool = (
        0, 1, 2, 3, 4, 6, 7, 8, 11, 12, 19, 20, 24, 32, 56, 64, 0x7F, 0x80, 0xFF, 0x100,
        0xFFF, 0x1000, 0x1001, 0xFFFF, 0x10000, GUEST_MIN_ADDR - 1, GUEST_MIN_ADDR,
        GUEST_MIN_ADDR + 1, GUEST_MIN_ADDR + PAGE, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
        1 << 32, 1 << 40, (1 << 47) - PAGE, 1 << 63, top, top - 1, top - 0xFFF,
        (512 << 20) - 1, 512 << 20, (2 << 20), original - 1, original + 1,
        original - PAGE, original + PAGE, original ^ (1 << rng.randrange(bits)),
        original * 2, file_size - 1, file_size, file_size + 1, rng.randrange(top + 1),
    )
    return rng.choice(pool) & top


# --- mutators: (data, rng) -> (data, what was done) --------------------------

def m_ehdr_field(data, rng):
    field = rng.choice(sorted(EHDR_WIDTHS))
    value = interesting(rng, EHDR_WIDTHS[field], ec.ehdr(data)[field], len(data))
    return ec.set_ehdr(data, **{field: value}), "ehdr %s=%#x" % (field, value)


def m_magic(data, rng):
    at = rng.randrange(4)
    value = rng.randrange(256)
    return ec.patch(data, at, bytes([value])), "magic byte %d=%#x" % (at, value)


def m_phdr_field(data, rng):
    index = rng.randrange(ec.ehdr(data)["e_phnum"])
    field = rng.choice(sorted(PHDR_WIDTHS))
    value = interesting(rng, PHDR_WIDTHS[field], ec.phdr(data, index)[field], len(data))
    return ec.set_phdr(data, index, **{field: value}), "phdr %d %s=%#x" % (index, field, value)


def m_segment_flags(data, rng):
    index = rng.choice(ec.find_phdrs(data, ec.PT_LOAD))
    flags = rng.randrange(8)
    return ec.set_phdr(data, index, p_flags=flags), "phdr %d p_flags=%d" % (index, flags)


def m_overlap(data, rng):
    """Two loadable segments made to overlap, touch, or run backwards."""
    loads = ec.find_phdrs(data, ec.PT_LOAD)
    i, j = sorted(rng.sample(loads, 2))
    a, b = ec.phdr(data, i), ec.phdr(data, j)
    how = rng.choice(("same-vaddr", "inside", "grow-first", "swap", "below-previous"))
    if how == "same-vaddr":
        return ec.set_phdr(data, j, p_vaddr=a["p_vaddr"]), "phdr %d p_vaddr = phdr %d's" % (j, i)
    if how == "inside":
        vaddr = a["p_vaddr"] + rng.choice((0, 8, PAGE // 2, PAGE)) * rng.randrange(2)
        return ec.set_phdr(data, j, p_vaddr=vaddr), "phdr %d p_vaddr=%#x inside %d" % (j, vaddr, i)
    if how == "grow-first":
        memsz = b["p_vaddr"] - a["p_vaddr"] + rng.choice((1, PAGE, b["p_memsz"]))
        return ec.set_phdr(data, i, p_memsz=memsz), "phdr %d p_memsz=%#x over %d" % (i, memsz, j)
    if how == "swap":
        return swap_phdrs(data, i, j), "swap phdrs %d and %d" % (i, j)
    vaddr = a["p_vaddr"] - PAGE
    return ec.set_phdr(data, j, p_vaddr=vaddr), "phdr %d p_vaddr=%#x below %d" % (j, vaddr, i)


def m_huge(data, rng):
    index = rng.randrange(ec.ehdr(data)["e_phnum"])
    field = rng.choice(("p_filesz", "p_memsz", "p_offset", "p_align", "p_vaddr"))
    value = rng.choice((1 << 63, U64_TOP, U64_TOP - 0xFFF, 1 << 40, 1 << 47, len(data) * 1000,
                        0xFFFFFFFF, (1 << 64) - GUEST_MIN_ADDR))
    what = "phdr %d %s=%#x (huge)" % (index, field, value)
    return ec.set_phdr(data, index, **{field: value}), what


def m_note_header(data, rng):
    ntype = rng.choice((ec.ABI1, ec.MFT1))
    field = rng.choice(("n_namesz", "n_descsz", "n_type", "name"))
    if field == "name":
        value = rng.choice((b"Solo5\0\0\0", b"solo5\0\0\0", b"Solo5xyz", b"Solo\0\0\0\0",
                            bytes(rng.randrange(256) for _ in range(8))))
        return ec.set_note_header(data, ntype, name=value), "note %#x name=%r" % (ntype, value)
    original = ec.note_header(data, ec.note_segment(data, ntype))[field]
    value = rng.choice((0, 1, 5, 6, 7, 15, 16, 17, 31, 32, 33, 4, 8, 6667, 6668, 6669,
                        ec.ABI1, ec.MFT1, 0xFFFFFFFF, interesting(rng, 32, original, len(data))))
    what = "note %#x %s=%#x" % (ntype, field, value)
    return ec.set_note_header(data, ntype, **{field: value}), what


def m_note_segment(data, rng):
    ntype = rng.choice((ec.ABI1, ec.MFT1))
    index = ec.note_segment(data, ntype)
    ph = ec.phdr(data, index)
    descsz = ec.note_header(data, index)["n_descsz"]
    field = rng.choice(("p_filesz", "p_filesz", "p_offset"))
    if field == "p_filesz":
        value = rng.choice((0, 11, 12, 13, 19, 20, 21, 20 + descsz - 1, 20 + descsz,
                            20 + descsz + 4, 1 << 63))
    else:
        value = rng.choice((ph["p_offset"] + 4, ph["p_offset"] - 4, len(data) - 12, len(data),
                            len(data) + 8, 0, U64_TOP))
    return ec.set_phdr(data, index, **{field: value}), "note %#x phdr %d %s=%#x" % (
        ntype, index, field, value)


def m_abi1(data, rng):
    field = rng.choice(("target", "version", "reserved0", "reserved1"))
    value = rng.choice((0, 1, 2, 3, 4, 5, 6, 7, 0x80000002, 0xFFFFFFFF))
    return ec.set_abi1(data, **{field: value}), "abi1 %s=%#x" % (field, value)


def m_manifest_header(data, rng):
    field = rng.choice(("version", "entries"))
    value = rng.choice((0, 1, 2, 3, 62, 63, 64, 65, 0x80000000, 0xFFFFFFFF))
    return ec.set_manifest_header(data, **{field: value}), "manifest %s=%d" % (field, value)


def m_manifest_entry(data, rng):
    entries = struct.unpack_from("<I", data, ec.manifest_offset(data) + 4)[0]
    index = rng.randrange(min(entries, 66) + 2)
    what = rng.choice(("name", "type", "attached", "hostfd", "union"))
    off = ec.manifest_entry_offset(data, index)
    if what == "name":
        name = rng.choice((b"", b"x", b"storage", b"service0", b"A" * 67, b"A" * 68,
                           b"bad name!", b"\xff\xfe",
                           bytes(rng.randrange(1, 256) for _ in range(68))))
        what = "entry %d name=%r" % (index, name[:12])
        return ec.set_manifest_entry(data, index, name=name), what
    if what == "type":
        value = rng.choice((0, 1, 2, 3, 0x40000000, 0x40000001, 0xFFFFFFFF))
        return ec.set_manifest_entry(data, index, type=value), "entry %d type=%#x" % (index, value)
    if what == "attached":
        value = rng.choice((0, 1, 2, 0xFF))
        what = "entry %d attached=%d" % (index, value)
        return ec.set_manifest_entry(data, index, attached=value), what
    if what == "hostfd":
        value = rng.choice((0, 1, 2, 3, -1, 0x7FFFFFFF, -(1 << 63)))
        what = "entry %d hostfd=%d" % (index, value)
        return ec.patch(data, off + 88, struct.pack("<q", value)), what
    raw = bytes(rng.randrange(256) for _ in range(16))
    return ec.patch(data, off + 72, raw), "entry %d union=%s" % (index, raw.hex())


def m_manifest_rebuild(data, rng):
    """A whole new manifest, of any size, with sizes that may disagree."""
    count = rng.choice((0, 1, 2, 3, 62, 63, 64, 65))
    kinds = (ec.MFT_DEV_BLOCK_BASIC, ec.MFT_DEV_NET_BASIC, 0, 3, ec.MFT_RESERVED_FIRST)
    devices = [(rng.choice(("d%d" % n, "storage", "service0", "")), rng.choice(kinds))
               for n in range(count)]
    overrides = {}
    if rng.random() < 0.3:
        overrides["entries"] = rng.choice((0, count, count + 1, count + 2, 65, 0xFFFFFFFF))
    if rng.random() < 0.2:
        overrides["version"] = rng.choice((0, 2, 0xFFFFFFFF))
    content = ec.build_manifest(devices, **overrides)
    if rng.random() < 0.2:
        content = content[:rng.randrange(len(content) + 1)] + bytes(rng.randrange(9))
    sizes = {}
    if rng.random() < 0.25:
        sizes["n_descsz"] = rng.choice((0, 1, 3, 4, 8, len(content), len(content) + 3,
                                        len(content) + 5, 6668, 6669, 0xFFFFFFFF))
    if rng.random() < 0.25:
        sizes["p_filesz"] = rng.choice((0, 11, 19, 24, len(content) + 23, 1 << 62))
    return ec.with_manifest(data, content, **sizes), "manifest rebuilt: %d devices %s %s" % (
        count, overrides, sizes)


def m_truncate(data, rng):
    hot = [0, 4, 16, 63, 64, 65, len(data) - 1, len(data) // 2]
    h = ec.ehdr(data)
    hot += [h["e_phoff"] + k * 56 + d for k in range(h["e_phnum"] + 1) for d in (-1, 0, 1)]
    for ph in ec.phdrs(data):
        hot += [ph["p_offset"] + d for d in (0, 12, 19, 20, 23, 24)]
        hot += [ph["p_offset"] + ph["p_filesz"] - d for d in (0, 1)]
    size = rng.choice(hot) if rng.random() < 0.7 else rng.randrange(len(data))
    size = max(0, min(size, len(data)))
    return ec.truncate(data, size), "truncate to %d" % size


def m_bytes(data, rng):
    out, spots = bytearray(data), []
    for _ in range(rng.randrange(1, 9)):
        limit = min(len(out), 4096) if rng.random() < 0.6 else len(out)
        if not limit:
            break
        at = rng.randrange(limit)
        if rng.random() < 0.5:
            out[at] ^= 1 << rng.randrange(8)
        else:
            out[at] = rng.randrange(256)
        spots.append(at)
    return bytes(out), "bytes changed at %s" % spots


def m_append_phdr(data, rng):
    p_type = rng.choice((ec.PT_LOAD, ec.PT_LOAD, ec.PT_NOTE, ec.PT_NOTE, ec.PT_INTERP, 0x6474E551,
                         rng.randrange(1 << 32)))
    fields = {"p_type": p_type}
    for field in ("p_flags", "p_offset", "p_vaddr", "p_filesz", "p_memsz", "p_align"):
        fields[field] = interesting(rng, PHDR_WIDTHS[field], 0, len(data))
    if rng.random() < 0.5:  # a plausible one, so it gets past the first checks
        last = max(ec.find_phdrs(data, ec.PT_LOAD), default=0)
        top = ec.phdr(data, last)
        vaddr = (top["p_vaddr"] + top["p_memsz"] + 2 * PAGE) & ~(PAGE - 1)
        fields.update(p_vaddr=vaddr, p_align=PAGE, p_offset=rng.randrange(len(data)),
                      p_filesz=rng.choice((1, PAGE, len(data))), p_memsz=PAGE * rng.randrange(1, 4))
    out = ec.append_phdr(data, **fields)
    if rng.random() < 0.4:  # ... or first, where it is seen before the real ones
        out = swap_phdrs(out, 0, ec.ehdr(out)["e_phnum"] - 1)
    return out, "extra phdr %s" % {k: hex(v) for k, v in fields.items()}


def m_duplicate_note(data, rng):
    """A second Solo5 note of the same type, placed before the real one."""
    ntype = rng.choice((ec.ABI1, ec.MFT1))
    index = ec.note_segment(data, ntype)
    ph = ec.phdr(data, index)
    out = ec.append_phdr(data, **ph)
    out = swap_phdrs(out, 0, ec.ehdr(out)["e_phnum"] - 1)
    if ntype == ec.ABI1:
        version = rng.choice((1, 2, 3))
        out = ec.replace_note(out, ec.ABI1, struct.pack("<IIII", 2, version, 0, 0))
    else:
        out = ec.with_manifest(out, ec.build_manifest([("extra", ec.MFT_DEV_BLOCK_BASIC)]))
    return out, "duplicate note %#x" % ntype


def m_grow(data, rng):
    extra = bytes(rng.randrange(256) for _ in range(rng.choice((1, 7, 64, 4096))))
    return data + extra, "appended %d bytes" % len(extra)


def swap_phdrs(data: bytes, i: int, j: int) -> bytes:
    a, b = ec.phdr(data, i), ec.phdr(data, j)
    return ec.set_phdr(ec.set_phdr(data, i, **b), j, **a)


MUTATORS = (
    (m_ehdr_field, 3), (m_magic, 1), (m_phdr_field, 5), (m_segment_flags, 2), (m_overlap, 3),
    (m_huge, 3), (m_note_header, 3), (m_note_segment, 2), (m_abi1, 2), (m_manifest_header, 2),
    (m_manifest_entry, 4), (m_manifest_rebuild, 3), (m_truncate, 3), (m_bytes, 3),
    (m_append_phdr, 2), (m_duplicate_note, 1), (m_grow, 1),
)


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """1 to 3 mutations; one that finds no shape to work on becomes a byte change."""
    functions = [f for f, _ in MUTATORS]
    weights = [w for _, w in MUTATORS]
    log = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        mutator = rng.choices(functions, weights)[0]
        try:
            data, what = mutator(data, rng)
        except SHAPE_ERRORS:
            data, what = m_bytes(data, rng)
        log.append(what)
    return data, log


class Case(NamedTuple):
    guest: str
    index: int
    data: bytes
    mutations: tuple[str, ...]

    def label(self, seed) -> str:
        return "seed=%s guest=%s case=%d [%s] (replay: python tests/fuzzing.py %s %s %d OUT)" % (
            seed, self.guest, self.index, "; ".join(self.mutations), seed, self.guest, self.index)


def make_case(seed, guest: str, original: bytes, index: int) -> Case:
    """Case `index` for `guest`: the same bytes for the same (seed, guest, index)."""
    rng = random.Random("%s/%s/%d" % (seed, guest, index))
    data, log = mutate(original, rng)
    return Case(guest, index, data, tuple(log))


# --- the reference verdict (spt-abi §1-§2) -----------------------------------

class Verdict(NamedTuple):
    ok: bool
    why: str = ""
    entry: int = 0
    kernel_end: int = 0
    # (program header index, p_offset, p_vaddr, p_filesz, p_memsz, start, end, p_flags)
    segments: tuple = ()
    devices: tuple = ()  # (name, type) of the manifest's real devices


def _reject(why: str) -> Verdict:
    return Verdict(False, why)


def _find_note(data, phdrs, n_type, align, max_descsz):
    """(content, None), (None, None) if absent, or (None, why) to reject."""
    for index, ph in enumerate(phdrs):
        if ph["p_type"] != ec.PT_NOTE:
            continue
        filesz, off = ph["p_filesz"], ph["p_offset"]
        if filesz < 12:
            return None, "phdr %d: note segment shorter than 12 bytes" % index
        if filesz < NOTE_HEADER_SIZE:
            continue
        head = data[off:off + NOTE_HEADER_SIZE]
        if len(head) < NOTE_HEADER_SIZE:
            return None, "phdr %d: note beyond the end of the file" % index
        namesz, descsz, ntype = struct.unpack_from("<III", head)
        if namesz != 6 or head[12:18] != b"Solo5\0" or ntype != n_type:
            continue
        if not 1 <= descsz <= max_descsz or filesz < NOTE_HEADER_SIZE + descsz:
            return None, "phdr %d: bad n_descsz %d" % (index, descsz)
        content_at = -(-NOTE_HEADER_SIZE // align) * align
        size = descsz - (content_at - NOTE_HEADER_SIZE)
        if size < 0:
            return None, "phdr %d: n_descsz %d shorter than the padding" % (index, descsz)
        content = data[off + content_at:off + content_at + size]
        if len(content) != size:
            return None, "phdr %d: note content beyond the end of the file" % index
        return content, None
    return None, None


def spec_manifest(content: bytes):
    """The (name, type) tuple of a valid manifest (spt-abi §1.2), or why not."""
    if len(content) < 8:
        return "manifest shorter than its header"
    version, entries = struct.unpack_from("<II", content)
    if version != 1:
        return "manifest version %d" % version
    if entries > MFT_MAX_ENTRIES:
        return "manifest has %d entries" % entries
    if len(content) != 8 + 104 * entries:
        return "manifest size does not match its entries"
    if entries < 1:
        return "manifest has no entries"
    devices, names = [], set()
    for index in range(entries):
        record = content[8 + 104 * index:8 + 104 * (index + 1)]
        name = record[:68]
        (type_,) = struct.unpack_from("<I", record, 68)
        if name[67] != 0:
            return "entry %d name not terminated" % index
        if record[96] != 0:
            return "entry %d attached" % index
        text = name.split(b"\0", 1)[0]
        if index == 0:
            if type_ != ec.MFT_RESERVED_FIRST or text:
                return "entry 0 is not the reserved first entry"
            continue
        if text in names:
            return "entry %d name declared twice" % index
        names.add(text)
        devices.append((text.decode("latin-1"), type_))
    return tuple(devices)


def spec_verdict(data: bytes, mem_size: int) -> Verdict:
    """Must a tender accept `data` with `mem_size` bytes of guest memory?

    Written from spt-abi §1-§2, plus the one rule spt adds: at least one
    loadable segment (there is nothing to run otherwise)."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return _reject("not ELF")
    if data[4] != ec.ELFCLASS64 or data[5] != ec.ELFDATA2LSB:
        return _reject("not ELF64 little-endian")
    h = ec.ehdr(data)
    header_rules = (
        (h["e_version"] == 1, "e_version"), (h["e_ehsize"] == 64, "e_ehsize"),
        (h["e_phentsize"] == 56, "e_phentsize"), (h["e_phnum"] >= 1, "e_phnum"),
        (h["e_type"] == ec.ET_EXEC, "e_type"), (h["e_machine"] == ec.EM_HOST, "e_machine"),
    )
    for ok, field in header_rules:
        if not ok:
            return _reject("bad %s" % field)
    if h["e_phoff"] + 56 * h["e_phnum"] > len(data):
        return _reject("program headers beyond the end of the file")
    phdrs = [dict(zip(ec.PHDR_FIELDS, ec.PHDR.unpack_from(data, h["e_phoff"] + 56 * i)))
             for i in range(h["e_phnum"])]

    abi, why = _find_note(data, phdrs, ec.ABI1, 4, ABI1_MAX_DESCSZ)
    if why:
        return _reject(why)
    if abi is None or len(abi) < 16:
        return _reject("no ABI1 note")
    target, version = struct.unpack_from("<II", abi)
    if target != 2 or version != 2:
        return _reject("ABI target %d version %d" % (target, version))
    mft, why = _find_note(data, phdrs, ec.MFT1, 8, MFT1_MAX_DESCSZ)
    if why:
        return _reject(why)
    if mft is None:
        return _reject("no MFT1 note")
    devices = spec_manifest(mft)
    if isinstance(devices, str):
        return _reject(devices)

    segments, prev_vaddr, prev_end = [], 0, 0
    for index, ph in enumerate(phdrs):
        if ph["p_type"] != ec.PT_LOAD or ph["p_filesz"] == 0:
            continue
        vaddr, filesz, memsz = ph["p_vaddr"], ph["p_filesz"], ph["p_memsz"]
        align, flags, offset = ph["p_align"], ph["p_flags"], ph["p_offset"]
        if vaddr < GUEST_MIN_ADDR or vaddr < prev_vaddr:
            return _reject("phdr %d: p_vaddr" % index)
        if align == 0 or align & (align - 1):
            return _reject("phdr %d: p_align" % index)
        start = vaddr & ~(align - 1)
        if start < GUEST_MIN_ADDR or start < prev_end:
            return _reject("phdr %d: overlap" % index)
        if vaddr >= mem_size or vaddr + filesz > U64_TOP or vaddr + filesz > mem_size:
            return _reject("phdr %d: outside memory" % index)
        if memsz < filesz:
            return _reject("phdr %d: p_memsz < p_filesz" % index)
        end = -(-(vaddr + memsz) // align) * align
        if end > U64_TOP or end > mem_size:
            return _reject("phdr %d: end outside memory" % index)
        if start % PAGE or end % PAGE:
            return _reject("phdr %d: not page-aligned" % index)
        if flags & ec.PF_W and flags & ec.PF_X:
            return _reject("phdr %d: W+X" % index)
        if offset + filesz > len(data):
            return _reject("phdr %d: short read" % index)
        segments.append((index, offset, vaddr, filesz, memsz, start, end, flags))
        prev_vaddr, prev_end = vaddr, end
    if not segments:
        return _reject("no loadable segment")
    if not GUEST_MIN_ADDR <= h["e_entry"] < mem_size:
        return _reject("entry outside memory")
    kernel_end = max(s[6] for s in segments)
    return Verdict(True, "", h["e_entry"], kernel_end, tuple(segments), devices)


def loader_view(image) -> Verdict:
    """The real loader's result in the reference's shape, to compare."""
    segments = tuple((s.index, s.offset, s.vaddr, s.filesz, s.memsz, s.start, s.end, s.flags)
                     for s in image.segments)
    devices = tuple((e.name, e.type) for e in image.manifest.devices)
    return Verdict(True, "", image.entry, image.kernel_end, segments, devices)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: python tests/fuzzing.py SEED GUEST INDEX OUT.spt")
    from pathlib import Path

    seed, guest, index, out = sys.argv[1:]
    original = (Path(__file__).resolve().parent.parent / "guests" / "out"
                / (guest + ".spt")).read_bytes()
    case = make_case(seed, guest, original, int(index))
    Path(out).write_bytes(case.data)
    print("; ".join(case.mutations))
