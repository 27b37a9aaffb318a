"""Package build hook: the trampoline is compiled, never shipped prebuilt.

`pip install .` (and wheels) run `make -C native` into the build tree and copy
`policies/` into the package, so an installed spt carries both. The editable
install used by `make` (compat mode) finds them in the source tree instead.
"""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithTrampoline(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        here = os.path.dirname(os.path.abspath(__file__))
        out = os.path.join(os.path.abspath(self.build_lib), "spt", "libexec", "spt-trampoline")
        subprocess.run(["make", "-s", "-C", os.path.join(here, "native"), "OUT=" + out], check=True)
        policies = os.path.join(self.build_lib, "spt", "policies")
        shutil.copytree(os.path.join(here, "policies"), policies, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithTrampoline})
