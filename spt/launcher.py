"""`solo5-spt`: the drop-in launcher.

    solo5-spt [ OPTIONS ] [ -- ] KERNEL [ ARGS... ]

One launch is a pipeline of plain functions over plain data:

    argv -> Options -> Image -> attached devices -> rules/BPF -> LaunchPlan
         -> exec(trampoline) -> guest

Only `main()` catches broadly: every refusal is one line on stderr,
`solo5-spt: MESSAGE`, and exit status 1. argv is parsed by hand, since
`--block:NAME=PATH` is not an option shape a CLI framework knows and this
path must start fast: it imports only what a launch needs.
"""

import posix  # not os: the launch path does without it (spt/lean.py)
import sys

from spt import __version__, SptError, abi, lean
from spt.devices.core import sanitize_fds
from spt.lean import Record
# TRAMPOLINE and the process names live in spt/plan.py; named here too for
# the tool's commands, which ask the launcher.
from spt.plan import (TRAMPOLINE, TRAMPOLINE_BASE, exec_trampoline,  # noqa: F401
                      guest_cmdline, process_name, process_title)
from spt.warmlaunch import StageTimer

PROG = "solo5-spt"


class Options(Record, fields="kernel args mem_mib x_exec_heap devices jail user debug",
              defaults=("auto", None, None)):
    """The parsed command line; `devices` maps (module, NAME) to its
    {setting: value}, in the order first given; `jail` and `user` are
    --jail and --user (spt/jail.py); `debug` is None or the
    spt.debug.DebugOptions of --gdb/--dumpcore."""

    __slots__ = ()


def usage() -> str:
    from spt.devices import modules

    lines = [
        "usage: %s [ OPTIONS ] [ -- ] KERNEL [ ARGS... ]" % PROG,
        "KERNEL is the unikernel (an spt ELF of ABI version %s) to run; ARGS become its "
        "command line." % " or ".join(str(v) for v in abi.ABI_VERSIONS),
        "Core options:",
        "  [ --mem=512 ] guest memory in MiB (default 512)",
        "  --help        show this text and exit",
        "  --version     show the version and the ABI versions it runs and exit",
        "Jail options (docs/security.md):",
        "  [ --user=USER|UID[:GID] ] the uid and gid a root launch runs the guest as",
        "                    (default: a uid and gid of its own, 0x7E000000 + PID)",
        "  [ --jail=auto|limits|off ] auto (default): a root launch gets its own",
        "                    namespaces, empty root, uid and gid; every launch its rlimits",
    ]
    for module in modules():
        lines.append("%s options (NAME is a device in the unikernel's manifest):"
                     % module.__name__.rsplit(".", 1)[1].capitalize())
        for opt in module.OPTIONS:
            lines.append("  [ --%s:NAME=%s ] %s" % (opt.flag, opt.metavar, opt.help))
    lines += [
        "Debug options:",
        "  [ --x-exec-heap ] make guest memory outside the image executable",
        "                    (WARNING: this gives up W^X protection)",
        "  [ --gdb ] stop the guest before its first instruction and wait for a",
        "            GDB remote connection on localhost (needs gdbserver)",
        "  [ --gdb-port=1234 ] the TCP port --gdb listens on (default 1234)",
        "  [ --dumpcore[=DIR] ] a guest that crashes leaves a core (in DIR, default",
        "                       the current directory, as kernel.core_pattern allows)",
    ]
    return "\n".join(lines)


def parse_argv(argv: list[str]) -> Options:
    """Options before KERNEL, `--` ends them, the rest is the guest's."""
    from spt.devices import core

    flags = None  # the device options, read (importing every device module) once one is given
    mem_mib, x_exec_heap, devices = abi.DEFAULT_MEM_MIB, False, {}
    jail_mode, user = "auto", None
    debug = {}  # --gdb, --gdb-port, --dumpcore: spt.debug's, read only if given
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        if not arg.startswith("-"):
            i -= 1
            break
        if arg == "--help":
            raise Usage()
        if arg == "--version":
            raise Version()
        if arg == "--x-exec-heap":
            x_exec_heap = True
            continue
        if arg.startswith("--mem="):
            mem_mib = core.parse_mem(arg[len("--mem="):])
            continue
        if arg.startswith(("--user=", "--jail=")):
            from spt import jail

            if arg.startswith("--user="):
                user = jail.parse_user(arg[7:])
            else:
                jail_mode = jail.parse_mode(arg[7:])
            continue
        if arg.partition("=")[0] in ("--gdb", "--gdb-port", "--dumpcore"):
            debug[arg.partition("=")[0]] = arg
            continue
        flag, colon, rest = arg[2:].partition(":") if arg.startswith("--") else ("", "", "")
        if colon and flags is None:
            from spt.devices import options
            from spt.manifest import valid_name

            flags = options()
        if not colon or flag not in flags:
            raise SptError("Invalid option: `%s'" % arg, usage=True)
        module, opt = flags[flag]
        name, eq, value = rest.partition("=")
        if not eq or not valid_name(name):
            # Solo5's words (its parser does not take the option), then why
            raise SptError("Invalid option: `%s' (Malformed argument to --%s: expected "
                           "--%s:NAME=%s with NAME 1 to %d of [A-Za-z0-9])"
                           % (arg, flag, flag, opt.metavar, abi.MFT_NAME_MAX), usage=True)
        settings = devices.setdefault((module, name), {})
        if opt.key in settings:
            raise SptError("--%s:%s given more than once" % (flag, name))
        settings[opt.key] = opt.parse(name, value)
    if i >= len(argv):
        raise SptError("Missing KERNEL operand", usage=True)
    return Options(kernel=argv[i], args=argv[i + 1:], mem_mib=mem_mib,
                   x_exec_heap=x_exec_heap, devices=devices, jail=jail_mode, user=user,
                   debug=_debug_options(debug) if debug else None)


def _debug_options(given: dict):
    from spt import debug

    return debug.parse_options(given)


def version_text() -> str:
    """Solo5's shape, which probes parse: `PROG tender, version V`, then one
    `ABI version N` line for every ABI version this tender runs. V is spt's
    own version, prefixed `spt-` so that it is never read as a Solo5
    release."""
    return "\n".join(["%s tender, version spt-%s" % (PROG, __version__)]
                     + ["ABI version %d" % v for v in abi.ABI_VERSIONS])


class Usage(Exception):
    """--help: usage on stderr, exit 1 (as Solo5's tender does)."""


class Version(Exception):
    """--version: version on stderr, exit 0."""


def check_devices(opts: Options, manifest) -> None:
    """The options name only declared devices, of their type, and every
    declared device (`spt unit check` runs this without attaching)."""
    for (module, name), settings in opts.devices.items():
        entry = manifest.find(name)
        if entry is None or entry.type != module.TYPE:
            raise SptError("Resource not declared in manifest: '%s'" % name)
        for opt in module.OPTIONS:
            if opt.required and opt.key not in settings:
                raise SptError("Device '%s' has options but no --%s:%s=%s"
                               % (name, opt.flag, name, opt.metavar))
    unattached = [e for e in manifest.devices
                  if not any(n == e.name and m.TYPE == e.type for m, n in opts.devices)]
    if unattached:
        # Solo5 prints one line per device, then this last one; spt's one
        # line holds them all, in the same words.
        raise SptError(" ".join("Device '%s' of type %s declared but not attached."
                                % (e.name, e.type_name) for e in unattached)
                       + " All declared devices must be attached. See --help for syntax.")


def attach_devices(opts: Options, manifest) -> list:
    """Attach every device the options name (check_devices has vouched for
    the names)."""
    attached = []
    try:
        for (module, name), settings in opts.devices.items():
            entry = manifest.find(name)
            dev = module.attach(entry, settings)
            attached.append(dev)
    except BaseException:
        for dev in attached:
            for fd in dev.fds:
                _close_quietly(fd)
        raise
    return attached


def _close_quietly(fd: int) -> None:
    try:
        posix.close(fd)
    except OSError:
        pass


def _mark(timer, stage: str) -> None:
    if timer is not None:
        timer.mark(stage)


def inherited_fds(opts: Options) -> set[int]:
    """Fds the options name (`--net:NAME=@FD`), which must stay open."""
    return {fd for (module, _), settings in opts.devices.items()
            for fd in module.inherited_fds(settings)}


def check_launch(opts: Options, image) -> int:
    """Everything about a launch that holds before a device is opened:
    memory, command line, the devices named against the manifest. Returns
    the guest memory size in bytes. (`spt unit check` runs this alone.)"""
    from spt import image as image_mod
    from spt.devices import core

    mem_size = opts.mem_mib << 20
    image_mod.check_fits(image, mem_size)
    core.check_mem_limits(mem_size, image.kernel_end, TRAMPOLINE_BASE)
    guest_cmdline(opts.args)
    check_devices(opts, image.manifest)
    return mem_size


def build_plan(opts: Options, stream, timer=None, image=None) -> tuple:
    """Image -> devices -> policy -> LaunchPlan (`image`: already loaded
    from `stream` by the caller). Returns (plan, attached devices)."""
    from spt import image as image_mod, plan as plan_mod, policy
    from spt.devices import core

    _mark(timer, "imports")
    if image is None:
        image = image_mod.load_cached(opts.kernel, stream)
    _mark(timer, "image")
    mem_size = check_launch(opts, image)
    cmdline = guest_cmdline(opts.args)

    devices = attach_devices(opts, image.manifest)
    base = core.attach()
    attached = [base] + devices
    manifest = image.manifest
    for dev in devices:
        manifest = manifest.with_entry(dev.entry)
    _mark(timer, "devices")
    bpf = policy.bpf_for(attached)
    _mark(timer, "bpf")

    plan = plan_mod.assemble(image, stream, attached, manifest.pack(), bpf, mem_size, cmdline,
                             opts.kernel, opts.jail, opts.user, opts.x_exec_heap)
    return plan, attached


def launch(argv: list[str], timer=None) -> None:
    start(parse_argv(argv), timer)


def prepare(opts: Options, prog: str = PROG) -> None:
    """Before anything is opened: the --x-exec-heap warning, and the fd
    table cleared of everything inherited but the fds the options name."""
    if opts.x_exec_heap:
        # Solo5's words, which scripts may look for
        print("%s: WARNING: The use of --x-exec-heap is dangerous and not recommended as it "
              "makes the heap and stack executable." % prog, file=sys.stderr)
    sanitize_fds(inherited_fds(opts))


def start(opts: Options, timer=None, extra_flags: int = 0, before_exec=None) -> None:
    """Options -> a running guest in this very process (or, with
    SPT_PLAN_DUMP, the plan written out). The debug mode (spt/debug.py)
    adds plan flags and a last step before the exec."""
    if opts.debug is not None:  # --gdb, --dumpcore: a room of their own
        from spt import debug

        return debug.start(opts, timer)
    prepare(opts)

    from spt.image import open_kernel

    stream = open_kernel(opts.kernel)
    plan, attached = build_plan(opts, stream, timer)
    if extra_flags:
        plan = plan._replace(flags=plan.flags | extra_flags)
    dump = lean.getenv("SPT_PLAN_DUMP")
    if dump:
        from spt import policy

        write_dump(dump, plan, policy.rules_for(attached))
        return
    if before_exec is not None:
        before_exec()
    exec_trampoline(plan, timer)


def write_dump(path: str, plan, rules) -> None:
    """SPT_PLAN_DUMP=PATH: write what this launch would install (the rules,
    the exact BPF bytes, the plan's facts) as JSON and exit 0 instead of
    starting the guest. `spt policy` runs solo5-spt this way, so the policy
    it shows comes from the very code path, fds and bytes of a real launch."""
    import json

    from spt.fileutil import write_atomic

    doc = {
        "rules": [dict(r._asdict(), conditions=[c._asdict() for c in r.conditions])
                  for r in rules],
        "bpf": plan.bpf.hex(),
        "plan": {
            "mem_size": plan.mem_size, "entry": plan.entry, "kernel_end": plan.kernel_end,
            "keep_fds": list(plan.keep_fds), "epoll_fd": plan.epoll_fd,
            "timer_fd": plan.timer_fd, "name": plan.name, "flags": plan.flags,
            "cmdline": plan.cmdline, "watch": [list(w) for w in plan.watch],
        },
    }
    write_atomic(path, json.dumps(doc, indent=1).encode())


def main(argv: list[str] | None = None, timer=None) -> None:
    """`timer`: spt/warmlaunch.py's StageTimer, when it tried first."""
    argv = sys.argv[1:] if argv is None else argv
    if timer is None and lean.getenv("SPT_TIMING") == "1":
        timer = StageTimer()
    try:
        launch(argv, timer)
    except Usage:
        print(usage(), file=sys.stderr)
        sys.exit(1)
    except Version:
        print(version_text(), file=sys.stderr)
        sys.exit(0)
    except SptError as exc:
        print("%s: %s" % (PROG, exc), file=sys.stderr)
        if exc.usage:
            print(usage(), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the one broad catch: never a traceback
        print("%s: internal error: %s: %s" % (PROG, type(exc).__name__, exc), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
