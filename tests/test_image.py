"""The Image stage: every rule of spt-abi §1 (the file, its notes, the
manifest) and §2 (loading segments), each with a crafted image that breaks
exactly that rule. Most run through `spt.image.load` directly; a few go
through the real `solo5-spt` to pin the one-line refusal."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import elfcraft as ec
from conftest import assert_refused, guest_path, spt_run
from spt import image, manifest
from spt.image import ImageError

MIB = 1 << 20
PAGE = 4096
# The kit's layout (guests/kit/guest.ld): 0 PT_INTERP, 1 text (R-X),
# 2 rodata (R--), 3 data (RW-), 4 ABI1 note, 5 MFT1 note.
TEXT, RODATA, DATA = 1, 2, 3


@pytest.fixture(scope="module")
def hello() -> bytes:
    data = Path(guest_path("hello")).read_bytes()
    # The tests below index program headers by the kit's layout: fail
    # loudly if the kit changes shape instead of testing the wrong thing.
    assert ec.load_segments(data) == [TEXT, RODATA, DATA]
    assert [ph["p_flags"] for ph in ec.phdrs(data)[TEXT:DATA + 1]] == [
        ec.PF_R | ec.PF_X, ec.PF_R, ec.PF_R | ec.PF_W]
    assert ec.note_segment(data, ec.ABI1) == 4 and ec.note_segment(data, ec.MFT1) == 5
    return data


@pytest.fixture
def load(tmp_path):
    """load(data) -> spt.image.load of those bytes, from a real file."""
    paths = []

    def load_bytes(data: bytes) -> image.Image:
        path = tmp_path / ("kernel%d.spt" % len(paths))
        paths.append(str(path))
        path.write_bytes(data)
        return image.load(str(path))

    load_bytes.paths = paths
    return load_bytes


@pytest.fixture
def refused(load):
    """refused(data, *fragments) -> the ImageError message, which must name
    the file and contain every fragment."""

    def check(data: bytes, *fragments: str) -> str:
        with pytest.raises(ImageError) as info:
            load(data)
        message = str(info.value)
        assert message.startswith(load.paths[-1] + ": "), message
        for fragment in fragments:
            assert fragment in message, (fragment, message)
        return message

    return check


def write(tmp_path, data: bytes, name: str = "crafted.spt") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# --- a good image ----------------------------------------------------------

def test_kit_image_loads_with_its_entry_segments_and_kernel_end(hello, load):
    img = load(hello)
    header = ec.ehdr(hello)
    assert img.entry == header["e_entry"] == 0x100000
    assert (img.abi_target, img.abi_version) == (2, 2)
    expected = []
    for index in ec.load_segments(hello):
        ph = ec.phdr(hello, index)
        end = -(-(ph["p_vaddr"] + ph["p_memsz"]) // ph["p_align"]) * ph["p_align"]
        expected.append((index, ph["p_offset"], ph["p_vaddr"], ph["p_filesz"], ph["p_memsz"],
                         ph["p_vaddr"] & ~(ph["p_align"] - 1), end, ph["p_flags"]))
    got = [(s.index, s.offset, s.vaddr, s.filesz, s.memsz, s.start, s.end, s.flags)
           for s in img.segments]
    assert got == expected
    assert [s.perms for s in img.segments] == ["r-x", "r--", "rw-"]
    assert img.kernel_end == expected[-1][6] == 0x103000
    assert img.manifest.devices == ()
    assert img.manifest.entries[0].type == ec.MFT_RESERVED_FIRST


def test_kernel_end_is_the_highest_segment_end_including_bss(hello, load):
    grown = ec.set_phdr(hello, DATA, p_memsz=0x5000)
    assert load(grown).kernel_end == 0x102000 + 0x5000


def test_pt_load_without_file_contents_is_skipped(hello, load):
    # bss-only: below 1 MiB and with p_align 0, which would be refused if
    # the loader looked at it.
    bss_only = ec.append_phdr(hello, p_type=ec.PT_LOAD, p_flags=ec.PF_R | ec.PF_W | ec.PF_X,
                              p_vaddr=0x1000, p_filesz=0, p_memsz=0x1000, p_align=0)
    img = load(bss_only)
    assert [s.index for s in img.segments] == [TEXT, RODATA, DATA]


def test_segments_other_than_pt_load_are_not_loaded(hello, load):
    other = ec.append_phdr(hello, p_type=ec.PT_NULL, p_vaddr=0x10, p_filesz=0x10,
                           p_memsz=0x10, p_flags=ec.PF_W | ec.PF_X)
    assert [s.index for s in load(other).segments] == [TEXT, RODATA, DATA]


def test_image_with_no_loadable_segment_is_refused(hello, refused):
    data = hello
    for index in ec.load_segments(hello):
        data = ec.set_phdr(data, index, p_filesz=0)
    refused(data, "no loadable segments")


# --- §1: the ELF header --------------------------------------------------------

@pytest.mark.parametrize("fields, fragment", [
    ({"ei_class": ec.ELFCLASS32}, "not a 64-bit little-endian ELF file"),
    ({"ei_data": ec.ELFDATA2MSB}, "not a 64-bit little-endian ELF file"),
    ({"e_version": 0}, "e_version is not EV_CURRENT"),
    ({"e_version": 2}, "e_version is not EV_CURRENT"),
    ({"e_ehsize": 52}, "e_ehsize is 52, expected 64"),
    ({"e_phentsize": 32}, "e_phentsize is 32, expected 56"),
    ({"e_phentsize": 64}, "e_phentsize is 64, expected 56"),
    ({"e_phnum": 0}, "no program headers"),
    ({"e_type": ec.ET_DYN}, "not a static executable"),
    ({"e_machine": ec.EM_386}, "Invalid or unsupported executable: built for another architecture"),
], ids=["elfclass32", "big-endian", "e_version-0", "e_version-2", "e_ehsize", "e_phentsize-32",
        "e_phentsize-64", "e_phnum-0", "e_type-dyn", "e_machine-i386"])
def test_elf_header_field_outside_the_abi_is_refused(hello, refused, fields, fragment):
    refused(ec.set_ehdr(hello, **fields), fragment)


def test_ei_osabi_is_not_checked(hello, load):
    assert load(ec.set_ehdr(hello, ei_osabi=97)).entry == 0x100000


@pytest.mark.parametrize("data", [b"", b"\x7fELF", b"#!/bin/sh\necho not a unikernel\n" * 4,
                                  b"\x7fELF\x02\x01\x01" + bytes(9)],
                         ids=["empty", "magic-only", "text", "header-cut"])
def test_file_that_is_not_an_elf_image_is_refused(refused, data):
    refused(data, "not a valid ELF file")


@pytest.mark.parametrize("size", [64, 100, 64 + 56 * 6, 0x2000, 0x2090])
def test_truncated_image_is_refused(hello, refused, size):
    refused(ec.truncate(hello, size))


# --- §1.1: finding a Solo5 note -------------------------------------------------

def decoy_note_first(data: bytes, *, n_namesz=6, name=b"Solo5", n_type=ec.ABI1,
                     n_descsz=0, p_filesz=ec.NOTE_HEADER_SIZE) -> bytes:
    """Turn program header 0 (the PT_INTERP) into a PT_NOTE, walked before
    the real notes, whose first note is built from the arguments."""
    note = ec.NOTE_HEADER.pack(n_namesz, n_descsz, n_type) + name.ljust(8, b"\0")
    data = ec.pad_to(data, 8)
    offset = len(data)
    data = data + note
    return ec.set_phdr(data, 0, p_type=ec.PT_NOTE, p_offset=offset, p_filesz=p_filesz,
                       p_memsz=p_filesz, p_align=4)


@pytest.mark.parametrize("note", [ec.ABI1, ec.MFT1], ids=["abi1", "mft1"])
@pytest.mark.parametrize("filesz", [0, 11])
def test_note_segment_shorter_than_12_bytes_is_refused(hello, refused, note, filesz):
    index = ec.note_segment(hello, note)
    refused(ec.set_phdr(hello, index, p_filesz=filesz),
            "program header %d" % index, "note segment too short")


def test_note_segment_shorter_than_20_bytes_is_skipped(hello, load, refused):
    # A matching ABI1 note header in a 19-byte segment is not looked at...
    real = ec.phdr(hello, ec.note_segment(hello, ec.ABI1))["p_offset"]
    decoy = ec.set_phdr(hello, 0, p_type=ec.PT_NOTE, p_offset=real, p_filesz=19, p_memsz=19)
    assert load(decoy).abi_target == 2
    # ...and if it is the only one, there is no ABI note at all.
    refused(ec.set_phdr(hello, ec.note_segment(hello, ec.ABI1), p_filesz=19),
            "No Solo5 ABI information found in executable")


@pytest.mark.parametrize("decoy", [
    {"n_namesz": 5},
    {"n_namesz": 7},
    {"name": b"Solo6"},
    {"name": b"solo5"},
    {"n_type": 0x32494241},
], ids=["namesz-5", "namesz-7", "name-Solo6", "name-solo5", "type-ABI2"])
def test_first_note_that_is_not_the_one_looked_for_is_skipped(hello, load, decoy):
    # The decoy's n_descsz is 0, which is refused for a note that matches.
    img = load(decoy_note_first(hello, **decoy))
    assert img.abi_target == 2 and img.manifest.devices == ()


def test_matching_note_with_bad_size_before_the_real_one_is_refused(hello, refused):
    # The control for the test above: the same decoy, matching, is refused.
    refused(decoy_note_first(hello), "program header 0", "Solo5 note has a bad size (0)")


@pytest.mark.parametrize("fields, message", [
    ({"n_namesz": 5}, "No Solo5 ABI information found in executable"),
    ({"name": b"Solo6"}, "No Solo5 ABI information found in executable"),
    ({"n_type": 0x12345678}, "No Solo5 ABI information found in executable"),
], ids=["namesz", "name", "type"])
def test_abi_note_that_does_not_match_is_not_found(hello, refused, fields, message):
    refused(ec.set_note_header(hello, ec.ABI1, **fields), message)


@pytest.mark.parametrize("fields", [{"n_namesz": 5}, {"name": b"Solo6"},
                                    {"n_type": 0x12345678}], ids=["namesz", "name", "type"])
def test_manifest_note_that_does_not_match_is_not_found(hello, refused, fields):
    refused(ec.set_note_header(hello, ec.MFT1, **fields), "No Solo5 manifest found in executable")


def test_abi_note_only_the_first_note_of_a_segment_counts(hello, refused):
    # The real ABI1 note pushed to second place behind an unrelated note.
    real = ec.note_content(hello, ec.ABI1)
    other = ec.NOTE_HEADER.pack(4, 4, 1) + b"GNU\0" + b"\0\0\0\0"
    abi = ec.NOTE_HEADER.pack(6, len(real), ec.ABI1) + b"Solo5\0\0\0" + real
    data = ec.pad_to(hello, 8)
    offset = len(data)
    data += other + abi
    data = ec.set_phdr(data, 4, p_offset=offset, p_filesz=len(other + abi))
    refused(data, "No Solo5 ABI information found in executable")


@pytest.mark.parametrize("note, descsz", [
    (ec.ABI1, 0), (ec.ABI1, 33), (ec.ABI1, 0xFFFFFFFF),
    (ec.MFT1, 0), (ec.MFT1, 6669), (ec.MFT1, 0xFFFFFFFF),
], ids=["abi1-0", "abi1-33", "abi1-max32", "mft1-0", "mft1-6669", "mft1-max32"])
def test_note_descsz_zero_or_above_its_maximum_is_refused(hello, refused, note, descsz):
    data = ec.set_note_header(hello, note, n_descsz=descsz)
    # p_filesz large enough that only the maximum can be what refuses it
    data = ec.set_phdr(data, ec.note_segment(hello, note), p_filesz=min(20 + descsz, 1 << 20))
    refused(data, "Solo5 note has a bad size (%d)" % descsz)


@pytest.mark.parametrize("note", [ec.ABI1, ec.MFT1], ids=["abi1", "mft1"])
def test_note_descsz_beyond_segment_filesz_is_refused(hello, refused, note):
    index = ec.note_segment(hello, note)
    filesz = ec.phdr(hello, index)["p_filesz"]
    data = ec.set_note_header(hello, note, n_descsz=filesz - 20 + 1)
    refused(data, "program header %d" % index, "Solo5 note has a bad size")


def test_abi_note_descsz_at_its_maximum_is_accepted(hello, load):
    index = ec.note_segment(hello, ec.ABI1)
    data = ec.set_note_header(hello, ec.ABI1, n_descsz=32)
    data = ec.set_phdr(data, index, p_filesz=20 + 32)
    assert load(data).abi_version == 2


def test_manifest_note_descsz_at_its_maximum_passes_the_note_rules(hello, refused):
    # 6668 is a legal note size, so what refuses it is the manifest's own
    # size rule, not the note's.
    content = ec.manifest_bytes(hello) + bytes(6664 - 112)
    refused(ec.with_manifest(hello, content), "Solo5 manifest is invalid", "does not match")


def test_note_that_lies_beyond_the_end_of_the_file_is_refused(hello, refused):
    index = ec.note_segment(hello, ec.ABI1)
    refused(ec.set_phdr(hello, index, p_offset=len(hello) - 10), "beyond the end of the file")


# --- §1.1: the ABI1 content ------------------------------------------------------

@pytest.mark.parametrize("target", [0, 1, 3, 4, 5, 6, 7])
def test_abi_target_other_than_spt_is_refused(hello, refused, target):
    refused(ec.set_abi1(hello, target=target), "Executable is not for the solo5-spt target")


@pytest.mark.parametrize("version", [0, 3, 0xFFFFFFFF])
def test_abi_version_other_than_1_or_2_is_refused(hello, refused, version):
    refused(ec.set_abi1(hello, version=version),
            "Executable requests unsupported ABI version %d" % version)


def test_abi_reserved_fields_are_not_checked(hello, load):
    assert load(ec.set_abi1(hello, reserved0=7, reserved1=9)).abi_target == 2


# --- §1.2: the manifest -------------------------------------------------------------

def test_manifest_with_devices_is_parsed_with_names_types_and_indexes(hello, load):
    content = ec.build_manifest([("storage", ec.MFT_DEV_BLOCK_BASIC),
                                 ("service0", ec.MFT_DEV_NET_BASIC), ("x" * 67, 1)])
    devices = load(ec.with_manifest(hello, content)).manifest.devices
    assert [(d.index, d.name, d.type, d.attached) for d in devices] == [
        (1, "storage", 1, False), (2, "service0", 2, False), (3, "x" * 67, 1, False)]


def test_manifest_with_64_entries_is_accepted(hello, load):
    content = ec.build_manifest([("d%d" % i, ec.MFT_DEV_BLOCK_BASIC) for i in range(63)])
    assert len(content) + 4 == 6668
    assert len(load(ec.with_manifest(hello, content)).manifest.devices) == 63


def invalid_manifest(refused, data: bytes, detail: str) -> None:
    refused(data, "Solo5 manifest is invalid", detail)


def test_manifest_shorter_than_its_header_is_refused(hello, refused):
    invalid_manifest(refused, ec.with_manifest(hello, b"\x01\0\0\0"), "shorter than its header")


@pytest.mark.parametrize("version", [0, 2, 0xFFFFFFFF])
def test_manifest_version_other_than_1_is_refused(hello, refused, version):
    invalid_manifest(refused, ec.set_manifest_header(hello, version=version),
                     "version %d, expected 1" % version)


def test_manifest_with_more_than_64_entries_is_refused(hello, refused):
    # 65 entries cannot fit a legal MFT1 note, so the header lies; the
    # count rule must still be the one that answers.
    invalid_manifest(refused, ec.set_manifest_header(hello, entries=65), "65 entries, at most 64")


def test_manifest_parser_refuses_65_consistent_entries():
    content = ec.build_manifest([("d%d" % i, ec.MFT_DEV_BLOCK_BASIC) for i in range(64)])
    with pytest.raises(manifest.ManifestError, match="65 entries, at most 64"):
        manifest.parse(content)


@pytest.mark.parametrize("entries, extra", [(2, 0), (0, 104), (1, 8), (1, -1)],
                         ids=["count-2-size-1", "count-0-size-1", "trailing-bytes", "short-entry"])
def test_manifest_size_that_does_not_match_its_entries_is_refused(hello, refused, entries, extra):
    content = ec.build_manifest(entries=entries)
    content = content + bytes(extra) if extra >= 0 else content[:extra]
    invalid_manifest(refused, ec.with_manifest(hello, content), "does not match")


def test_manifest_with_no_entries_is_refused(hello, refused):
    invalid_manifest(refused, ec.with_manifest(hello, struct.pack("<II", 1, 0)), "no entries")


@pytest.mark.parametrize("change", [{"type": ec.MFT_DEV_BLOCK_BASIC}, {"type": 0},
                                    {"name": "storage"}, {"name": b"\0" * 67 + b"x"}],
                         ids=["type-block", "type-0", "named", "name-byte-67"])
def test_manifest_entry_0_that_is_not_the_reserved_first_entry_is_refused(hello, refused, change):
    refused(ec.set_manifest_entry(hello, 0, **change), "Solo5 manifest is invalid", "entry 0")


def test_manifest_entry_0_must_be_reserved_even_when_devices_follow(hello, refused):
    content = ec.build_manifest([("storage", ec.MFT_DEV_BLOCK_BASIC)])
    data = ec.set_manifest_entry(ec.with_manifest(hello, content), 0, type=ec.MFT_DEV_NET_BASIC)
    invalid_manifest(refused, data, "entry 0 must be the reserved first entry")


@pytest.mark.parametrize("second", [ec.MFT_DEV_BLOCK_BASIC, ec.MFT_DEV_NET_BASIC],
                         ids=["same-type", "other-type"])
def test_manifest_with_two_entries_of_one_name_is_refused(hello, refused, second):
    # Options name devices by name: the second entry could never be
    # attached, and the guest would boot with it declared but missing.
    content = ec.build_manifest([("storage", ec.MFT_DEV_BLOCK_BASIC), ("other", 1),
                                 ("storage", second)])
    invalid_manifest(refused, ec.with_manifest(hello, content),
                     "entry 3: name 'storage' is declared twice")


def test_manifest_with_two_entries_of_one_name_is_one_line_from_the_launcher(hello, tmp_path,
                                                                              block_file):
    content = ec.build_manifest([("storage", ec.MFT_DEV_BLOCK_BASIC),
                                 ("storage", ec.MFT_DEV_BLOCK_BASIC)])
    kernel = write(tmp_path, ec.with_manifest(hello, content))
    assert_refused(spt_run("--block:storage=" + block_file(4096), kernel),
                   "Solo5 manifest is invalid", "declared twice")


def test_manifest_name_without_nul_at_byte_67_is_refused(hello, refused):
    content = ec.build_manifest([("y" * 68, ec.MFT_DEV_BLOCK_BASIC)])
    invalid_manifest(refused, ec.with_manifest(hello, content), "entry 1: name is not NUL-terminated")


@pytest.mark.parametrize("index", [0, 1])
def test_manifest_entry_already_marked_attached_is_refused(hello, refused, index):
    content = ec.build_manifest([("storage", ec.MFT_DEV_BLOCK_BASIC)])
    data = ec.set_manifest_entry(ec.with_manifest(hello, content), index, attached=1)
    invalid_manifest(refused, data, "entry %d: already marked attached" % index)


# --- §2: loading segments --------------------------------------------------------------

@pytest.mark.parametrize("index, fields, fragment", [
    (TEXT, {"p_vaddr": 0xFF000}, "p_vaddr 0xff000 is below 0x100000"),
    (TEXT, {"p_vaddr": 0}, "p_vaddr 0x0 is below 0x100000"),
    (DATA, {"p_vaddr": 0x100800}, "not in ascending address order"),
    (TEXT, {"p_align": 0}, "p_align 0x0 is not a power of two"),
    (RODATA, {"p_align": 0x1800}, "p_align 0x1800 is not a power of two"),
    (DATA, {"p_align": 0x3000}, "p_align 0x3000 is not a power of two"),
    (RODATA, {"p_vaddr": 0x100800}, "segment at 0x100000 overlaps the one before it"),
    (RODATA, {"p_align": 0x2000}, "overlaps the one before it"),
    (TEXT, {"p_align": 0x200000}, "segment start 0x0 (p_vaddr aligned down to p_align) is below"),
    (TEXT, {"p_memsz": 0x10}, "p_memsz is smaller than p_filesz"),
    (TEXT, {"p_align": 0x10}, "is not page-aligned"),
    # start 0x102010 is not page-aligned, end 0x103000 is
    (DATA, {"p_vaddr": 0x102010, "p_memsz": 0xFF0, "p_align": 0x10}, "is not page-aligned"),
    (TEXT, {"p_flags": ec.PF_R | ec.PF_W | ec.PF_X}, "requests WRITE and EXEC permissions"),
    (DATA, {"p_flags": ec.PF_W | ec.PF_X}, "requests WRITE and EXEC permissions"),
    # p_memsz stays small: the overflow, not p_memsz < p_filesz, must answer
    (DATA, {"p_filesz": (1 << 64) - 1}, "p_vaddr + p_filesz overflows"),
    (DATA, {"p_vaddr": (1 << 64) - 0x1000, "p_memsz": 0x1000}, "overflows"),
], ids=["vaddr-below-1mib", "vaddr-0", "descending", "align-0", "align-0x1800", "align-0x3000",
        "overlap-by-vaddr", "overlap-by-align", "align-start-below-1mib", "memsz-lt-filesz",
        "align-0x10", "start-not-page-aligned", "wx-text", "wx-data", "filesz-overflow",
        "end-overflow"])
def test_segment_breaking_a_load_rule_is_refused(hello, refused, index, fields, fragment):
    message = refused(ec.set_phdr(hello, index, **fields), fragment)
    assert "program header %d" % index in message


def test_segment_whose_memsz_reaches_into_the_next_is_refused(hello, refused):
    refused(ec.set_phdr(hello, TEXT, p_memsz=0x1001),
            "program header 2: segment at 0x101000 overlaps the one before it")


def test_segment_data_beyond_the_end_of_the_file_is_refused(hello, load, refused):
    size = ec.phdr(hello, DATA)["p_filesz"]
    assert load(ec.set_phdr(hello, DATA, p_offset=len(hello) - size)).segments
    refused(ec.set_phdr(hello, DATA, p_offset=len(hello) - size + 1),
            "program header 3", "segment data lies beyond the end of the file")


def test_segment_with_page_aligned_start_and_unaligned_vaddr_is_accepted(hello, load):
    img = load(ec.set_phdr(hello, DATA, p_vaddr=0x102010, p_paddr=0x102010))
    seg = img.segments[-1]
    assert (seg.vaddr, seg.start, seg.end) == (0x102010, 0x102000, 0x103000)


def test_segments_that_touch_without_overlap_are_accepted(hello, load):
    # text ends exactly where rodata starts
    assert load(ec.set_phdr(hello, TEXT, p_memsz=0x1000)).segments[0].end == 0x101000


# --- §2: rules that depend on --mem ----------------------------------------------------------

def test_segment_beyond_guest_memory_is_refused(hello, load):
    img = load(ec.set_phdr(hello, DATA, p_vaddr=16 * MIB, p_paddr=16 * MIB))
    with pytest.raises(ImageError, match="program header 3: segment .* does not fit in "
                                         "guest memory \\(8 MiB\\)"):
        image.check_fits(img, 8 * MIB)
    image.check_fits(img, 32 * MIB)


def test_segment_whose_end_passes_guest_memory_is_refused(hello, load):
    img = load(ec.set_phdr(hello, DATA, p_vaddr=8 * MIB - PAGE, p_memsz=2 * PAGE))
    with pytest.raises(ImageError, match="does not fit in guest memory"):
        image.check_fits(img, 8 * MIB)
    image.check_fits(img, 8 * MIB + PAGE)


def test_entry_below_1_mib_is_refused(hello, refused):
    refused(ec.set_ehdr(hello, e_entry=0xFFFFF), "entry point 0xfffff is below 0x100000")


def test_entry_outside_guest_memory_is_refused(hello, load):
    img = load(ec.set_ehdr(hello, e_entry=8 * MIB))
    with pytest.raises(ImageError, match="entry point 0x800000 is outside guest memory"):
        image.check_fits(img, 8 * MIB)
    image.check_fits(img, 8 * MIB + PAGE)


# --- the same rules through the real launcher ----------------------------------------------

@pytest.mark.parametrize("craft, fragment", [
    (lambda d: ec.set_abi1(d, target=1), "Executable is not for the solo5-spt target"),
    (lambda d: ec.set_abi1(d, version=3), "Executable requests unsupported ABI version 3"),
    (lambda d: ec.set_ehdr(d, e_type=ec.ET_DYN), "not a static executable"),
    (lambda d: ec.set_phdr(d, TEXT, p_flags=7), "requests WRITE and EXEC permissions"),
    (lambda d: ec.set_manifest_entry(d, 0, attached=1), "Solo5 manifest is invalid"),
    (lambda d: ec.truncate(d, 0x2090), ""),
], ids=["target", "version", "e_type", "wx", "manifest", "truncated"])
def test_launcher_refuses_a_bad_image_in_one_line(hello, tmp_path, craft, fragment):
    path = write(tmp_path, craft(hello))
    line = assert_refused(spt_run("--mem=8", path, timeout=120), fragment)
    assert path in line
    assert len(spt_run("--mem=8", path, timeout=120).stderr.splitlines()) == 1


def test_launcher_refuses_a_segment_beyond_mem(hello, tmp_path):
    path = write(tmp_path, ec.set_phdr(hello, DATA, p_vaddr=16 * MIB, p_paddr=16 * MIB))
    assert_refused(spt_run("--mem=8", path, timeout=120), "program header 3", "does not fit",
                   "raise --mem")


def test_launcher_refuses_an_entry_beyond_mem(hello, tmp_path):
    path = write(tmp_path, ec.set_ehdr(hello, e_entry=8 * MIB + 0x10))
    assert_refused(spt_run("--mem=8", path, timeout=120), "entry point", "outside guest memory")
