"""Packaging as a Python user expects it, and a launch the environment cannot enter.

- `solo5-spt` starts Python isolated (-I) and without site (-S), whatever
  installed it: a planted `spt/__init__.py` or `sitecustomize.py` on
  PYTHONPATH, or in the working directory, changes nothing in a launch.
- The wheel is a platform wheel (it carries the trampoline), built from the
  sdist, which compiles the trampoline or says in one line why it cannot.
- `make install DESTDIR=...` stages an installation that runs from PREFIX,
  without touching the host's /usr/local.
- The dependency pins hold what the suite runs with; LICENSE matches.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, SOLO5_SPT, SPT, guest_path, run

PLANTED = "import sys; sys.stderr.write('PLANTED CODE RAN\\n'); open(%r, 'w').close()\n"


def first_line(path) -> str:
    with open(path, errors="replace") as f:
        return f.readline().rstrip("\n")


def plant(directory: Path, marker: Path) -> None:
    """A directory that runs code if Python ever looks into it."""
    (directory / "spt").mkdir(parents=True)
    for name in ("sitecustomize.py", "usercustomize.py", "spt/__init__.py"):
        (directory / name).write_text(PLANTED % str(marker))


def assert_launch_untouched(launcher: str, tmp_path: Path, cwd=None) -> None:
    planted, marker = tmp_path / "planted", tmp_path / "ran"
    plant(planted, marker)
    home = tmp_path / "home"  # a user site that would run code too
    user_site = home / ".local" / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages"
    plant(user_site, marker)
    env = dict(os.environ, PYTHONPATH=str(planted), PYTHONSTARTUP=str(planted / "sitecustomize.py"),
               PYTHONINSPECT="1", HOME=str(home), PYTHONUSERBASE=str(home / ".local"))
    proc = run([launcher, "--mem=8", guest_path("hello"), "untouched"], env=env,
               cwd=cwd or str(planted))
    assert proc.returncode == 0, proc.stderr
    assert "cmdline: 'untouched'" in proc.stdout
    assert "PLANTED" not in proc.stderr and not marker.exists()
    # the same plant does run code in a Python that is not isolated: the test can fail
    control = run([sys.executable, "-c", "pass"], env=env, cwd=str(planted))
    assert marker.exists(), control.stderr


def test_the_entry_scripts_start_python_isolated():
    assert first_line(SOLO5_SPT).endswith(" -IS"), first_line(SOLO5_SPT)
    assert first_line(SPT).endswith(" -I"), first_line(SPT)
    spt_oci = os.path.join(os.path.dirname(SPT), "spt-oci")  # engines run it as root
    assert first_line(spt_oci).endswith(" -I"), first_line(spt_oci)


def test_the_environment_cannot_put_code_into_a_launch(tmp_path):
    assert_launch_untouched(SOLO5_SPT, tmp_path)


def test_the_working_directory_cannot_put_code_into_a_launch(tmp_path):
    """cwd holding spt/ and sitecustomize.py, PYTHONPATH unset (a launcher
    written as `python -m spt.launcher` would import the planted spt/)."""
    marker = tmp_path / "ran"
    plant(tmp_path / "cwd", marker)
    proc = run([SOLO5_SPT, "--mem=8", guest_path("hello")], cwd=str(tmp_path / "cwd"),
               env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


def test_license_is_the_isc_text_pyproject_names():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "ISC" and meta["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("ISC License\n\nCopyright (c) 2026 the spt authors\n")
    assert "Permission to use, copy, modify, and/or distribute this software" in text


def test_every_dependency_is_pinned_to_a_range_the_suite_runs_with():
    from importlib import metadata

    from packaging.requirements import Requirement

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = meta["dependencies"] + [r for extra in meta["optional-dependencies"].values()
                                           for r in extra]
    names = set()
    for text in requirements:
        req = Requirement(text)
        names.add(req.name)
        bounds = {spec.operator for spec in req.specifier}
        assert ">=" in bounds and "<" in bounds, text  # a floor and a ceiling
        installed = metadata.version(req.name)
        assert req.specifier.contains(installed, prereleases=True), (text, installed)
    assert {"typer", "pyseccomp", "pyelftools", "python-prctl", "pyroute2", "pytest",
            "hypothesis", "matplotlib"} <= names


# --- the wheel and the sdist (slow: builds in fresh environments) ---------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`python -m build` from a copy of the tree: the sdist, then the wheel
    built from that sdist (so the sdist is what compiles the trampoline)."""
    out = tmp_path_factory.mktemp("dist")
    proc = run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, os.listdir(out)
    return wheels[0], sdists[0]


@pytest.mark.slow
def test_the_wheel_is_a_platform_wheel_carrying_the_trampoline(built):
    wheel, _ = built
    assert wheel.name == "spt-0.1.0-py3-none-linux_x86_64.whl", wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        tags = z.read("spt-0.1.0.dist-info/WHEEL").decode()
        entry_points = z.read("spt-0.1.0.dist-info/entry_points.txt").decode()
        trampoline = z.read("spt/libexec/spt-trampoline")
    assert "Root-Is-Purelib: false" in tags and "Tag: py3-none-linux_x86_64" in tags
    assert {"spt/policies/core.policy", "spt-0.1.0.data/scripts/solo5-spt",
            "spt-0.1.0.dist-info/licenses/LICENSE"} <= names
    assert trampoline[:4] == b"\x7fELF" and trampoline[18] == 62  # EM_X86_64
    assert "solo5-spt" not in entry_points  # not pip's wrapper: the isolated script


@pytest.mark.slow
def test_an_aarch64_wheel_cross_builds_with_an_aarch64_trampoline(tmp_path):
    """The arm64 hosts' wheel, built here as a packager would (`make wheel
    WHEEL_ARCH=aarch64`); make test-arm64 runs the same trampoline in an
    arm64 VM."""
    cc = shutil.which("aarch64-linux-gnu-gcc")
    if cc is None:
        pytest.skip("no aarch64 cross compiler (scripts/install-deps --arm64 installs it)")
    out = tmp_path / "dist"
    proc = run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
               timeout=600, env=dict(os.environ, SPT_ARCH="aarch64", CC=cc))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [wheel] = out.glob("*.whl")
    assert wheel.name == "spt-0.1.0-py3-none-linux_aarch64.whl", wheel.name
    with zipfile.ZipFile(wheel) as z:
        tags = z.read("spt-0.1.0.dist-info/WHEEL").decode()
        trampoline = z.read("spt/libexec/spt-trampoline")
    assert "Tag: py3-none-linux_aarch64" in tags
    assert trampoline[:4] == b"\x7fELF" and trampoline[18] == 183  # EM_AARCH64


@pytest.mark.slow
def test_the_sdist_never_carries_a_prebuilt_trampoline(built):
    import tarfile

    _, sdist = built
    with tarfile.open(sdist) as t:
        names = t.getnames()
    assert not [n for n in names if "libexec" in n], names
    assert "spt-0.1.0/native/trampoline.c" in names and "spt-0.1.0/LICENSE" in names


@pytest.mark.slow
def test_the_sdist_without_a_c_compiler_fails_with_one_clear_line(built, tmp_path):
    _, sdist = built
    bare = tmp_path / "bin"  # make but no C compiler on PATH
    bare.mkdir()
    os.symlink(shutil.which("make"), bare / "make")
    env = dict(os.environ, PATH=str(bare), CC="cc")
    proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "w"),
                str(sdist)], env=env, timeout=600)
    assert proc.returncode != 0
    line = ("spt: building the trampoline (native/) needs a C compiler and make; not found: "
            "cc (Debian: apt-get install gcc make)")
    assert line in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not list((tmp_path).glob("w/*.whl"))


@pytest.fixture(scope="module")
def wheel_venv(built, tmp_path_factory):
    """A fresh venv outside the repository with the wheel installed."""
    wheel, _ = built
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    assert made.returncode == 0, made.stderr
    proc = run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], timeout=600,
               cwd=str(venv))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return venv


@pytest.mark.slow
def test_the_wheel_installed_outside_the_repo_runs_a_guest(wheel_venv, tmp_path):
    launcher = wheel_venv / "bin" / "solo5-spt"
    assert first_line(launcher) == "#!/bin/sh"  # the isolated script, not pip's wrapper
    proc = run([str(launcher), "--mem=8", guest_path("hello"), "from the wheel"],
               cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "cmdline: 'from the wheel'" in proc.stdout
    where = run([str(wheel_venv / "bin" / "python"), "-c",
                 "import spt.launcher; print(spt.launcher.__file__)"], cwd=str(tmp_path))
    assert where.stdout.startswith(str(wheel_venv)), where.stdout
    doctor = run([str(wheel_venv / "bin" / "spt"), "doctor"], cwd=str(tmp_path))
    assert "trampoline" in doctor.stdout and doctor.returncode == 0, doctor.stdout


@pytest.mark.slow
def test_the_wheels_launcher_is_isolated_too(wheel_venv, tmp_path):
    assert_launch_untouched(str(wheel_venv / "bin" / "solo5-spt"), tmp_path)


# --- make install -------------------------------------------------------------------

def make_install(destdir: Path, *extra: str):
    return run(["make", "-s", "-C", str(ROOT), "install", "DESTDIR=%s" % destdir,
                "PYTHON=%s" % sys._base_executable, *extra], timeout=900)


def assert_no_destdir_inside(tree: Path, destdir: Path) -> None:
    needle = str(destdir).encode()
    leaks = [str(p) for p in tree.rglob("*") if p.is_file() and not p.is_symlink()
             and needle in p.read_bytes()]
    assert not leaks, leaks[:5]


@pytest.mark.slow
def test_make_install_stages_under_destdir_and_leaves_usr_local_alone(tmp_path):
    before = sorted(os.listdir("/usr/local/bin")), os.path.exists("/usr/local/lib/spt")
    destdir = tmp_path / "stage"
    proc = make_install(destdir)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (sorted(os.listdir("/usr/local/bin")), os.path.exists("/usr/local/lib/spt")) == before
    bindir = destdir / "usr" / "local" / "bin"
    assert sorted(os.listdir(bindir)) == ["solo5-spt", "spt", "spt-oci"]
    assert first_line(bindir / "solo5-spt") == "#!/usr/local/lib/spt/bin/python -IS"
    assert first_line(bindir / "spt") == "#!/usr/local/lib/spt/bin/python -I"
    assert_no_destdir_inside(destdir / "usr" / "local", destdir)
    # Seen where it is meant to be (an overlay of the stage on /usr/local in
    # a mount namespace of this test's own), the installed solo5-spt runs a guest.
    script = ('mount -t overlay overlay -o lowerdir="$1/usr/local":/usr/local /usr/local && '
              'exec /usr/local/bin/solo5-spt --mem=8 "$2" "installed"')
    proc = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                str(destdir), guest_path("hello")], cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert "cmdline: 'installed'" in proc.stdout


@pytest.mark.slow
def test_make_install_with_a_prefix_runs_from_there(tmp_path):
    destdir, prefix = tmp_path / "stage", tmp_path / "opt" / "spt"
    proc = make_install(destdir, "PREFIX=%s" % prefix)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    shutil.move(str(destdir) + str(prefix), str(prefix))  # what a package manager does
    shutil.rmtree(destdir)
    assert_no_destdir_inside(prefix, destdir)
    launch = run([str(prefix / "bin" / "solo5-spt"), "--mem=8", guest_path("hello"), "moved"],
                 cwd="/")
    assert launch.returncode == 0, launch.stderr
    assert "cmdline: 'moved'" in launch.stdout
    version = run([str(prefix / "bin" / "spt"), "--version"], cwd="/")
    assert version.returncode == 0 and version.stdout.startswith("spt "), version.stderr
    assert_launch_untouched(str(prefix / "bin" / "solo5-spt"), tmp_path)


@pytest.mark.slow
def test_a_pip_editable_install_gets_the_isolated_launcher_without_site(tmp_path):
    """`pip install -e .` into a fresh venv (setuptools' finder hook, not
    make's compat mode): the launcher finds spt through spt's own .pth and
    never runs `site` (whose .pth files would cost every launch)."""
    venv = tmp_path / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)], timeout=300).returncode == 0
    proc = run([str(venv / "bin" / "pip"), "install", "-q", "-e", str(ROOT)], timeout=600,
               cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    launcher = venv / "bin" / "solo5-spt"
    assert first_line(launcher) == "#!/bin/sh"
    launch = run([str(launcher), "--mem=8", guest_path("hello"), "editable"], cwd=str(tmp_path))
    assert launch.returncode == 0, launch.stderr
    assert "cmdline: 'editable'" in launch.stdout
    timed = run([str(venv / "bin" / "python"), "-I", "-S", "-X", "importtime", str(launcher),
                 "--version"], cwd=str(tmp_path))
    assert timed.returncode == 0, timed.stderr
    modules = {line.rsplit("|", 1)[1].strip() for line in timed.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    assert "spt.launcher" in modules and "site" not in modules, sorted(modules)
    assert_launch_untouched(str(launcher), tmp_path / "plant")
