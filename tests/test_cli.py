"""The `solo5-spt` command line contract (docs: solo5-spt-cli.md), through
the real launcher: every rule of the syntax and every message scripts look
for, with the exact words."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import elfcraft as ec
from conftest import SOLO5_SPT, assert_refused, guest_path, spt_run

USAGE_FIRST_LINE = "usage: solo5-spt [ OPTIONS ] [ -- ] KERNEL [ ARGS... ]"


def refused_one_line(proc, *fragments: str) -> str:
    """A refusal that is exactly one line (no usage after it), before any
    guest output."""
    line = assert_refused(proc, *fragments)
    assert proc.stderr.splitlines() == [line], proc.stderr
    assert proc.stdout == "", proc.stdout
    return line


def refused_with_usage(proc, *fragments: str) -> str:
    """A refusal line followed by the usage text."""
    line = assert_refused(proc, *fragments)
    assert proc.stderr.splitlines()[1] == USAGE_FIRST_LINE, proc.stderr
    assert proc.stdout == "", proc.stdout
    return line


def assert_usage(proc) -> None:
    """--help: the usage on stderr, nothing on stdout, exit status 1."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stderr.splitlines()[0] == USAGE_FIRST_LINE, proc.stderr
    for option in ("--mem=", "--block:NAME=PATH", "--block-sector-size:NAME=N",
                   "--net:NAME=IFACE", "--net-mac:NAME=HWADDR", "--x-exec-heap"):
        assert option in proc.stderr, option
    assert proc.stdout == ""


def ran_hello(proc, cmdline: str) -> None:
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "cmdline: '%s'" % cmdline in proc.stdout, proc.stdout


def craft(tmp_path: Path, data: bytes, name: str = "crafted.spt") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.fixture(scope="module")
def hello_bytes():
    return Path(guest_path("hello")).read_bytes()


# --- --help and --version ------------------------------------------------------------

def test_help_prints_usage_on_stderr_and_exits_1():
    assert_usage(spt_run("--help"))


@pytest.mark.parametrize("before", [["--mem=8"], ["--x-exec-heap"], ["--block:storage=/nonexistent"],
                                    ["--mem=8", "--net:service0=tap9"]],
                         ids=["mem", "x-exec-heap", "block", "mem-net"])
def test_help_after_other_options_still_prints_usage(guest, before):
    assert_usage(spt_run(*before, "--help", guest("hello")))


def test_help_is_acted_on_before_the_kernel_is_opened():
    assert_usage(spt_run("--help", "/nonexistent/kernel.spt"))


def test_version_names_abi_version_2_and_exits_0():
    proc = spt_run("--version")
    assert proc.returncode == 0, proc.stderr
    assert "ABI version 2" in proc.stderr.splitlines()
    assert proc.stderr.startswith("solo5-spt ")
    assert proc.stdout == ""


@pytest.mark.parametrize("before", [["--mem=8"], ["--block:storage=/nonexistent"]],
                         ids=["mem", "block"])
def test_version_after_other_options_still_prints_the_version(guest, before):
    proc = spt_run(*before, "--version", guest("hello"))
    assert proc.returncode == 0, proc.stderr
    assert "ABI version 2" in proc.stderr
    assert "cmdline" not in proc.stdout  # the guest did not run


# --- KERNEL, --, and the guest's arguments ------------------------------------------------

def test_arguments_after_kernel_become_the_guest_command_line(guest):
    ran_hello(spt_run("--mem=8", guest("hello"), "one", "two  three", ""), "one two  three ")


def test_guest_arguments_that_look_like_options_go_to_the_guest(guest):
    args = ["--mem=1", "--help", "--version", "--", "--block:x=y", "--bogus", "-x"]
    ran_hello(spt_run("--mem=8", guest("hello"), *args), " ".join(args))


def test_double_dash_ends_the_options(guest):
    ran_hello(spt_run("--mem=8", "--", guest("hello"), "--help"), "--help")


def test_double_dash_lets_a_kernel_name_start_with_a_dash(guest, tmp_path):
    shutil.copy(guest("hello"), tmp_path / "-hello.spt")
    ran_hello(spt_run("--mem=8", "--", "-hello.spt", "a", cwd=tmp_path), "a")
    refused_with_usage(spt_run("--mem=8", "-hello.spt", "a", cwd=tmp_path),
                       "Invalid option: `-hello.spt'")


def test_only_the_first_double_dash_ends_options(guest):
    ran_hello(spt_run("--mem=8", "--", guest("hello"), "--", "x"), "-- x")


@pytest.mark.parametrize("args", [[], ["--mem=8"], ["--mem=8", "--"], ["--x-exec-heap"],
                                  ["--block:storage=/nonexistent"]],
                         ids=["nothing", "options-only", "double-dash-only", "x-exec-heap",
                              "device"])
def test_missing_kernel_is_refused_with_usage(args):
    line = refused_with_usage(spt_run(*args), "Missing KERNEL operand")
    assert line == "solo5-spt: Missing KERNEL operand"


# --- --mem ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-1", "abc", "", "1.5", "0x10", "+8", " 8", "8 ",
                                   "8M", "²", "٨", "00"],
                         ids=["zero", "negative", "abc", "empty", "fraction", "hex", "plus",
                              "lead-space", "trail-space", "suffix", "superscript",
                              "arabic-digit", "zeros"])
def test_malformed_mem_is_refused(guest, value):
    line = assert_refused(spt_run("--mem=" + value, guest("hello")), "Malformed argument to --mem")
    assert line == "solo5-spt: Malformed argument to --mem"


def test_mem_without_a_value_is_refused_as_an_invalid_option(guest):
    # Solo5's parser takes only --mem=N: a bare --mem is no option it knows
    line = refused_with_usage(spt_run("--mem", guest("hello")))
    assert line == "solo5-spt: Invalid option: `--mem'"


@pytest.mark.parametrize("value", ["8", "08", "16"])
def test_mem_in_mib_is_accepted(guest, value):
    ran_hello(spt_run("--mem=" + value, guest("hello"), "m"), "m")


def test_last_mem_option_wins(guest):
    # --mem=1 alone is too small for any image; given first, it is replaced
    ran_hello(spt_run("--mem=1", "--mem=8", guest("hello")), "")


# --- invalid options and NAME ------------------------------------------------------------

@pytest.mark.parametrize("option", ["--bogus", "-x", "-", "--block", "--net", "--memory=8",
                                    "--help=1", "--block-size:storage=512", "--Block:storage=x",
                                    "---block:storage=x"])
def test_option_no_module_takes_is_refused_with_usage(guest, option):
    line = refused_with_usage(spt_run(option, guest("hello")))
    assert line == "solo5-spt: Invalid option: `%s'" % option


@pytest.mark.parametrize("name", ["a" * 68, "", "a-b", "a_b", "a.b", "a b", "ä", "name/x"],
                         ids=["68-chars", "empty", "dash", "underscore", "dot", "space",
                              "non-ascii", "slash"])
@pytest.mark.parametrize("flag", ["block", "block-sector-size", "net", "net-mac"])
def test_device_name_outside_the_name_rules_is_refused(guest, flag, name):
    # Solo5's parser does not take such an option: its words, then why
    option = "--%s:%s=x" % (flag, name)
    line = refused_with_usage(spt_run(option, guest("hello")),
                              "Malformed argument to --%s" % flag, "1 to 67 of [A-Za-z0-9]")
    assert line.startswith("solo5-spt: Invalid option: `%s' (" % option)


@pytest.mark.parametrize("flag", ["block", "net"])
def test_device_option_without_equals_is_refused(guest, flag):
    assert_refused(spt_run("--%s:storage" % flag, guest("hello")), "--%s" % flag)


def test_device_name_of_67_characters_is_accepted_by_the_parser(guest):
    # It gets as far as the manifest, which does not declare it.
    name = "N" * 67
    refused_one_line(spt_run("--block:%s=/nonexistent" % name, guest("hello")),
                     "Resource not declared in manifest: '%s'" % name)


# --- the manifest and the devices ----------------------------------------------------------

def test_device_not_in_the_manifest_is_refused(guest, block_file):
    line = refused_one_line(spt_run("--block:storage=" + block_file(4096), guest("hello")))
    assert line == "solo5-spt: Resource not declared in manifest: 'storage'"


def test_unknown_device_name_is_refused_even_when_others_are_declared(guest, block_file):
    disk = block_file(4096)
    refused_one_line(spt_run("--block:storage=" + disk, "--block:other=" + disk, guest("block")),
                     "Resource not declared in manifest: 'other'")


@pytest.mark.parametrize("guest_name, option", [
    ("block", "--net:storage=tap0"),
    ("block", "--net-mac:storage=02:00:00:00:00:01"),
    ("net", "--block:service0=/dev/null"),
    ("net", "--block-sector-size:service0=512"),
], ids=["net-for-block", "net-mac-for-block", "block-for-net", "sector-size-for-net"])
def test_device_name_of_the_wrong_type_is_refused(guest, guest_name, option):
    name = option.split(":", 1)[1].split("=", 1)[0]
    refused_one_line(spt_run("--mem=8", option, guest(guest_name)),
                     "Resource not declared in manifest: '%s'" % name)


@pytest.mark.parametrize("guest_name, unattached", [
    ("block", [("storage", "BLOCK_BASIC")]),
    ("net", [("service0", "NET_BASIC")]),
    ("syscall_dev", [("storage", "BLOCK_BASIC"), ("service0", "NET_BASIC")]),
])
def test_declared_device_left_unattached_is_refused(guest, guest_name, unattached):
    line = refused_one_line(spt_run("--mem=8", guest(guest_name)))
    for name, type_name in unattached:
        assert "Device '%s' of type %s declared but not attached." % (name, type_name) in line
    assert line.endswith("All declared devices must be attached. See --help for syntax.")


def test_only_the_unattached_device_is_named(guest, block_file):
    line = refused_one_line(spt_run("--mem=8", "--block:storage=" + block_file(4096),
                                    guest("syscall_dev")))
    assert "Device 'service0' of type NET_BASIC declared but not attached." in line
    assert "'storage'" not in line


# --- block devices ---------------------------------------------------------------------------

@pytest.mark.parametrize("size, sector", [(1000, None), (513, None), (4096 + 512, 4096),
                                          (512, 4096), (1536, 1024)])
def test_block_file_not_sector_aligned_is_refused(guest, block_file, size, sector):
    opts = ["--block-sector-size:storage=%d" % sector] if sector else []
    disk = block_file(size)
    refused_one_line(spt_run("--mem=8", "--block:storage=" + disk, *opts, guest("block")),
                     "Backing storage size must be block aligned")


def test_empty_block_file_is_refused_as_smaller_than_one_block(guest, block_file):
    refused_one_line(spt_run("--mem=8", "--block:storage=" + block_file(0), guest("block")),
                     "Backing storage must be at least 1 block")


@pytest.mark.parametrize("value", ["511", "513", "0", "1000", "256", "65536", "1536"])
def test_bad_sector_size_is_refused(guest, block_file, value):
    line = refused_one_line(spt_run("--mem=8", "--block:storage=" + block_file(8192),
                                    "--block-sector-size:storage=" + value, guest("block")))
    assert line == ("solo5-spt: Block size must be a multiple of 2 greater than or equal 512")


@pytest.mark.parametrize("value", ["x", "", "-512", "+512", "5_12", "0x200"])
def test_sector_size_that_is_no_number_is_an_invalid_option(guest, block_file, value):
    option = "--block-sector-size:storage=" + value
    line = refused_with_usage(spt_run("--mem=8", "--block:storage=" + block_file(8192),
                                      option, guest("block")))
    assert line == ("solo5-spt: Invalid option: `%s' (Block size must be a multiple of 2 "
                    "greater than or equal 512)" % option)


@pytest.mark.parametrize("sector", [512, 1024, 4096, 32768])
def test_power_of_two_sector_sizes_are_accepted(guest, block_file, sector):
    proc = spt_run("--mem=8", "--block:storage=" + block_file(2 * sector),
                   "--block-sector-size:storage=%d" % sector, guest("block"), "read", "1")
    assert proc.returncode == 0, proc.stderr
    assert "sector=%d" % sector in proc.stdout


def test_missing_block_file_is_refused(guest, tmp_path):
    refused_one_line(spt_run("--mem=8", "--block:storage=%s/none.img" % tmp_path, guest("block")),
                     "none.img", "No such file or directory")


# --- net devices (inside a namespace of this test) -------------------------------------------

def test_tap_that_does_not_exist_cannot_be_attached(guest, netns):
    proc = netns.exec(SOLO5_SPT, "--mem=8", "--net:service0=nosuch0", guest("net"))
    line = refused_one_line(proc, "Could not attach interface: nosuch0: ")
    assert line.split("nosuch0: ", 1)[1]  # a reason follows


def test_tap_that_is_down_cannot_be_attached(guest, netns):
    netns.check("ip", "tuntap", "add", "dev", "tapdown0", "mode", "tap")
    proc = netns.exec(SOLO5_SPT, "--mem=8", "--net:service0=tapdown0", guest("net"))
    refused_one_line(proc, "Could not attach interface: tapdown0: Network is down")


def test_interface_that_is_not_a_tap_cannot_be_attached(guest, netns):
    # lo exists and is up, but it is no TAP
    proc = netns.exec(SOLO5_SPT, "--mem=8", "--net:service0=lo", guest("net"))
    refused_one_line(proc, "Could not attach interface: lo: ")


# --- the image -------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate", [
    lambda d: ec.set_note_header(d, ec.ABI1, n_type=0),
    lambda d: ec.set_phdr(d, ec.note_segment(d, ec.ABI1), p_type=ec.PT_NULL),
], ids=["note-type", "no-pt-note"])
def test_elf_without_abi_note_is_refused(hello_bytes, tmp_path, mutate):
    path = craft(tmp_path, mutate(hello_bytes))
    line = refused_one_line(spt_run("--mem=8", path))
    assert line == "solo5-spt: %s: No Solo5 ABI information found in executable" % path


@pytest.mark.parametrize("target", [1, 3, 6])
def test_image_for_another_target_is_refused(hello_bytes, tmp_path, target):
    path = craft(tmp_path, ec.set_abi1(hello_bytes, target=target))
    refused_one_line(spt_run("--mem=8", path), "Executable is not for the solo5-spt target")


@pytest.mark.parametrize("version", [0, 3])
def test_image_for_another_abi_version_is_refused(hello_bytes, tmp_path, version):
    path = craft(tmp_path, ec.set_abi1(hello_bytes, version=version))
    refused_one_line(spt_run("--mem=8", path),
                     "Executable requests unsupported ABI version %d" % version)


def test_image_without_manifest_is_refused(hello_bytes, tmp_path):
    path = craft(tmp_path, ec.set_note_header(hello_bytes, ec.MFT1, n_type=0))
    line = refused_one_line(spt_run("--mem=8", path))
    assert line == "solo5-spt: %s: No Solo5 manifest found in executable" % path


@pytest.mark.parametrize("mutate", [
    lambda d: ec.set_manifest_header(d, version=2),
    lambda d: ec.set_manifest_header(d, entries=2),
    lambda d: ec.set_manifest_entry(d, 0, type=ec.MFT_DEV_BLOCK_BASIC),
    lambda d: ec.set_manifest_entry(d, 0, attached=1),
    lambda d: ec.with_manifest(d, ec.build_manifest([("n" * 68, 1)])),
], ids=["version", "entries", "entry0-type", "attached", "name-unterminated"])
def test_image_with_invalid_manifest_is_refused(hello_bytes, tmp_path, mutate):
    path = craft(tmp_path, mutate(hello_bytes))
    refused_one_line(spt_run("--mem=8", path), "%s: Solo5 manifest is invalid" % path)


def test_nonexistent_kernel_is_refused(tmp_path):
    path = str(tmp_path / "missing.spt")
    line = refused_one_line(spt_run("--mem=8", path))
    assert line == "solo5-spt: %s: Could not open: No such file or directory" % path


def test_directory_as_kernel_is_refused(tmp_path):
    refused_one_line(spt_run("--mem=8", str(tmp_path)), "%s: Is a directory" % tmp_path,
                     "not a regular file")


def test_fifo_as_kernel_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "kernel.fifo"
    os.mkfifo(fifo)
    # no writer ever opens the FIFO: a blocking open would hang until timeout
    refused_one_line(spt_run("--mem=8", str(fifo), timeout=60), "not a regular file")


def test_device_node_as_kernel_is_refused():
    refused_one_line(spt_run("--mem=8", "/dev/zero", timeout=60), "not a regular file")


def test_empty_file_as_kernel_is_refused(tmp_path):
    path = craft(tmp_path, b"")
    refused_one_line(spt_run("--mem=8", path), path, "not a valid ELF file")


def test_text_file_as_kernel_is_refused(tmp_path):
    path = craft(tmp_path, b"#!/bin/sh\necho this is not a unikernel\n", "script.sh")
    refused_one_line(spt_run("--mem=8", path), path, "not a valid ELF file")


def test_host_executable_as_kernel_is_refused():
    refused_one_line(spt_run("--mem=8", "/bin/true"), "/bin/true: ")


# --- the command line -------------------------------------------------------------------------

def test_command_line_of_8191_characters_is_accepted(guest):
    arg = "c" * 8191
    ran_hello(spt_run("--mem=8", guest("hello"), arg), arg)


def test_command_line_of_8191_characters_joined_from_arguments_is_accepted(guest):
    args = ["a" * 4095, "b" * 4095]
    ran_hello(spt_run("--mem=8", guest("hello"), *args), " ".join(args))


@pytest.mark.parametrize("args", [["c" * 8192], ["a" * 4096, "b" * 4095], ["é" * 4096]],
                         ids=["one-arg", "joined", "utf8-bytes"])
def test_command_line_of_8192_or_more_bytes_is_refused(guest, args):
    line = refused_one_line(spt_run("--mem=8", guest("hello"), *args))
    assert line == "solo5-spt: Guest command line too long (max=8191 characters)"


# --- --x-exec-heap ----------------------------------------------------------------------------

def test_x_exec_heap_warns_and_still_runs_the_guest(guest):
    proc = spt_run("--mem=8", "--x-exec-heap", guest("hello"), "x")
    ran_hello(proc, "x")
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and warnings[0].startswith("solo5-spt: ")
    assert "--x-exec-heap" in warnings[0] and "executable" in warnings[0]


def test_no_warning_without_x_exec_heap(guest):
    proc = spt_run("--mem=8", guest("hello"))
    assert proc.returncode == 0 and "WARNING" not in proc.stderr
