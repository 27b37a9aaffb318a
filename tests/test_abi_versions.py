"""Both spt ABIs side by side: kernels of ABI 1 (Solo5 v0.6.0-v0.7.5) and
ABI 2 (v0.8.0 on), each run by the loader rules of its own release.

The kit builds every guest of ABI1_GUESTS (guests/Makefile) twice:
out/NAME.spt (ABI 2) and out/NAME.abi1.spt (ABI 1, the v0.7 segment layout).
hello/exit, block and net run here through the real kernel in both builds;
the loader's one difference (ABI 1 checks and maps a PT_LOAD without file
contents, ABI 2 skips it) is pinned on crafted images, through
`spt.image.load` and through the real launcher's plan.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import elfcraft as ec
from conftest import SPT, guest_path, run, spt_run
from devices.test_net import assert_answers, start_net_guest
from spt import image
from spt.image import ImageError

MIB = 1 << 20
PAGE = 4096
ABIS = {1: ".abi1", 2: ""}  # ABI version -> the kit's file name suffix


def kit(name: str, version: int) -> str:
    return guest_path(name + ABIS[version])


@pytest.fixture(params=sorted(ABIS), ids=lambda v: "abi%d" % v)
def abi_version(request):
    return request.param


# --- the kit builds what it says ---------------------------------------------------------

@pytest.mark.parametrize("name", ["hello", "exit", "block", "net"])
def test_kit_builds_each_guest_for_both_abis(name, abi_version):
    data = Path(kit(name, abi_version)).read_bytes()
    assert ec.abi1(data)["target"] == 2
    assert ec.abi1(data)["version"] == abi_version
    # the v0.7 layout both builds share: text, rodata, data+bss; no bss-only PT_LOAD
    loads = ec.find_phdrs(data, ec.PT_LOAD)
    assert [ec.phdr(data, i)["p_flags"] for i in loads] == [
        ec.PF_R | ec.PF_X, ec.PF_R, ec.PF_R | ec.PF_W]
    assert all(ec.phdr(data, i)["p_filesz"] for i in loads)


# --- through the real kernel -------------------------------------------------------------

def test_hello_runs_with_its_arguments(abi_version):
    proc = spt_run("--mem=8", kit("hello", abi_version), "abi", str(abi_version))
    assert proc.returncode == 0, proc.stderr
    assert "cmdline: 'abi %d'" % abi_version in proc.stdout


@pytest.mark.parametrize("status", ["0", "7", "255"])
def test_exit_status_is_the_guests(abi_version, status):
    proc = spt_run("--mem=8", kit("exit", abi_version), status)
    assert proc.returncode == int(status), proc.stderr


def test_block_round_trip(abi_version, block_file):
    disk = block_file(8 * 512)
    proc = spt_run("--mem=8", "--block:storage=" + disk, kit("block", abi_version))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "block: roundtrip ok" in proc.stdout
    assert "block: capacity=4096 sector=512\n" in proc.stdout
    assert Path(disk).read_bytes() != bytes(8 * 512)  # the guest's writes reached the file


def test_net_guest_answers_ping(abi_version, running, tap):
    net = start_net_guest(running, lambda name: kit(name, abi_version), tap)
    assert net.ip == tap.guest_ip
    assert_answers(tap, net.proc)


def test_an_abi1_kernel_is_refused_by_name_only_for_other_versions(tmp_path):
    # A version neither ABI is refused in today's words, whichever kit build it came from.
    for version in (1, 2):
        data = ec.set_abi1(Path(kit("hello", version)).read_bytes(), version=3)
        path = tmp_path / ("v%d.spt" % version)
        path.write_bytes(data)
        proc = spt_run("--mem=8", path)
        assert proc.returncode == 1
        assert proc.stderr == ("solo5-spt: %s: Executable requests unsupported ABI version 3\n"
                               % path)


# --- --version -----------------------------------------------------------------------------

def test_version_has_solo5s_shape_and_names_every_abi():
    proc = spt_run("--version")
    assert proc.returncode == 0 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    # Solo5: "solo5-spt tender, version v0.12.1", then "ABI version 2"
    assert re.fullmatch(r"solo5-spt tender, version spt-\d+\.\d+\.\d+\S*", lines[0]), lines
    assert lines[1:] == ["ABI version 1", "ABI version 2"]


def test_version_probe_finds_each_abi_an_orchestrator_asks_for():
    # albatross-style: one `ABI version N` line per ABI, matched whole
    stderr = spt_run("--version").stderr
    found = {int(m) for m in re.findall(r"^ABI version (\d+)$", stderr, re.M)}
    assert found == set(ABIS)


# --- the loader rules of each release ------------------------------------------------------

def with_bss_load(data: bytes, **fields) -> bytes:
    """`data` with a bss-only PT_LOAD (p_filesz 0) after its last segment:
    one RW page above the data segment, as ABI 2 kernels carry their bss."""
    last = ec.phdr(data, ec.load_segments(data)[-1])
    end = -(-(last["p_vaddr"] + last["p_memsz"]) // PAGE) * PAGE
    values = dict(p_type=ec.PT_LOAD, p_flags=ec.PF_R | ec.PF_W, p_offset=0, p_vaddr=end,
                  p_paddr=end, p_filesz=0, p_memsz=PAGE, p_align=PAGE)
    values.update(fields)
    return ec.append_phdr(data, **values)


@pytest.fixture
def load(tmp_path):
    def load_bytes(data: bytes, version: int) -> image.Image:
        path = tmp_path / ("k%d.spt" % len(list(tmp_path.iterdir())))
        path.write_bytes(ec.set_abi1(data, version=version))
        return image.load(str(path))

    return load_bytes


@pytest.fixture(scope="module")
def hello():
    return Path(guest_path("hello")).read_bytes()


def test_abi2_skips_a_bss_only_load_and_abi1_maps_it(hello, load):
    data = with_bss_load(hello)
    index = ec.ehdr(data)["e_phnum"] - 1
    bss = ec.phdr(data, index)
    v2 = load(data, 2)
    assert index not in [s.index for s in v2.segments]
    assert v2.kernel_end == bss["p_vaddr"]
    v1 = load(data, 1)
    seg = v1.segments[-1]
    assert (seg.index, seg.vaddr, seg.filesz, seg.memsz, seg.perms) == (
        index, bss["p_vaddr"], 0, PAGE, "rw-")
    assert v1.kernel_end == bss["p_vaddr"] + PAGE


@pytest.mark.parametrize("fields, why", [
    (dict(p_vaddr=0x1000, p_paddr=0x1000), "is below 0x100000"),
    (dict(p_vaddr=0x100000, p_paddr=0x100000), "not in ascending address order"),
    (dict(p_flags=ec.PF_R | ec.PF_W | ec.PF_X), "requests WRITE and EXEC permissions"),
    (dict(p_align=3), "is not a power of two"),
    (dict(p_memsz=PAGE + 1, p_align=8), "not page-aligned"),
], ids=["below-1mib", "descending", "wx", "align", "unaligned-end"])
def test_abi1_checks_a_bss_only_load_by_every_rule_abi2_ignores_it(hello, load, fields, why):
    data = with_bss_load(hello, **fields)
    load(data, 2)  # ABI 2's loader never looks at it
    with pytest.raises(ImageError) as info:
        load(data, 1)
    assert "Invalid or unsupported executable" in str(info.value)
    assert why in str(info.value)


def test_abi1_never_reads_a_bss_only_loads_offset(hello, load):
    # p_filesz 0: nothing is copied, so an offset past the file is no short read
    seg = load(with_bss_load(hello, p_offset=(1 << 64) - 1), 1).segments[-1]
    assert seg.filesz == 0 and seg.offset == 0


def test_abi1_bss_only_load_that_does_not_fit_needs_more_memory(hello, load):
    img = load(with_bss_load(hello, p_memsz=16 * MIB), 1)
    with pytest.raises(ImageError, match="does not fit in guest memory"):
        image.check_fits(img, 8 * MIB)
    image.check_fits(load(with_bss_load(hello, p_memsz=16 * MIB), 2), 8 * MIB)


def test_launcher_plans_each_abis_loader(hello, tmp_path):
    data = with_bss_load(hello)
    bss = ec.phdr(data, ec.ehdr(data)["e_phnum"] - 1)
    ends = {}
    for version in ABIS:
        path = tmp_path / ("abi%d.spt" % version)
        path.write_bytes(ec.set_abi1(data, version=version))
        dump = tmp_path / ("plan%d.json" % version)
        proc = spt_run("--mem=8", path, env=dict(os.environ, SPT_PLAN_DUMP=str(dump)))
        assert proc.returncode == 0, proc.stderr
        ends[version] = json.loads(dump.read_text())["plan"]["kernel_end"]
    assert ends == {1: bss["p_vaddr"] + PAGE, 2: bss["p_vaddr"]}


def test_abi1_kernel_with_a_bss_only_load_boots(hello, tmp_path):
    path = tmp_path / "bss.spt"
    path.write_bytes(ec.set_abi1(with_bss_load(hello), version=1))
    proc = spt_run("--mem=8", path, "mapped")
    assert proc.returncode == 0, proc.stderr
    assert "cmdline: 'mapped'" in proc.stdout


# --- the spt tool on both --------------------------------------------------------------------

def spt_tool(*args):
    return run([SPT, *map(str, args)], timeout=60)


def test_inspect_describes_an_abi1_kernel_fully():
    path = kit("block", 1)
    text = spt_tool("inspect", path)
    assert text.returncode == 0, text.stderr
    assert "abi         spt, version 1 (Solo5 v0.6.0 to v0.7.5)" in text.stdout
    assert "Solo5 #582" in text.stdout and "solo5_yield" in text.stdout
    assert "--block:storage=PATH" in text.stdout
    doc = json.loads(spt_tool("inspect", "--json", path).stdout)
    assert doc["abi"] == {"type": "solo5.abi", "target": "spt", "version": 1}
    assert doc["abi_info"]["releases"] == "Solo5 v0.6.0 to v0.7.5"
    assert "bss-only" in doc["abi_info"]["loader"]
    assert any("Solo5 #582" in issue for issue in doc["abi_info"]["known_issues"])
    assert [d["name"] for d in doc["manifest"]["devices"]] == ["storage"]
    assert json.loads(spt_tool("inspect", "--query", "abi", path).stdout) == doc["abi"]
    assert json.loads(spt_tool("inspect", "--query", "manifest", path).stdout) == doc["manifest"]


def test_inspect_names_the_releases_of_abi2_and_where_the_hang_applies():
    doc = json.loads(spt_tool("inspect", "--json", kit("hello", 2)).stdout)
    assert doc["abi_info"]["releases"] == "Solo5 v0.8.0 and later"
    assert "PT_LOADs without file contents are skipped" == doc["abi_info"]["loader"]
    assert [i for i in doc["abi_info"]["known_issues"] if "v0.8.x" in i]


def test_policy_is_the_same_for_both_abis(block_file):
    disk = block_file(4096)
    views = {}
    for version in ABIS:
        proc = subprocess.run([SPT, "policy", "--bpf", "-", "--mem=8", "--block:storage=" + disk,
                               kit("block", version)], capture_output=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        views[version] = proc.stdout
    assert views[1] == views[2] and views[1]
