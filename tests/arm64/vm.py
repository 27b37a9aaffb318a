"""An arm64 Linux under qemu-system-aarch64 that runs spt's aarch64 build.

    python tests/arm64/vm.py [--work DIR] [--keep] [PYTEST ARGS...]

Builds (and caches under DIR, default build/arm64-vm) an arm64 Debian 12
userland and kernel from Debian's packages, unpacked without emulation
(mmdebstrap --variant=extract), adds Python packages for aarch64 from PyPI
at the versions this host's venv tests, packs the project with its aarch64
trampoline and guest kit (built by `make test-arm64` into build/aarch64/)
into an initramfs, boots it under TCG with no network device at all
(`-nic none`: the VM's only links are lo and the TAPs its tests make), runs
pytest inside through the real arm64 kernel, and exits with pytest's status.
Every serial line is echoed with the seconds since boot, so a reader sees
what ran where.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "aarch64"

# Debian's arm64 packages the VM's userland and kernel come from.
DEBIAN_PACKAGES = [
    "busybox-static", "dash", "python3.11", "libpython3.11-stdlib", "libseccomp2", "libcap2",
    "iproute2", "iputils-ping", "libc-bin", "procps", "util-linux", "mount", "ethtool",
    "python3-prctl",
    "linux-image-arm64",
]
# Python packages from PyPI (aarch64 wheels), pinned to what the host's venv
# runs the suite with, so both architectures test the same versions.
PYPI_PACKAGES = ["pyelftools", "pyroute2", "pyseccomp", "pytest", "typer"]
# Modules the tests need, loaded by /init in this order (plain .ko files).
MODULES = ["drivers/net/tun.ko", "drivers/net/veth.ko"]
# What the suite runs inside the VM: every test file that boots guests
# through the kernel and holds on any architecture.
DEFAULT_TESTS = [
    "tests/test_arch.py", "tests/test_smoke.py", "tests/devices/test_block.py",
    "tests/devices/test_net.py", "tests/test_vanishing.py",
]
QEMU = ["qemu-system-aarch64", "-M", "virt", "-cpu", "max,pauth=off", "-smp", "2", "-m", "2048",
        "-nographic", "-monitor", "none", "-serial", "stdio", "-nic", "none", "-no-reboot"]
BOOT_LIMIT_S = 1500
# Debian's arm64 kernel backs anonymous memory with transparent huge pages
# by default ("always"); the x86_64 hosts the suite runs on say "madvise".
# The same policy on both keeps an idle guest's VmRSS comparable (under
# "always" its first touched page is a 2 MiB one; see docs/arm64.md).
KERNEL_ARGS = "transparent_hugepage=madvise"


def log(msg: str) -> None:
    print("arm64-vm: " + msg, flush=True)


def sh(*cmd, **kwargs):
    return subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def mirror_lines() -> list[str]:
    """The machine's own Debian sources (bookworm, -updates, -security), as
    mmdebstrap takes them: one "deb URI SUITE COMPONENTS" each."""
    lines = []
    for path in Path("/etc/apt").glob("sources.list.d/*.sources"):
        stanza = {}
        for raw in path.read_text().splitlines() + [""]:
            if not raw.strip():
                if stanza.get("Types") == "deb":
                    for suite in stanza["Suites"].split():
                        lines.append("deb %s %s %s" % (stanza["URIs"], suite, stanza["Components"]))
                stanza = {}
                continue
            key, _, value = raw.partition(":")
            stanza[key.strip()] = value.strip()
    listing = Path("/etc/apt/sources.list")
    if listing.exists():
        lines += [ln.strip() for ln in listing.read_text().splitlines() if ln.startswith("deb ")]
    if not lines:
        raise SystemExit("arm64-vm: no Debian sources found in /etc/apt")
    return lines


def build_tree(work: Path) -> Path:
    """The arm64 Debian tree (cached: its name is a digest of its inputs)."""
    mirrors = mirror_lines()
    digest = hashlib.sha256("\n".join(DEBIAN_PACKAGES + mirrors).encode()).hexdigest()[:12]
    tree = work / ("tree-" + digest)
    if (tree / ".done").exists():
        log("arm64 Debian tree: cached (%s)" % tree.name)
        return tree
    log("arm64 Debian tree: unpacking %d packages with mmdebstrap" % len(DEBIAN_PACKAGES))
    shutil.rmtree(tree, ignore_errors=True)
    sh("mmdebstrap", "--quiet", "--mode=root", "--variant=extract", "--architectures=arm64",
       "--include=" + ",".join(DEBIAN_PACKAGES), "bookworm", tree, *mirrors)
    (tree / ".done").touch()
    return tree


def pinned(package: str) -> str:
    return "%s==%s" % (package, importlib.metadata.version(package))


def build_pylib(work: Path) -> Path:
    specs = [pinned(p) for p in PYPI_PACKAGES]
    digest = hashlib.sha256("\n".join(specs).encode()).hexdigest()[:12]
    pylib = work / ("pylib-" + digest)
    if (pylib / ".done").exists():
        log("aarch64 Python packages: cached (%s)" % " ".join(specs))
        return pylib
    log("aarch64 Python packages: %s" % " ".join(specs))
    shutil.rmtree(pylib, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--target", str(pylib), "--platform", "manylinux2014_aarch64", "--python-version", "3.11",
         "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:", *specs],
        capture_output=True, text=True)
    # pip's complaints about index locations of this machine's config that do
    # not exist are noise; anything else is shown.
    for line in proc.stderr.splitlines():
        if not re.match(r"WARNING: Location '.*' is ignored", line):
            print(line, file=sys.stderr)
    if proc.returncode:
        raise SystemExit("arm64-vm: pip could not fetch the aarch64 packages")
    (pylib / ".done").touch()
    return pylib


def modules_dir(tree: Path) -> Path:
    """/lib/modules, or /usr/lib/modules in a merged-/usr tree."""
    for where in ("lib/modules", "usr/lib/modules"):
        if (tree / where).is_dir() and not (tree / where).is_symlink():
            return tree / where
    raise SystemExit("arm64-vm: no kernel modules in %s" % tree)


def kernel_files(tree: Path) -> tuple[Path, str]:
    kernels = sorted((tree / "boot").glob("vmlinuz-*-arm64"))
    if not kernels:
        raise SystemExit("arm64-vm: no arm64 kernel in %s/boot" % tree)
    kernel = kernels[-1]
    return kernel, kernel.name[len("vmlinuz-"):]


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


VENV_LAUNCHER = """#!/usr/bin/python3.11 -IS
# solo5-spt inside the arm64 test VM: the shape of scripts/write-launcher's.
import sys
sys.path[1:1] = ["/src", "/usr/local/lib/python3.11/dist-packages", "/usr/lib/python3/dist-packages"]
from spt.warmlaunch import main
sys.exit(main())
"""
VENV_TOOL = """#!/src/.venv/bin/python
import sys
from spt.tool import main
sys.exit(main())
"""
INIT = """#!/bin/busybox sh
# The jail's pivot_root (an empty root for a root launch) does not work on
# the initramfs's own root (rootfs): hand the tree over to a tmpfs first, as
# an initramfs hands over to a real root, then start again from there.
if [ ! -e /.on-tmpfs ]; then
    /bin/busybox mkdir -p /newroot
    /bin/busybox mount -t tmpfs -o size=1536m tmpfs /newroot
    for d in /*; do
        case $d in /newroot|/proc|/sys|/dev) /bin/busybox mkdir -p /newroot$d ;;
        *) /bin/busybox cp -a $d /newroot/ ;; esac
    done
    /bin/busybox touch /newroot/.on-tmpfs
    exec /bin/busybox switch_root /newroot /init
fi
/bin/busybox mount -t proc proc /proc
/bin/busybox mkdir -p /bb && /bin/busybox --install -s /bb
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/bb
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/tmp /var/cache
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
for m in {modules}; do insmod /lib/modules/{kver}/kernel/$m || echo "VM: insmod $m failed"; done
ip link set lo up
ldconfig
echo "VM: $(uname -srm), $(nproc) CPUs, seccomp $(grep -c Seccomp /proc/self/status)"
/bin/dash /vm/run.sh
echo "VM-RC=$?"
sync
poweroff -f
"""
RUN = """set -u
cd /src
export HOME=/root PYTHONDONTWRITEBYTECODE=1 SPT_IN_ARM64_VM=1
echo "VM: python $(python3 -c 'import platform; print(platform.machine(), platform.python_version())')"
.venv/bin/python -m pytest -p no:cacheprovider -o console_output_style=count --color=no --tb=short -rfEs {pytest_args}
"""


def stage(work: Path, tree: Path, pylib: Path, kver: str, pytest_args: list[str]) -> Path:
    """The initramfs tree: Debian's userland, the modules the tests need, the
    Python packages, and the project with its aarch64 build at the places an
    x86_64 checkout has its own."""
    st = work / "stage"
    shutil.rmtree(st, ignore_errors=True)
    log("staging the initramfs")
    sh("cp", "-a", "--reflink=auto", tree, st)
    modules = modules_dir(tree)
    for junk in ("boot", "usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt",
                 str(modules.relative_to(tree)), ".done"):
        path = st / junk
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for mod in MODULES:
        src = modules / kver / "kernel" / mod
        dst = st / modules.relative_to(tree) / kver / "kernel" / mod
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    links = {"bin/sh": "dash", "usr/bin/python3": "python3.11"}
    for link, target in links.items():
        path = st / link
        if not path.exists():
            path.symlink_to(target)
    for mount_point in ("proc", "sys", "dev", "run", "tmp", "var/tmp", "root"):
        (st / mount_point).mkdir(parents=True, exist_ok=True)
    etc = st / "etc"
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    dist = st / "usr/local/lib/python3.11/dist-packages"
    dist.mkdir(parents=True, exist_ok=True)
    sh("cp", "-a", str(pylib) + "/.", dist)
    # The project, as a checkout with its aarch64 build in place.
    src = st / "src"
    for rel in project_files():
        dst = src / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst)
    (src / "spt/libexec").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUILD / "spt-trampoline", src / "spt/libexec/spt-trampoline")
    shutil.copytree(BUILD / "guests", src / "guests/out")
    # A kernel of the other architecture, for the refusal test.
    other = ROOT / "guests/out/hello.spt"
    if other.exists():
        (src / "guests/out-x86_64").mkdir()
        shutil.copy2(other, src / "guests/out-x86_64/hello.spt")
    venv = src / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = true\n"
                                     "version = 3.11\n")
    (venv / "bin/python").symlink_to("/usr/bin/python3.11")
    site = venv / "lib/python3.11/site-packages"
    site.mkdir(parents=True)
    (site / "spt-src.pth").write_text("/src\n")
    for name, text in (("solo5-spt", VENV_LAUNCHER), ("spt", VENV_TOOL)):
        (venv / "bin" / name).write_text(text)
        (venv / "bin" / name).chmod(0o755)
    (st / "vm").mkdir(exist_ok=True)
    (st / "vm/run.sh").write_text(RUN.format(pytest_args=" ".join(pytest_args)))
    init = st / "init"
    init.write_text(INIT.format(modules=" ".join(MODULES), kver=kver))
    init.chmod(0o755)
    # No postinst ran: byte-compile everything once here (a .pyc does not
    # depend on the architecture; unchecked hashes ignore mtimes).
    log("byte-compiling the VM's Python")
    sh("/usr/bin/python3.11", "-m", "compileall", "-q", "-f", "-j0",
       "--invalidation-mode", "unchecked-hash", "-s", st, "-p", "/",
       st / "usr/lib/python3.11", dist, st / "usr/lib/python3/dist-packages", src / "spt",
       src / "tests", stdout=subprocess.DEVNULL)
    return st


def pack(work: Path, st: Path) -> Path:
    initrd = work / "initrd.cpio"
    log("packing the initramfs (uncompressed: gunzip under TCG costs seconds)")
    names = subprocess.run(["find", "."], cwd=st, check=True, capture_output=True).stdout
    names = b"\n".join(sorted(names.split(b"\n"))) + b"\n"
    with open(initrd, "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=st, input=names,
                       stdout=out, check=True)
    return initrd


def boot(kernel: Path, initrd: Path, boot_log: Path) -> int:
    """Boot, echo the console with timestamps, return the VM's VM-RC."""
    cmd = QEMU + ["-kernel", str(kernel), "-initrd", str(initrd),
                  "-append", "console=ttyAMA0 rdinit=/init panic=-1 quiet " + KERNEL_ARGS]
    log("booting: " + " ".join(cmd))
    start = time.monotonic()
    rc = None
    with open(boot_log, "w") as keep, subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as vm:
        try:
            for raw in vm.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                keep.write(line + "\n")
                print("[%6.1f] %s" % (time.monotonic() - start, line), flush=True)
                m = re.fullmatch(r"VM-RC=(\d+)", line.strip())
                if m:
                    rc = int(m[1])
                if time.monotonic() - start > BOOT_LIMIT_S:
                    log("the VM ran longer than %d s: stopping it" % BOOT_LIMIT_S)
                    break
        finally:
            if vm.poll() is None:
                vm.kill()
            vm.wait()
    if rc is None:
        log("the VM ended without reporting a status (see %s)" % boot_log)
        return 1
    log("VM-RC=%d after %.0f s" % (rc, time.monotonic() - start))
    return rc


def check_host() -> None:
    missing = [t for t in ("qemu-system-aarch64", "mmdebstrap", "cpio", "/usr/bin/python3.11")
               if not shutil.which(t)]
    if missing:
        raise SystemExit("arm64-vm: missing on this host: %s (scripts/install-deps --arm64)"
                         % ", ".join(missing))
    for built in (BUILD / "spt-trampoline", BUILD / "guests/hello.spt"):
        if not built.exists():
            raise SystemExit("arm64-vm: %s is not built (make test-arm64 builds it)" % built)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(ROOT / "build" / "arm64-vm"))
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()
    check_host()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tree = build_tree(work)
    pylib = build_pylib(work)
    kernel, kver = kernel_files(tree)
    st = stage(work, tree, pylib, kver, args.pytest_args or DEFAULT_TESTS)
    initrd = pack(work, st)
    shutil.rmtree(st)
    return boot(kernel, initrd, work / "boot.log")


if __name__ == "__main__":
    sys.exit(main())
