"""The launch plan: native/plan.h and spt/plan.py must agree byte by byte,
the boot blob must follow spt-abi §3, and the manifest must survive
pack/parse and the C generator of the guest kit."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

import elfcraft as ec
from conftest import ROOT, guest_path, which
from spt import abi, manifest, manifestgen, plan
from spt.image import PF_R, PF_W, PF_X, Segment

PLAN_H = ROOT / "native" / "plan.h"

# Field names of the two arrays in plan.h, in declaration order; plan.py
# names only their struct formats.
SEGMENT_FIELDS = ("file_off", "vaddr", "filesz", "start", "end", "prot", "how")
EPOLL_FIELDS = ("fd", "pad", "data")
RLIMIT_FIELDS = ("resource", "pad", "cur", "max")
C_STRUCTS = {
    "spt_plan": ([name for name, _ in plan.HEADER_FIELDS], plan.HEADER),
    "spt_plan_segment": (SEGMENT_FIELDS, plan.SEGMENT),
    "spt_plan_epoll": (EPOLL_FIELDS, plan.EPOLL),
    "spt_plan_rlimit": (RLIMIT_FIELDS, plan.RLIMIT),
}


def compile_and_run(tmp_path: Path, source: str, *extra_sources: Path) -> str:
    cc = which("cc")
    src = tmp_path / "probe.c"
    src.write_text(source)
    exe = tmp_path / "probe"
    proc = subprocess.run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-I", str(PLAN_H.parent),
                           "-o", str(exe), str(src), *map(str, extra_sources)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory) -> dict:
    """{struct: {"sizeof": n, field: (offset, size)}} as the C compiler sees plan.h,
    plus the header's constants."""
    lines = ['#include <stddef.h>', '#include <stdio.h>', '#include "plan.h"', "int main(void) {"]
    for struct_name, (fields, _) in C_STRUCTS.items():
        lines.append('printf("%%s sizeof %%zu\\n", "%s", sizeof(struct %s));'
                     % (struct_name, struct_name))
        for field in fields:
            lines.append('printf("%%s %%s %%zu %%zu\\n", "%s", "%s", offsetof(struct %s, %s), '
                         'sizeof(((struct %s *)0)->%s));'
                         % (struct_name, field, struct_name, field, struct_name, field))
    lines += ['printf("const magic %s\\n", SPT_PLAN_MAGIC);',
              'printf("const version %d\\n", SPT_PLAN_VERSION);',
              'printf("const x_exec_heap %u\\n", SPT_PLAN_X_EXEC_HEAP);',
              'printf("const stop_on_term %u\\n", SPT_PLAN_STOP_ON_TERM);',
              'printf("const jail_namespaces %u\\n", SPT_JAIL_NAMESPACES);',
              'printf("const jail_ids %u\\n", SPT_JAIL_IDS);',
              'printf("const jail_limits %u\\n", SPT_JAIL_LIMITS);',
              'printf("const stop_at_entry %u\\n", SPT_PLAN_STOP_AT_ENTRY);',
              'printf("const seg_copy %u\\n", SPT_SEG_COPY);',
              'printf("const seg_map %u\\n", SPT_SEG_MAP);',
              "return 0; }"]
    out = compile_and_run(tmp_path_factory.mktemp("plan_h"), "\n".join(lines) + "\n")
    layout: dict = {}
    for line in out.splitlines():
        words = line.split()
        if words[1] == "sizeof":
            layout.setdefault(words[0], {})["sizeof"] = int(words[2])
        elif words[0] == "const":
            layout.setdefault("const", {})[words[1]] = words[2]
        else:
            layout.setdefault(words[0], {})[words[1]] = (int(words[2]), int(words[3]))
    return layout


def python_layout(fields, st: struct.Struct) -> dict:
    """Offsets and sizes of each field of a little-endian, packed struct format."""
    formats = st.format.lstrip("<")
    # split the format back into one code per field (e.g. "8s", "I")
    codes, number = [], ""
    for ch in formats:
        if ch.isdigit():
            number += ch
        else:
            codes.append(number + ch)
            number = ""
    assert len(codes) == len(fields), (codes, fields)
    out, at = {}, 0
    for field, code in zip(fields, codes):
        size = struct.calcsize("<" + code)
        out[field] = (at, size)
        at += size
    out["sizeof"] = at
    return out


@pytest.mark.parametrize("struct_name", list(C_STRUCTS))
def test_every_plan_field_has_the_same_offset_and_size_in_c_and_python(c_layout, struct_name):
    fields, st = C_STRUCTS[struct_name]
    assert c_layout[struct_name] == python_layout(fields, st)
    assert c_layout[struct_name]["sizeof"] == st.size


def test_plan_h_names_no_field_python_does_not_know():
    # A field added to plan.h but not to plan.py would not show up in the
    # offset comparison above; count the declarations instead.
    text = PLAN_H.read_text()
    for struct_name, (fields, _) in C_STRUCTS.items():
        body = text.split("struct %s {" % struct_name, 1)[1].split("};", 1)[0]
        declared = [line.split(";")[0].split()[-1].split("[")[0]
                    for line in body.splitlines() if ";" in line]
        assert declared == list(fields), struct_name


def test_plan_constants_agree(c_layout):
    const = c_layout["const"]
    assert const["magic"].encode() == plan.PLAN_MAGIC
    assert int(const["version"]) == plan.PLAN_VERSION
    assert int(const["x_exec_heap"]) == plan.FLAG_X_EXEC_HEAP
    assert int(const["stop_on_term"]) == plan.FLAG_STOP_ON_TERM
    assert int(const["jail_namespaces"]) == plan.JAIL_NAMESPACES
    assert int(const["jail_ids"]) == plan.JAIL_IDS
    assert int(const["jail_limits"]) == plan.JAIL_LIMITS
    assert int(const["stop_at_entry"]) == plan.FLAG_STOP_AT_ENTRY
    assert (int(const["seg_copy"]), int(const["seg_map"])) == (plan.SEG_COPY, plan.SEG_MAP)


# --- the packed plan -------------------------------------------------------------

def sample_plan(**changes) -> plan.LaunchPlan:
    mft = manifest.parse(ec.build_manifest([("storage", 1), ("service0", 2)]))
    attached = mft.with_entry(manifest.Entry(index=1, name="storage", type=1, hostfd=5,
                                             attached=True, capacity=1 << 20, block_size=4096))
    attached = attached.with_entry(manifest.Entry(index=2, name="service0", type=2, hostfd=6,
                                                  attached=True, mac=bytes.fromhex("020000aabbcc"),
                                                  mtu=1500))
    segments = (
        Segment(index=1, offset=0x1000, vaddr=0x100000, filesz=0x5ce, memsz=0x5ce,
                start=0x100000, end=0x101000, flags=PF_R | PF_X),
        Segment(index=3, offset=0x3000, vaddr=0x102000, filesz=8, memsz=0x2000,
                start=0x102000, end=0x104000, flags=PF_R | PF_W),
    )
    fields = dict(mem_size=32 << 20, entry=0x100000, kernel_end=0x104000,
                  segments=plan.copied_segments(segments),
                  manifest=attached.pack(), cmdline="one two", bpf=bytes(range(24)),
                  kernel_fd=9, keep_fds=(6, 1, 3, 4, 5), watch=((4, abi.TIMER_EPOLL_DATA), (6, 2)),
                  epoll_fd=3, timer_fd=4, name="spt:hello", flags=plan.FLAG_STOP_ON_TERM,
                  notify_addr=plan.notify_sockaddr("/run/notify"))
    fields.update(changes)
    return plan.LaunchPlan(**fields)


def unpack_header(data: bytes) -> dict:
    return dict(zip([n for n, _ in plan.HEADER_FIELDS], plan.HEADER.unpack_from(data, 0)))


def test_packed_plan_header_points_at_each_part():
    p = sample_plan()
    data = p.pack()
    h = unpack_header(data)
    assert h["magic"] == b"SPTPLAN1" and h["version"] == 1 and h["size"] == plan.HEADER.size == 176
    assert (h["mem_size"], h["entry"], h["boot_addr"]) == (32 << 20, 0x100000, 0x11000)
    assert data[h["boot_off"]:h["boot_off"] + h["boot_len"]] == p.boot_blob()
    assert data[h["bpf_off"]:h["bpf_off"] + 8 * h["bpf_count"]] == p.bpf and h["bpf_count"] == 3
    segs = [plan.SEGMENT.unpack_from(data, h["segs_off"] + i * plan.SEGMENT.size)
            for i in range(h["nsegs"])]
    assert segs == [(0x1000, 0x100000, 0x5ce, 0x100000, 0x101000, 1 | 4, 0),
                    (0x3000, 0x102000, 8, 0x102000, 0x104000, 1 | 2, 0)]
    keep = struct.unpack_from("<%di" % h["nkeep"], data, h["keep_off"])
    assert keep == (1, 3, 4, 5, 6)
    watch = [plan.EPOLL.unpack_from(data, h["epoll_off"] + i * 16) for i in range(h["nepoll"])]
    assert watch == [(4, 0, 0xFFFFFFFE), (6, 0, 2)]
    assert data[h["notify_off"]:h["notify_off"] + h["notify_len"]] == b"\x01\x00/run/notify\x00"
    assert (h["flags"], h["kernel_fd"], h["epoll_fd"], h["timer_fd"]) == (2, 9, 3, 4)
    assert h["name"].rstrip(b"\0") == b"spt:hello"
    for key in ("boot_off", "bpf_off", "segs_off", "keep_off", "epoll_off", "notify_off"):
        assert h[key] % 8 == 0, key
    assert h["boot_off"] == plan.HEADER.size
    assert h["notify_off"] + -(-h["notify_len"] // 8) * 8 == len(data)


def test_packed_plan_carries_the_jail_and_its_rlimits():
    p = sample_plan(jail=plan.JAIL_IDS | plan.JAIL_LIMITS, uid=2113930000, gid=2113930001,
                    rlimits=((7, 8, 8), (6, 0, 0), (8, 0, 0)))
    data = p.pack()
    h = unpack_header(data)
    assert (h["jail"], h["uid"], h["gid"], h["nrlimits"]) == (6, 2113930000, 2113930001, 3)
    assert h["rlimit_off"] % 8 == 0 and h["rlimit_off"] + 3 * plan.RLIMIT.size == len(data)
    limits = [plan.RLIMIT.unpack_from(data, h["rlimit_off"] + i * plan.RLIMIT.size)
              for i in range(3)]
    assert limits == [(7, 0, 8, 8), (6, 0, 0, 0), (8, 0, 0, 0)]
    assert unpack_header(sample_plan().pack())["jail"] == 0  # no jail unless decided


def test_plan_name_is_cut_to_15_bytes_and_nul_terminated():
    h = unpack_header(sample_plan(name="spt:" + "n" * 40).pack())
    assert h["name"] == b"spt:" + b"n" * 11 + b"\0"


def test_prot_follows_the_segment_flags():
    for flags, prot in ((PF_R, 1), (PF_R | PF_W, 3), (PF_R | PF_X, 5), (PF_X, 4), (0, 0)):
        seg = Segment(index=1, offset=0, vaddr=0x100000, filesz=1, memsz=1, start=0x100000,
                      end=0x101000, flags=flags)
        data = sample_plan(segments=plan.copied_segments((seg,))).pack()
        assert plan.SEGMENT.unpack_from(data, unpack_header(data)["segs_off"])[5] == prot


def test_mapped_segments_cover_their_pages_one_after_the_other_in_the_store():
    """What the trampoline maps from the image store's file: each segment's
    pages up to its last file byte, at consecutive offsets of the file."""
    from spt import imagestore

    segments = (
        Segment(index=1, offset=0x1000, vaddr=0x100000, filesz=0x1800, memsz=0x1800,
                start=0x100000, end=0x102000, flags=PF_R | PF_X),
        Segment(index=2, offset=0x2800, vaddr=0x102800, filesz=8, memsz=0x3000,
                start=0x102000, end=0x106000, flags=PF_R | PF_W),
    )
    mapped = plan.mapped_segments(segments, imagestore.mapped_len)
    data = sample_plan(segments=mapped).pack()
    h = unpack_header(data)
    segs = [plan.SEGMENT.unpack_from(data, h["segs_off"] + i * plan.SEGMENT.size)
            for i in range(h["nsegs"])]
    assert segs == [(0, 0x100000, 0x2000, 0x100000, 0x102000, 1 | 4, plan.SEG_MAP),
                    (0x2000, 0x102000, 0x1000, 0x102000, 0x106000, 1 | 2, plan.SEG_MAP)]


def test_notify_socket_address_forms():
    assert plan.notify_sockaddr("@abstract") == b"\x01\x00\x00abstract"
    assert plan.notify_sockaddr("/run/systemd/notify") == b"\x01\x00/run/systemd/notify\x00"
    assert plan.notify_sockaddr("/" + "x" * 107) == b""  # does not fit sun_path
    assert plan.notify_sockaddr("") == b""


# --- the boot blob (spt-abi §3) -------------------------------------------------------

def test_boot_info_is_40_bytes_with_manifest_at_0x11028_and_cmdline_after_it():
    p = sample_plan()
    blob = p.boot_blob()
    mem_size, kernel_end, cmdline, mft, epollfd, timerfd = struct.unpack_from("<QQQQii", blob)
    assert struct.calcsize("<QQQQii") == abi.BOOT_INFO_SIZE == 40
    assert (mem_size, kernel_end, epollfd, timerfd) == (32 << 20, 0x104000, 3, 4)
    assert mft == 0x11028
    assert cmdline == 0x11028 + len(p.manifest) == 0x11028 + 8 + 3 * 104
    assert blob[40:40 + len(p.manifest)] == p.manifest
    assert blob[cmdline - 0x11000:] == b"one two\0"


def test_boot_blob_manifest_carries_the_attached_device_facts():
    blob = sample_plan().boot_blob()
    entry = lambda i: blob[40 + 8 + 104 * i:40 + 8 + 104 * (i + 1)]  # noqa: E731
    version, count = struct.unpack_from("<II", blob, 40)
    assert (version, count) == (1, 3)
    block, net = entry(1), entry(2)
    assert block[:8] == b"storage\0" and struct.unpack_from("<I", block, 68)[0] == 1
    assert struct.unpack_from("<QH", block, 72) == (1 << 20, 4096)
    assert struct.unpack_from("<q", block, 88)[0] == 5 and block[96] == 1
    assert net[72:78] == bytes.fromhex("020000aabbcc")
    assert struct.unpack_from("<H", net, 78)[0] == 1500
    assert struct.unpack_from("<q", net, 88)[0] == 6 and net[96] == 1
    assert entry(0)[96] == 0 and struct.unpack_from("<I", entry(0), 68)[0] == 0x40000000


def test_longest_command_line_fills_the_8192_byte_area_exactly():
    p = sample_plan(cmdline="x" * 8191)
    blob = p.boot_blob()
    cmdline = struct.unpack_from("<Q", blob, 16)[0] - 0x11000
    assert len(blob) - cmdline == abi.CMDLINE_SIZE == 8192 and blob.endswith(b"x\0")


# --- the manifest: pack/parse and the kit's C generator -----------------------------------

def test_manifest_parse_then_pack_gives_back_the_same_bytes():
    for content in (ec.build_manifest(),
                    ec.build_manifest([("storage", 1), ("service0", 2), ("z" * 67, 2)]),
                    ec.build_manifest([("d%d" % i, 1 + i % 2) for i in range(63)])):
        assert manifest.parse(content).pack() == content


def test_manifest_of_a_kit_guest_round_trips():
    content = ec.manifest_bytes(Path(guest_path("hello")).read_bytes())
    assert manifest.parse(content).pack() == content


def test_manifest_from_json_matches_the_abi_layout():
    doc = {"type": "solo5.manifest", "version": 1,
           "devices": [{"name": "storage", "type": "BLOCK_BASIC"},
                       {"name": "service0", "type": "NET_BASIC"}]}
    mft = manifestgen.from_json(json.dumps(doc))
    assert mft.pack() == ec.build_manifest([("storage", 1), ("service0", 2)])
    assert manifest.parse(mft.pack()) == mft
    assert mft.to_json() == {"type": "solo5.manifest", "version": 1,
                             "devices": [{"name": "storage", "type": "BLOCK_BASIC"},
                                         {"name": "service0", "type": "NET_BASIC"}]}


@pytest.mark.parametrize("devices", [[], [("storage", 1)], [("storage", 1), ("service0", 2)],
                                     [("d%d" % i, 1) for i in range(63)]],
                         ids=["none", "block", "block-net", "63"])
def test_generated_manifest_c_source_compiles_to_the_mft1_note(tmp_path, devices):
    mft = manifest.parse(ec.build_manifest(devices))
    gen = tmp_path / "mft.c"
    gen.write_text(manifestgen.to_c_source(mft))
    probe = ('#include <stdio.h>\n#include "%s"\n'
             "int main(void) {\n"
             "    const unsigned char *p = (const unsigned char *)&spt_mft1_note;\n"
             "    for (size_t i = 0; i < sizeof spt_mft1_note; i++) printf(\"%%02x\", p[i]);\n"
             "    printf(\" %%zu\\n\", _Alignof(struct spt_mft1_note));\n"
             "    return 0;\n}\n" % gen)
    note_hex, align = compile_and_run(tmp_path, probe).split()
    note = bytes.fromhex(note_hex)
    content = mft.pack()
    namesz, descsz, ntype = struct.unpack_from("<III", note)
    assert (namesz, descsz, ntype) == (6, 4 + len(content), ec.MFT1)
    assert note[12:20] == b"Solo5\0\0\0" and note[20:24] == bytes(4)
    assert note[24:] == content and int(align) == 8
