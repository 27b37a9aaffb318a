"""`solo5-spt`'s entry: a warm launch made with the fewest modules, else the
full launcher.

Most launches run a kernel the launch cache already knows. Of those, a
launch whose options are at most `--mem=MIB` (a guest that declares no
device) is made here: the same steps as spt/launcher.py's `build_plan`, in
the same order and through the same functions (the image's remembered
layout checked again, the remembered filter proven against the rules
rendered for this launch, the jail decided, the plan assembled by
spt/plan.py), without importing what only other launches need: the option
parser and its usage text, the device modules, the manifest parser,
pyelftools and libseccomp. Importing fewer modules is most of what a launch
costs beyond the interpreter's own start (docs/benchmarks.md).

This module never refuses a launch. Anything else (another option, a cache
miss, SPT_PLAN_DUMP, a kernel that cannot be opened, a check that fails) goes
to spt/launcher.py, which makes the launch from scratch or says why it
cannot, in its own words.
"""

import sys

from spt import abi, lean


class StageTimer:
    """SPT_TIMING=1: one line on stderr before the exec with the
    milliseconds each stage took. Off, it is never created: the launch path
    then pays one environment lookup."""

    def __init__(self):
        import time

        self._now = time.perf_counter
        self._start = self._last = self._now()
        self.stages: list[tuple[str, float]] = []

    def restart(self) -> None:
        """Forget the stages so far: the next one counts from the start."""
        self.stages, self._last = [], self._start

    def mark(self, stage: str) -> None:
        now = self._now()
        self.stages.append((stage, (now - self._last) * 1000))
        self._last = now

    def report(self) -> None:
        print("spt-timing: " + " ".join("%s=%.3f" % s for s in self.stages), file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    timer = StageTimer() if lean.getenv("SPT_TIMING") == "1" else None
    if lean.getenv("SPT_PLAN_DUMP") is None:
        try:
            warm_launch(argv, timer)  # execs the guest, or returns
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception:
            pass  # the full path makes this launch from scratch, or says why it cannot
    if timer is not None:
        timer.restart()  # the full path's first stage counts what was tried here
    from spt import launcher

    launcher.main(argv, timer)


def warm_options(argv: list[str]) -> tuple[int, str, list[str]] | None:
    """(MiB of guest memory, KERNEL, ARGS) of a command line whose options
    are at most `--mem=MIB`, or None: spt/launcher.py's reading of such a
    command line, which takes any other one."""
    mem_mib, i = abi.DEFAULT_MEM_MIB, 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        value = arg[len("--mem="):] if arg.startswith("--mem=") else ""
        if not (value.isascii() and value.isdigit()) or int(value) <= 0:
            return None
        mem_mib = int(value)
    if i >= len(argv):
        return None
    return mem_mib, argv[i], argv[i + 1:]


def warm_launch(argv: list[str], timer=None) -> None:
    """Exec the guest of `argv` if it is a warm launch of a guest without
    devices; return (having closed what it opened) if not."""
    options = warm_options(argv)
    if options is None:
        return
    mem_mib, kernel, args = options
    from spt import image as image_mod, plan as plan_mod, policy
    from spt.devices import core

    core.sanitize_fds(set())
    stream = image_mod.open_kernel(kernel)
    try:
        _mark(timer, "imports")
        image = image_mod.recall(kernel, stream)
        manifest = no_device_manifest(image.manifest) if image is not None else None
        if manifest is None:
            return
        _mark(timer, "image")
        mem_size = mem_mib << 20
        image_mod.check_fits(image, mem_size)
        core.check_mem_limits(mem_size, image.kernel_end, plan_mod.TRAMPOLINE_BASE)
        cmdline = plan_mod.guest_cmdline(args)
        attached = [core.attach()]
        _mark(timer, "devices")
        bpf = policy.bpf_for(attached)
        _mark(timer, "bpf")
        plan = plan_mod.assemble(image, stream, attached, manifest, bpf, mem_size, cmdline,
                                 kernel, "auto", None, False)
        plan_mod.exec_trampoline(plan, timer)
    finally:
        stream.close()  # not reached once the guest runs; the full path closes the rest


def _mark(timer, stage: str) -> None:
    if timer is not None:
        timer.mark(stage)


# A manifest of the reserved first entry alone (spt-abi §1.2): u32 version,
# u32 count, then char name[68], u32 type, a 16-byte union, i64 hostfd,
# bool attached and 7 bytes of padding.
_ONE_ENTRY = (abi.MFT_VERSION.to_bytes(4, "little") + (1).to_bytes(4, "little"))
_RESERVED = abi.MFT_RESERVED_FIRST.to_bytes(4, "little")


def no_device_manifest(packed) -> bytes | None:
    """The manifest the guest reads, if `packed` declares no device, as
    spt/manifest.py would parse and pack it again: the reserved first entry
    alone (an empty, NUL-terminated name, not attached), its hostfd kept,
    the rest zero. None for anything else, which the full path reads."""
    if not isinstance(packed, bytes) or len(packed) != abi.MFT_HEADER_SIZE + abi.MFT_ENTRY_SIZE:
        return None
    entry = packed[abi.MFT_HEADER_SIZE:]
    name_size = abi.MFT_NAME_SIZE
    if (packed[:abi.MFT_HEADER_SIZE] != _ONE_ENTRY or entry[0] != 0
            or entry[name_size - 1] != 0 or entry[name_size:name_size + 4] != _RESERVED
            or entry[name_size + 28] != 0):
        return None
    hostfd = entry[name_size + 20:name_size + 28]
    return _ONE_ENTRY + bytes(name_size) + _RESERVED + bytes(16) + hostfd + bytes(8)
