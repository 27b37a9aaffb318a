"""A warm launch (spt/warmlaunch.py) hands the trampoline exactly what the
full launcher would, and takes no launch it cannot make the same way."""

import os
import shutil
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import elfcraft as ec
from conftest import ROOT, SOLO5_SPT, run
from spt import abi, manifest, plan, warmlaunch

# Runs one launch in a fresh interpreter up to the exec and writes the packed
# plan instead: "warm" through spt/warmlaunch.py alone (exit 3 if it declines),
# "full" through spt/launcher.py. The uid and gid (0x7E000000 + the PID of
# the launch) are zeroed, the one difference two launches must have.
PROBE = r"""
import sys
sys.path.insert(0, sys.argv[1])
mode, out, argv = sys.argv[2], sys.argv[3], sys.argv[4:]
from spt import plan, warmlaunch

def capture(launch_plan, timer=None):
    data = bytearray(launch_plan.pack())
    start = plan.HEADER.size - 8 - 4 * 3  # uid, gid, nrlimits, rlimit_off end the header
    data[start:start + 8] = bytes(8)
    with open(out, "wb") as f:
        f.write(data)
    raise SystemExit(0)

plan.exec_trampoline = capture
if mode == "warm":
    warmlaunch.warm_launch(argv)
    raise SystemExit(3)
from spt import launcher
launcher.exec_trampoline = capture
launcher.main(argv)
"""


def test_the_probe_zeroes_the_uid_and_gid_fields():
    names = [name for name, _ in plan.HEADER_FIELDS]
    uid_at = struct.calcsize("<" + "".join(fmt for _, fmt in
                                           plan.HEADER_FIELDS[:names.index("uid")]))
    assert uid_at == plan.HEADER.size - 8 - 4 * 3
    assert names[names.index("uid"):] == ["uid", "gid", "nrlimits", "rlimit_off"]


def plan_bytes(mode, argv, tmp_path, env):
    out = tmp_path / ("%s.plan" % mode)
    if out.exists():
        out.unlink()
    proc = subprocess.run([sys.executable, "-I", "-c", PROBE, str(ROOT), mode, str(out), *argv],
                          env=env, capture_output=True, timeout=120)
    return proc, (out.read_bytes() if out.exists() else None)


@pytest.fixture
def kernel(tmp_path, guest):
    path = tmp_path / "hello.spt"
    shutil.copy(guest("hello"), path)
    return str(path)


@pytest.mark.parametrize("argv, extra_env", [
    ([], {}),
    (["--mem=8"], {}),
    (["--mem=16", "--mem=8", "--"], {}),
    (["--", "KERNEL", "-x", "two words", "caf\u00e9"], {}),
    ([], {"SPT_STOP_ON_TERM": "1", "SPT_NAME": "a-long-unit-name"}),
    ([], {"NOTIFY_SOCKET": "@spt-test-notify"}),
    ([], {"SPT_SHARE": "0"}),
], ids=["plain", "mem", "mem-twice", "args", "env", "notify", "copying"])
def test_a_warm_launch_plans_what_the_full_launcher_plans(kernel, tmp_path, argv, extra_env):
    env = dict(os.environ, SPT_CACHE_DIR=str(tmp_path / "cache"))
    argv = [kernel if a == "KERNEL" else a for a in argv]
    if kernel not in argv:
        argv = argv + [kernel, "arg"]
    filled = run([SOLO5_SPT, *argv], env=dict(env, SPT_SHARE=extra_env.get("SPT_SHARE", "1")))
    assert filled.returncode == 0, filled.stderr  # the launch cache now knows the kernel
    env.update(extra_env)  # a notify socket nobody listens on would stop a real launch
    warm_proc, warm = plan_bytes("warm", argv, tmp_path, env)
    full_proc, full = plan_bytes("full", argv, tmp_path, env)
    assert warm_proc.returncode == 0 and warm, warm_proc.stderr
    assert full_proc.returncode == 0 and full, full_proc.stderr
    assert warm == full


@pytest.mark.parametrize("argv", [
    ["--mem=0"], ["--mem=x"], ["--mem="], ["--jail=off"], ["--block:d=/dev/null"], ["-"],
    ["--help"], ["--version"], [],
], ids=lambda a: " ".join(a) or "no-kernel")
def test_a_warm_launch_declines_what_it_does_not_read(argv):
    assert warmlaunch.warm_options(argv) is None
    assert warmlaunch.warm_options(argv + ["k"]) is None or argv == []


def test_warm_options_read_mem_and_the_end_of_options():
    assert warmlaunch.warm_options(["k"]) == (abi.DEFAULT_MEM_MIB, "k", [])
    assert warmlaunch.warm_options(["--mem=8", "k", "--mem=9"]) == (8, "k", ["--mem=9"])
    assert warmlaunch.warm_options(["--", "--mem=8"]) == (abi.DEFAULT_MEM_MIB, "--mem=8", [])
    assert warmlaunch.warm_options(["--mem=3", "--mem=4", "--", "k", "a"]) == (4, "k", ["a"])


def test_a_launch_the_warm_path_declines_is_the_full_launchers(kernel, tmp_path):
    """A guest with devices, a cache miss, a kernel that is not there: the
    warm path returns without a plan, having left no fd behind."""
    env = dict(os.environ, SPT_CACHE_DIR=str(tmp_path / "cache"))
    proc, out = plan_bytes("warm", [kernel], tmp_path, env)  # nothing cached yet
    assert proc.returncode == 3 and out is None, proc.stderr
    proc, out = plan_bytes("warm", [str(tmp_path / "missing.spt")], tmp_path, env)
    assert proc.returncode != 0 and out is None
    block = str(ROOT / "guests" / "out" / "block.spt")
    assert run([SOLO5_SPT, block], env=env).returncode != 0  # caches the image, refuses
    proc, out = plan_bytes("warm", [block], tmp_path, env)
    assert proc.returncode == 3 and out is None, proc.stderr


@pytest.mark.parametrize("devices", [[], [("storage", 1)], [("service0", 2)],
                                     [("a", 1), ("b", 2)]])
def test_the_no_device_check_agrees_with_the_manifest_parser(devices):
    packed = ec.build_manifest(devices)
    parsed = manifest.parse(packed)
    expected = parsed.pack() if not parsed.devices else None
    assert warmlaunch.no_device_manifest(packed) == expected


@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from([1, 1, 2]), count=st.sampled_from([1, 1, 1, 0, 2]),
       name=st.sampled_from([b"", b"", b"x", b"\0\0rest", b"n" * 68]),
       entry_type=st.sampled_from([abi.MFT_RESERVED_FIRST] * 3 + [1, 2]),
       union=st.binary(min_size=16, max_size=16), hostfd=st.integers(-2**63, 2**63 - 1),
       attached=st.sampled_from([0, 0, 1, 2]), pad=st.binary(min_size=7, max_size=7),
       tail=st.sampled_from([b"", b"", b"\0" * 104, b"x"]))
def test_the_no_device_check_is_parse_then_pack_for_any_bytes(version, count, name, entry_type,
                                                              union, hostfd, attached, pad, tail):
    raw_name = name.ljust(68, b"\0")[:68]
    packed = (struct.pack("<II", version, count) + raw_name + struct.pack("<I", entry_type)
              + union + struct.pack("<qB", hostfd, attached) + pad + tail)
    try:
        parsed = manifest.parse(packed)
        expected = None if parsed.devices else parsed.pack()
    except manifest.ManifestError:
        expected = None
    assert warmlaunch.no_device_manifest(packed) == expected
