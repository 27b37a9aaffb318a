"""Security review (issue 13), the launch side: each test pins one hole that
is now closed (docs/security.md, "Security review (issue 13)")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import elfcraft as ec
from conftest import SOLO5_SPT, SPT, assert_refused, guest_path, run


# --- 12. the trampoline's words for EEXIST ---------------------------------------

TRAMPOLINE_BASE_PAGE_2 = 0x700000002000  # guest memory reaching into the trampoline's image


def test_guest_memory_over_a_mapping_in_place_says_so_in_the_kernels_words(guest):
    # The launcher never plans guest memory over the trampoline; a plan that
    # does (built here by hand) makes mmap(MAP_FIXED_NOREPLACE) fail with EEXIST.
    script = textwrap.dedent("""
        import sys
        from spt import launcher, image
        opts = launcher.parse_argv(["--mem=8", sys.argv[1]])
        plan, _ = launcher.build_plan(opts, image.open_kernel(sys.argv[1]))
        launcher.exec_trampoline(plan._replace(mem_size=int(sys.argv[2])))
    """)
    proc = run([sys.executable, "-c", script, guest("hello"), str(TRAMPOLINE_BASE_PAGE_2)])
    line = assert_refused(proc)
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "overlaps a mapping already in place" in line and "MAP_FIXED_NOREPLACE" in line
    assert line.endswith(": File exists"), line


# --- 9. guest arguments that are not UTF-8 -----------------------------------------

def test_a_guest_argument_that_is_not_utf8_reaches_the_guest_byte_for_byte(guest):
    arg = b"caf\xe9-\xff\xfe"  # Latin-1 and stray bytes: not UTF-8
    proc = subprocess.run([SOLO5_SPT.encode(), b"--mem=8", os.fsencode(guest("hello")), arg,
                           b"two"], capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert b"cmdline: '" + arg + b" two'\n" in proc.stdout


def test_the_command_line_limit_counts_bytes_not_characters(guest):
    fits = subprocess.run([SOLO5_SPT.encode(), b"--mem=8", os.fsencode(guest("hello")),
                           b"\xff" * 8191], capture_output=True, timeout=120)
    assert fits.returncode == 0, fits.stderr
    too_long = run([SOLO5_SPT, "--mem=8", guest("hello"), os.fsdecode(b"\xff" * 8192)])
    assert_refused(too_long, "Guest command line too long (max=8191")


# --- 4. the environment does not choose the allow-list --------------------------------

def _dump(tmp_path, args, **env):
    out = tmp_path / "plan.json"
    proc = run([SOLO5_SPT, *args], env=dict(os.environ, SPT_CACHE="0", SPT_PLAN_DUMP=str(out),
                                            **env))
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_spt_policy_dir_in_the_environment_changes_nothing_a_launch_installs(tmp_path, guest):
    from spt import policy

    planted = tmp_path / "policies"
    planted.mkdir()
    for name in ("core", "block", "net"):
        text = policy.read_policy(name)
        (planted / (name + ".policy")).write_text(text + "getpid  # planted\n")
    clean = _dump(tmp_path, ["--mem=8", guest("hello")])
    tried = _dump(tmp_path, ["--mem=8", guest("hello")], SPT_POLICY_DIR=str(planted))
    assert "getpid" not in {r["syscall"] for r in tried["rules"]}
    assert tried["bpf"] == clean["bpf"]
    # a test that wants other policy text names its directory in-process
    assert "getpid" in policy.read_policy("core", str(planted))


# --- 7. spt inspect on hostile names -----------------------------------------------

ESCAPE = "\x1b]0;owned\x07\x1b[2J"  # set the terminal's title, clear the screen


def _inspect(path, cwd=None):
    proc = run([SPT, "inspect", "--", str(path)], cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _crafted(tmp_path, devices, name="crafted.spt"):
    data = ec.with_manifest(Path(guest_path("block")).read_bytes(), ec.build_manifest(devices))
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_inspect_shows_a_hostile_device_name_escaped_and_suggests_no_launch(tmp_path):
    for name in (ESCAPE, "$(touch owned)"):
        out = _inspect(_crafted(tmp_path, [(name.encode(), ec.MFT_DEV_BLOCK_BASIC)]),
                       cwd=tmp_path)
        assert "\x1b" not in out and "\x07" not in out
        launch = [line for line in out.splitlines() if line.startswith("launch")]
        assert launch and "none: device 1's name" in launch[0], out
        assert "solo5-spt --mem" not in launch[0]
    assert "\\x1b]0;owned\\x07" in _inspect(_crafted(tmp_path, [(ESCAPE.encode(), 1)]))


def _pasted(line, cwd):
    """Run a suggested launch line the way an operator pastes it."""
    assert line.startswith("launch      ")
    env = dict(os.environ, PATH=str(Path(SOLO5_SPT).parent) + ":" + os.environ["PATH"])
    return run(["bash", "-c", line[len("launch      "):]], cwd=cwd, env=env)


@pytest.mark.parametrize("kernel", ["-k.spt", "k$(touch owned).spt", "k;touch owned.spt",
                                    "k\x1b[2Jx.spt", "k'q.spt"])
def test_inspects_launch_line_is_safe_to_paste_and_launches_the_kernel(tmp_path, guest, kernel):
    path = tmp_path / kernel
    shutil.copy(guest("hello"), path)
    out = _inspect(kernel, cwd=tmp_path)
    assert "\x1b" not in out
    launch = out.splitlines()[-1]
    assert " -- " in launch
    proc = _pasted(launch, tmp_path)
    assert proc.returncode == 0, (launch, proc.stderr)
    assert "hello from an spt guest-kit unikernel" in proc.stdout
    assert not (tmp_path / "owned").exists() and not (tmp_path / "owned.spt").exists()


def test_inspects_attach_placeholders_are_quoted(guest):
    out = _inspect(guest("syscall_dev"))
    assert "'--net:service0=IFACE|@FD'" in out.splitlines()[-1]


# --- 6. block paths: pseudo filesystems and devices in use ---------------------------

SYSFS_TUNABLE = "/sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan"


def _dump_block(tmp_path, path):
    # SPT_PLAN_DUMP: attach for real, but no guest ever writes the target
    out = tmp_path / "plan.json"
    return run([SOLO5_SPT, "--block:storage=" + str(path), guest_path("block")],
               env=dict(os.environ, SPT_PLAN_DUMP=str(out)))


def test_a_symlink_to_a_sysfs_attribute_is_refused_as_storage(tmp_path):
    assert os.stat(SYSFS_TUNABLE).st_size == 4096  # would pass as one 4096-byte sector
    link = tmp_path / "disk.img"
    link.symlink_to(SYSFS_TUNABLE)
    before = Path(SYSFS_TUNABLE).read_text()
    assert_refused(_dump_block(tmp_path, link), str(link), "sysfs", "not storage")
    assert Path(SYSFS_TUNABLE).read_text() == before


@pytest.mark.parametrize("path, fstype", [("/proc/self/status", "proc"),
                                          (SYSFS_TUNABLE, "sysfs")])
def test_the_filesystem_type_is_read_from_the_open_fd(path, fstype):
    from spt.devices import block

    fd = os.open(path, os.O_RDONLY)
    try:
        assert block.filesystem_type(fd) == fstype
    finally:
        os.close(fd)


def test_a_symlink_to_a_regular_file_is_followed(tmp_path, block_file):
    link = tmp_path / "by-name"
    link.symlink_to(block_file(8192))
    assert _dump_block(tmp_path, link).returncode == 0


@pytest.fixture
def loop_device(tmp_path):
    backing = tmp_path / "loop.img"
    with open(backing, "wb") as f:
        f.truncate(1 << 20)
    proc = run(["losetup", "--find", "--show", str(backing)])
    if proc.returncode != 0:
        pytest.fail("cannot make a loop device: %s" % proc.stderr.strip())
    device = proc.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def test_a_block_device_held_exclusively_is_refused_and_a_free_one_attaches(tmp_path,
                                                                         loop_device):
    assert _dump_block(tmp_path, loop_device).returncode == 0  # free: attaches
    holder = os.open(loop_device, os.O_RDONLY | os.O_EXCL)  # what a mount or mdadm does
    try:
        assert_refused(_dump_block(tmp_path, loop_device), loop_device, "in use")
    finally:
        os.close(holder)
    assert _dump_block(tmp_path, loop_device).returncode == 0


def test_a_block_device_with_a_mounted_filesystem_is_refused(tmp_path, loop_device):
    assert run(["mkfs.ext4", "-q", "-F", loop_device]).returncode == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # mounted in a mount namespace of its own: the host's mount table is untouched
    script = 'mount "$1" "$2" && exec "$3" --block:storage="$1" "$4"'
    proc = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                loop_device, str(mnt), SOLO5_SPT, guest_path("block")],
               env=dict(os.environ, SPT_PLAN_DUMP=str(tmp_path / "plan.json")))
    assert_refused(proc, loop_device, "Backing storage is in use (a mounted filesystem")
