"""Host architectures spt runs on: one module of facts per architecture.

Everything the Python side must know that differs between x86_64 and
aarch64 is a constant in `spt/arch/<name>.py`; the rest of spt asks `host()`
and never tests the architecture itself. The trampoline's counterpart is
native/<name>/.
"""

import posix  # not os: the launch path's modules do without it (spt/lean.py)

SUPPORTED = ("x86_64", "aarch64")


def name() -> str:
    """The host's architecture as the kernel names it (`uname -m`)."""
    return posix.uname().machine


def facts(arch: str):
    """The facts module of `arch`; SptError if spt has none."""
    if arch == "x86_64":
        from spt.arch import x86_64 as mod
    elif arch == "aarch64":
        from spt.arch import aarch64 as mod
    else:
        from spt import SptError

        raise SptError("this host's architecture %r is not supported (spt runs on %s)"
                       % (arch, ", ".join(SUPPORTED)))
    return mod


def host():
    """The facts module of the host's architecture."""
    return facts(name())


def by_elf_machine(machine: str):
    """The facts module whose ELF e_machine is `machine` (pyelftools' name,
    e.g. "EM_AARCH64"), or None."""
    for arch in SUPPORTED:
        mod = facts(arch)
        if mod.ELF_MACHINE == machine:
            return mod
    return None
