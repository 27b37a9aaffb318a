"""Solo5's words: every refusal of Solo5 v0.12's own `solo5-spt`, one row
each, with the exact lines that tender prints and the check that spt's one
line contains them, so scripts that grep for Solo5's text keep working.

Each row is a situation both tenders refuse: how to make it, the lines Solo5
prints for it (after its `solo5-spt: ` prefix, written down from its
tenders/spt and tenders/common sources, v0.12), and `needles`: the text
spt's line must contain. The needles are Solo5's lines themselves, except
where a row says why not (and then each needle is still a piece of a Solo5
line, which the table checks too, so it cannot drift from Solo5's text):

- Where Solo5 prints several lines (warnx, then errx), spt's one line holds
  the line that names the cause; for an option a module declines, Solo5 then
  adds `Invalid option: `OPT'` and its usage, spt stops at the cause.
- Solo5 prints a block device's NAME right-aligned in 67 columns (`%67s`);
  spt does not pad it: the needle is the text after the padding.
- Solo5's loader says `KERNEL: Invalid or unsupported executable` for every
  image it refuses by its segments or headers; spt says the same, then why.
  For a W+X segment Solo5 first prints `KERNEL: Error: phdr[N] requests
  WRITE and EXEC permissions`; spt's line carries that text after its own
  `KERNEL: Invalid or unsupported executable: `.

Refusals of Solo5's that no test can provoke here are listed in
UNREACHABLE, with why. Situations only one of the two tenders refuses are
not in the table (docs/usage.md lists them).
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

import elfcraft as ec
from conftest import SOLO5_SPT, guest_path, run
from devices.test_net import start_net_guest

USAGE_FIRST_LINE = "usage: solo5-spt [ OPTIONS ] [ -- ] KERNEL [ ARGS... ]"
WX = "requests WRITE and EXEC permissions"


class Row(NamedTuple):
    id: str
    argv: Callable  # ctx -> the arguments after solo5-spt
    solo5: Callable  # ctx -> Solo5's lines, without its "solo5-spt: " prefix
    needles: Callable | None = None  # ctx -> what spt's line must contain (default: solo5)
    usage: bool = False  # the usage text follows (as with Solo5)
    net: bool = False  # runs inside the test's namespace, with its TAPs
    cause: str = ""  # spt's own detail after Solo5's words, which pins the cause
    limit_as: int = 0  # run under this RLIMIT_AS (bytes)


class Ctx:
    """Files a row refers to: crafted kernels and block files under tmp_path,
    the net guest, the test's TAP names."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.hello_bytes = Path(guest_path("hello")).read_bytes()
        self.block = guest_path("block")
        self.net = guest_path("net")
        self.missing = str(tmp_path / "nonexistent")

    def kernel(self, name: str, craft=None) -> str:
        path = self.tmp / name
        path.write_bytes(craft(self.hello_bytes) if craft else self.hello_bytes)
        return str(path)

    def disk(self, size: int, name: str = "disk.img") -> str:
        path = self.tmp / name
        with open(path, "wb") as f:
            f.truncate(size)
        return str(path)


def invalid(name: str, craft, cause: str) -> Row:
    """A loader refusal: Solo5's one line for every one of them; `cause` is
    what spt says after it."""
    return Row("loader-" + name,
               lambda c: ["--mem=8", c.kernel("bad.spt", craft)],
               lambda c: ["%s: Invalid or unsupported executable" % (c.tmp / "bad.spt")],
               cause=cause)


TEXT = 1  # the kit's text segment (guests/kit/guest.ld)

ROWS = [
    # --- the command line (tenders/spt/spt_main.c) ---
    Row("missing-kernel-operand", lambda c: ["--mem=8"], lambda c: ["Missing KERNEL operand"],
        usage=True),
    Row("invalid-option", lambda c: ["--bogus", c.block],
        lambda c: ["Invalid option: `--bogus'"], usage=True),
    Row("mem-bare", lambda c: ["--mem", c.block], lambda c: ["Invalid option: `--mem'"],
        usage=True),
    Row("mem-malformed", lambda c: ["--mem=lots", c.block],
        lambda c: ["Malformed argument to --mem"]),
    Row("mem-zero", lambda c: ["--mem=0", c.block], lambda c: ["Malformed argument to --mem"]),
    Row("device-name-malformed", lambda c: ["--block:a-b=" + c.disk(512), c.block],
        lambda c: ["Invalid option: `--block:a-b=%s'" % (c.tmp / "disk.img")], usage=True),
    Row("block-path-empty", lambda c: ["--block:storage=", c.block],
        lambda c: ["Invalid option: `--block:storage='"], usage=True),
    Row("sector-size-no-number", lambda c: ["--block-sector-size:storage=big", c.block],
        lambda c: ["Invalid option: `--block-sector-size:storage=big'"], usage=True),
    Row("net-mac-malformed", lambda c: ["--net-mac:service0=nope", c.net],
        lambda c: ["Invalid option: `--net-mac:service0=nope'"], usage=True),
    Row("mem-beyond-address-space", lambda c: ["--mem=%d" % (1 << 27), c.kernel("hello.spt")],
        lambda c: ["Error allocating guest memory: Cannot allocate memory"]),
    Row("mem-beyond-rlimit-as", lambda c: ["--mem=4096", c.kernel("hello.spt")],
        lambda c: ["Error allocating guest memory: Cannot allocate memory"],
        cause="RLIMIT_AS", limit_as=2 << 30),
    Row("cmdline-too-long", lambda c: ["--mem=8", c.kernel("hello.spt"), "x" * 8192],
        lambda c: ["Guest command line too long (max=8191 characters)"]),

    # --- the kernel file and its notes (spt_main.c, tenders/common/elf.c) ---
    Row("kernel-missing", lambda c: [c.missing],
        lambda c: ["%s: Could not open: No such file or directory" % c.missing]),
    Row("kernel-directory", lambda c: [str(c.tmp)],
        lambda c: ["%s: Is a directory" % c.tmp]),
    Row("kernel-device", lambda c: ["/dev/zero"],
        lambda c: ["/dev/zero: Invalid or unsupported executable"], cause="not a regular file"),
    Row("no-abi-note", lambda c: [c.kernel("k.spt", lambda d: ec.set_note_header(
        d, ec.ABI1, n_type=0))],
        lambda c: ["%s: No Solo5 ABI information found in executable" % (c.tmp / "k.spt")]),
    Row("wrong-target", lambda c: [c.kernel("k.spt", lambda d: ec.set_abi1(d, target=1))],
        lambda c: ["%s: Executable is not for the solo5-spt target" % (c.tmp / "k.spt")]),
    Row("wrong-abi-version", lambda c: [c.kernel("k.spt", lambda d: ec.set_abi1(d, version=3))],
        lambda c: ["%s: Executable requests unsupported ABI version 3" % (c.tmp / "k.spt")]),
    Row("no-manifest", lambda c: [c.kernel("k.spt", lambda d: ec.set_note_header(
        d, ec.MFT1, n_type=0))],
        lambda c: ["%s: No Solo5 manifest found in executable" % (c.tmp / "k.spt")]),
    Row("manifest-invalid", lambda c: [c.kernel("k.spt", lambda d: ec.set_manifest_entry(
        d, 0, attached=1))],
        lambda c: ["%s: Solo5 manifest is invalid" % (c.tmp / "k.spt")]),
    invalid("not-elf", lambda d: b"#!/bin/sh\n" + bytes(100), "not a valid ELF file"),
    invalid("elf32", lambda d: ec.patch(d, 4, bytes([ec.ELFCLASS32])),
            "not a 64-bit little-endian"),
    invalid("not-exec", lambda d: ec.set_ehdr(d, e_type=ec.ET_DYN), "not a static executable"),
    invalid("machine", lambda d: ec.set_ehdr(d, e_machine=ec.EM_386),
            "built for another architecture (e_machine EM_386)"),
    invalid("phentsize", lambda d: ec.set_ehdr(d, e_phentsize=55), "e_phentsize is 55"),
    invalid("phdrs-past-eof", lambda d: ec.set_ehdr(d, e_phoff=len(d)),
            "program headers lie beyond"),
    invalid("note-too-short", lambda d: ec.set_phdr(d, ec.note_segment(d, ec.ABI1),
                                                    p_filesz=11), "note segment too short"),
    invalid("note-descsz", lambda d: ec.set_note_header(d, ec.ABI1, n_descsz=33),
            "Solo5 note has a bad size (33)"),
    invalid("manifest-note-too-big", lambda d: ec.with_manifest(
        d, ec.build_manifest([("d%d" % i, 1) for i in range(64)])), "Solo5 manifest is invalid"),
    # --- the loader's segment rules (elf.c) ---
    invalid("entry-below-1mib", lambda d: ec.set_ehdr(d, e_entry=0xFFFFF),
            "entry point 0xfffff is below"),
    invalid("entry-beyond-mem", lambda d: ec.set_ehdr(d, e_entry=8 << 20),
            "is outside guest memory"),
    invalid("vaddr-below-1mib", lambda d: ec.set_phdr(d, TEXT, p_vaddr=0xFF000),
            "p_vaddr 0xff000 is below"),
    invalid("descending", lambda d: ec.set_phdr(d, TEXT + 2, p_vaddr=0x100800),
            "not in ascending address order"),
    invalid("align", lambda d: ec.set_phdr(d, TEXT, p_align=3), "is not a power of two"),
    invalid("overlap", lambda d: ec.set_phdr(d, TEXT + 1, p_vaddr=0x100800, p_align=0x800),
            "overlaps the one before it"),
    invalid("memsz-below-filesz", lambda d: ec.set_phdr(d, TEXT, p_memsz=1), "p_memsz is smaller"),
    invalid("beyond-mem", lambda d: ec.set_phdr(d, TEXT + 2, p_vaddr=16 << 20),
            "does not fit in guest memory"),
    invalid("not-page-aligned", lambda d: ec.set_phdr(d, TEXT + 2, p_vaddr=0x102010,
                                                      p_align=16), "is not page-aligned"),
    invalid("short-read", lambda d: ec.set_phdr(d, TEXT, p_offset=len(d) - 16), "short read"),
    Row("loader-wx", lambda c: ["--mem=8", c.kernel("bad.spt", lambda d: ec.set_phdr(
        d, TEXT, p_flags=7))],
        lambda c: ["%s: Error: phdr[%d] %s" % (c.tmp / "bad.spt", TEXT, WX),
                   "%s: Invalid or unsupported executable" % (c.tmp / "bad.spt")],
        needles=lambda c: ["%s: Invalid or unsupported executable" % (c.tmp / "bad.spt"),
                           "phdr[%d] %s" % (TEXT, WX)]),

    # --- devices (spt_main.c setup_modules, spt_module_block.c, block_attach.c) ---
    Row("resource-not-declared", lambda c: ["--block:other=" + c.disk(512), c.block],
        lambda c: ["Resource not declared in manifest: 'other'",
                   "Invalid option: `--block:other=%s'" % (c.tmp / "disk.img")],
        needles=lambda c: ["Resource not declared in manifest: 'other'"]),
    Row("device-unattached", lambda c: ["--mem=8", c.block],
        lambda c: ["Device 'storage' of type BLOCK_BASIC declared but not attached.",
                   "All declared devices must be attached. See --help for syntax."]),
    Row("block-missing", lambda c: ["--block:storage=" + c.missing, c.block],
        lambda c: ["Could not open block device: %s: No such file or directory" % c.missing]),
    Row("block-misaligned", lambda c: ["--block:storage=" + c.disk(1000), c.block],
        lambda c: ["%67s: Backing storage size must be block aligned (512 bytes)" % "storage"],
        needles=lambda c: ["storage: Backing storage size must be block aligned (512 bytes)"]),
    Row("block-misaligned-sector", lambda c: ["--block:storage=" + c.disk(6144),
                                              "--block-sector-size:storage=4096", c.block],
        lambda c: ["%67s: Backing storage size must be block aligned (4096 bytes)" % "storage"],
        needles=lambda c: ["storage: Backing storage size must be block aligned (4096 bytes)"]),
    Row("block-empty", lambda c: ["--block:storage=" + c.disk(0), c.block],
        lambda c: ["%67s: Backing storage must be at least 1 block (512 bytes) in size"
                   % "storage"],
        needles=lambda c: ["storage: Backing storage must be at least 1 block (512 bytes) "
                           "in size"]),
    Row("sector-size-bad", lambda c: ["--block:storage=" + c.disk(8192),
                                      "--block-sector-size:storage=1000", c.block],
        lambda c: ["Block size must be a multiple of 2 greater than or equal 512",
                   "Invalid option: `--block-sector-size:storage=1000'"],
        needles=lambda c: ["Block size must be a multiple of 2 greater than or equal 512"]),

    # --- net (spt_module_net.c, tap_attach.c), inside the test's namespace ---
    Row("net-not-declared", lambda c: ["--net:other=tap0", c.net],
        lambda c: ["Resource not declared in manifest: 'other'",
                   "Invalid option: `--net:other=tap0'"],
        needles=lambda c: ["Resource not declared in manifest: 'other'"], net=True),
    Row("tap-missing", lambda c: ["--net:service0=nosuch0", c.net],
        lambda c: ["Could not attach interface: nosuch0: No such file or directory"], net=True),
    Row("tap-down", lambda c: ["--net:service0=tapdown0", c.net],
        lambda c: ["Could not attach interface: tapdown0: Network is down"], net=True),
    Row("tap-busy", lambda c: ["--net:service0=tap0", c.net],
        lambda c: ["Could not attach interface: tap0: Device or resource busy"], net=True),
    Row("not-a-tap", lambda c: ["--net:service0=lo", c.net],
        lambda c: ["Could not attach interface: lo: Invalid argument"], net=True),
    Row("iface-too-long", lambda c: ["--net:service0=" + "t" * 17, c.net],
        lambda c: ["Could not attach interface: %s: Invalid argument" % ("t" * 17)], net=True),
    Row("tap-fd-malformed", lambda c: ["--net:service0=@x", c.net],
        lambda c: ["tap_attach: Invalid argument"], net=True),
]

# Refusals in Solo5's tender that cannot be provoked here, and why.
UNREACHABLE = {
    "Maximum guest memory size (N MB) exceeded.": "only a tender not built as PIE says it",
    "Cowardly refusing to run with a sys_personality of READ_IMPLIES_EXEC": "a host fault",
    "PATH: Could not determine capacity": "lseek(SEEK_END) fails on no file spt accepts",
    "Module `NAME' setup failed": "no module's setup returns failure (they exit instead)",
    "seccomp_rule_add(...) failed / mmap / epoll_ctl failures": "host faults, not input",
    "Could not open /dev/urandom": "a host fault; spt takes MACs from os.urandom",
}


def test_the_table_covers_every_refusal_once():
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids))


@pytest.fixture
def ctx(tmp_path):
    return Ctx(tmp_path)


def spt_line(proc, row: Row) -> str:
    assert proc.returncode == 1, (row.id, proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and lines[0].startswith("solo5-spt: "), proc.stderr
    if row.usage:
        assert lines[1] == USAGE_FIRST_LINE, proc.stderr
    else:
        assert len(lines) == 1, proc.stderr
    assert proc.stdout == ""
    return lines[0]


def check_row(row: Row, ctx: Ctx, proc) -> None:
    line = spt_line(proc, row)
    solo5 = row.solo5(ctx)
    needles = row.needles(ctx) if row.needles else solo5
    for needle in needles:
        assert any(needle in s or needle in s.lstrip() for s in solo5), (row.id, needle)
        assert needle in line, (row.id, needle, line)
    assert row.cause in line, (row.id, row.cause, line)


@pytest.mark.parametrize("row", [r for r in ROWS if not r.net], ids=lambda r: r.id)
def test_spt_says_what_solo5_says(row, ctx):
    kwargs = {}
    if row.limit_as:
        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (row.limit_as, row.limit_as))
        kwargs["preexec_fn"] = limit
    check_row(row, ctx, run([SOLO5_SPT, *row.argv(ctx)], timeout=30, **kwargs))


def test_spt_says_what_solo5_says_for_net_devices(ctx, tap, running):
    tap.ns.check("ip", "tuntap", "add", "dev", "tapdown0", "mode", "tap")
    holder = start_net_guest(running, lambda name: guest_path(name), tap)  # holds tap0
    for row in (r for r in ROWS if r.net):
        check_row(row, ctx, run([SOLO5_SPT, *row.argv(ctx)], timeout=30, netns=tap.ns.name))
    assert holder.proc.poll() is None


def test_version_keeps_solo5s_first_line_shape():
    # Solo5: "solo5-spt tender, version v0.12.1", "ABI version 2"
    proc = run([SOLO5_SPT, "--version"])
    first, *abis = proc.stderr.splitlines()
    assert first.startswith("solo5-spt tender, version ")
    assert "ABI version 2" in abis
