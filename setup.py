"""Package build hook: the trampoline is compiled, never shipped prebuilt.

`pip install .` (and wheels, and the sdist) run `make -C native` into the
build tree and copy `policies/` into the package, so an installed spt carries
both. The editable install used by `make` (compat mode) finds them in the
source tree instead.

The wheel carries that binary, so it is a platform wheel: tagged
`py3-none-linux_<machine>` (any Python 3 and any ABI, since the trampoline
links against neither; the machine it was compiled for). The trampoline is
static and freestanding (no libc), so no glibc version belongs in the tag.
A cross build names the target and its compiler (`make wheel ARCH=aarch64`
does): SPT_ARCH=aarch64 CC=aarch64-linux-gnu-gcc python -m build --wheel.

`solo5-spt` is not a console-script entry point: pip's generated wrapper
starts Python with `site` and the environment (PYTHONPATH, the user site),
which is slower and lets the environment run code in a root launch. The
wheel ships scripts/solo5-spt instead, which starts Python with -I -S.
"""

import os
import platform
import shutil
import subprocess
import sys

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70.1 has its own; before that it lives in `wheel`
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))


def target_arch() -> str:
    """The architecture the trampoline is built for (native/<arch>/):
    SPT_ARCH for a cross build, else this machine's."""
    return os.environ.get("SPT_ARCH") or platform.machine()


def find_compiler() -> None:
    """Stop the build with one line if the trampoline cannot be built here."""
    cc = os.environ.get("CC", "cc").split()[0]
    missing = [tool for tool in (cc, "make") if shutil.which(tool) is None]
    if missing:
        sys.exit("spt: building the trampoline (native/) needs a C compiler and make; "
                 "not found: %s (Debian: apt-get install gcc make)" % ", ".join(missing))


class BuildWithTrampoline(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        find_compiler()
        out = os.path.join(os.path.abspath(self.build_lib), "spt", "libexec", "spt-trampoline")
        if os.path.exists(out):
            # package data copied a trampoline built in a checkout (perhaps for
            # another architecture): this build compiles its own
            os.unlink(out)
        made = subprocess.run(["make", "-s", "-C", os.path.join(HERE, "native"), "OUT=" + out,
                               "ARCH=" + target_arch()])
        if made.returncode != 0:
            sys.exit("spt: building the trampoline failed (make -C native exited %d; its "
                     "messages are above)" % made.returncode)
        policies = os.path.join(self.build_lib, "spt", "policies")
        shutil.copytree(os.path.join(HERE, "policies"), policies, dirs_exist_ok=True)


class WithBinary(Distribution):
    """The package holds a compiled program: it installs into platlib."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    """A wheel for the trampoline's architecture, whatever Python runs it."""

    def get_tag(self):
        return "py3", "none", "linux_" + target_arch()


setup(
    distclass=WithBinary,
    cmdclass={"build_py": BuildWithTrampoline, "bdist_wheel": PlatformWheel},
    scripts=["scripts/solo5-spt"],
)
