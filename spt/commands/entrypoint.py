"""`spt entrypoint`: a unikernel as the process of a container (Nabla-style).

    spt entrypoint [ENTRYPOINT OPTIONS] [solo5-spt OPTIONS] KERNEL [ARGS...]

Run as PID 1 of a container, it gives the container's network to the
guest and then becomes the guest in the same PID: the engine keeps
scheduling, signalling and reaping the very process it started, and no
supervisor stays in between. One start, in order (spt/netwire.py wires):

  1. check the command line and the kernel (nothing changed yet),
  2. read the interface's facts: address, prefix, gateway, MAC, MTU,
  3. render the guest's network arguments from the template,
  4. create TAP `spt0` (MTU of the interface, up), redirect its ingress to
     the interface,
  5. build the launch plan (the launcher's own stages, with the TAP's fd and
     the interface's MAC as the guest's net device),
  6. redirect the interface's ingress to the TAP,
  7. exec the trampoline through the launcher's last stage: no_new_privs and
     an empty bounding set before the exec, the jail's rlimits (and --user's
     ids, if given; the container is the jail's namespaces), every other
     capability dropped by the trampoline, and a stop handler kept so that
     SIGTERM from the engine ends the guest (status 143).

A failure in 1-7 undoes what was done, prints one line `spt: ...` and exits
1. The entrypoint's own options come first; the first word that is not one
of them starts the solo5-spt command line, unchanged.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

import typer

from spt.errors import SptError
from spt.netwire import DEFAULT_TEMPLATE, PLACEHOLDERS, TAP_NAME

USAGE = """\
usage: spt entrypoint [ENTRYPOINT OPTIONS] [solo5-spt OPTIONS] KERNEL [ARGS...]

Run as a container's PID 1: give the container's network interface to the
unikernel's net device (through TAP %(tap)s and tc redirects), then become the
unikernel in the same process. Needs CAP_NET_ADMIN and /dev/net/tun; the
guest runs with no capability at all.

Entrypoint options (before any solo5-spt option):
  --iface NAME          the interface to take over (default: the one the
                        default route uses, else the only one besides lo)
  --net-device NAME     the guest's net device to attach (default: the only
                        net device in the kernel's manifest)
  --args-template T     guest arguments carrying the network facts, put before
                        ARGS (default: '%(template)s');
                        placeholders: %(placeholders)s; '' for none
  --allow-host-netns    rewire an interface that is not a container's
                        (veth/macvlan/ipvlan/netkit), e.g. a physical NIC
  -h, --help            show this text and exit

solo5-spt options and KERNEL: as `solo5-spt --help` shows; the wired device
must not be given a --net: or --net-mac: option (the entrypoint sets both).
""" % {"tap": TAP_NAME, "template": DEFAULT_TEMPLATE,
       "placeholders": " ".join("{%s}" % p for p in PLACEHOLDERS)}


@dataclass
class EntrypointOptions:
    iface: str | None = None
    net_device: str | None = None
    template: str = DEFAULT_TEMPLATE
    allow_host_netns: bool = False


class ShowHelp(Exception):
    """--help among the entrypoint's options."""


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
VALUED = {"--iface": "iface", "--net-device": "net_device", "--args-template": "template"}


def split_argv(argv: list[str]) -> tuple[EntrypointOptions, list[str]]:
    """The entrypoint's options, then the solo5-spt command line (the rest)."""
    opts = EntrypointOptions()
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg in ("--help", "-h"):
            raise ShowHelp()
        if arg == "--allow-host-netns":
            opts.allow_host_netns = True
        elif name in VALUED:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise SptError("%s needs a value" % name)
                value = argv[i]
            setattr(opts, VALUED[name], value)
        else:
            break
        i += 1
    return opts, argv[i:]


def choose_net_device(manifest, wanted: str | None, kernel: str) -> str:
    from spt import abi

    names = [e.name for e in manifest.devices if e.type == abi.MFT_DEV_NET_BASIC]
    if wanted is not None:
        if wanted not in names:
            raise SptError("%s declares no net device named %r (its net devices: %s)"
                           % (kernel, wanted, ", ".join(names) or "none"))
        return wanted
    if not names:
        raise SptError("%s declares no net device: there is nothing to give the "
                       "container's network to (run it with solo5-spt)" % kernel)
    if len(names) > 1:
        raise SptError("%s declares several net devices (%s): choose one with --net-device"
                       % (kernel, ", ".join(names)))
    return names[0]


def start(argv: list[str]) -> None:
    """Wire the network and exec the guest; returns only by raising."""
    from pyroute2 import IPRoute

    from spt import image as image_mod, launcher, netwire
    from spt.devices import net as net_module

    ep, solo5_argv = split_argv(argv)
    opts = launcher.parse_argv(solo5_argv)
    if opts.jail == "auto":  # the container is the rest of the jail (docs/security.md)
        opts = opts._replace(jail="limits")
    if not os.access(launcher.TRAMPOLINE, os.X_OK):
        raise SptError("cannot run the trampoline %s (build it with `make`)" % launcher.TRAMPOLINE)
    launcher.prepare(opts, "spt")
    stream = image_mod.open_kernel(opts.kernel)
    image = image_mod.load_cached(opts.kernel, stream)
    device = choose_net_device(image.manifest, ep.net_device, opts.kernel)
    if opts.devices.get((net_module, device)):
        raise SptError("the entrypoint attaches %s to the container's interface itself: "
                       "drop --net:%s and --net-mac:%s" % (device, device, device))
    # The engine's stop signal must end the guest, which is PID 1 here. Until
    # the trampoline has its stop handler, a stop signal is held back rather
    # than lost (PID 1 drops signals it has no handler for): the trampoline
    # installs the handler, then unblocks, and a held signal ends the guest.
    os.environ["SPT_STOP_ON_TERM"] = "1"
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    undo = netwire.Undo()
    with IPRoute() as ipr:
        try:
            facts, plan = netwire.hand_over(
                ipr, opts, device, iface=ep.iface, template=ep.template,
                allow_host_netns=ep.allow_host_netns, undo=undo,
                build=lambda wired: launcher.build_plan(wired, stream, image=image)[0])
            print("spt: " + netwire.describe(device, facts), file=sys.stderr)
            # Returns only if the exec failed; the netlink socket is
            # close-on-exec, and the trampoline closes every fd but the guest's.
            launcher.exec_trampoline(plan)
        except BaseException as exc:
            leftovers = undo.run()
            if leftovers and isinstance(exc, SptError):
                raise SptError("%s; and could not undo: %s" % (exc, "; ".join(leftovers))) from None
            raise


def main(argv: list[str]) -> int:
    """The one broad catch: every failure is one line and exit status 1.
    Returns the exit status (there is none on success: the process is the
    guest by then)."""
    from spt import launcher

    try:
        start(argv)
    except ShowHelp:
        print(USAGE, end="")
        return 0
    except launcher.Usage:
        print(launcher.usage(), file=sys.stderr)
        return 1
    except launcher.Version:
        try:
            launcher.main(["--version"])  # prints the launcher's version
        except SystemExit as exc:
            return exc.code
    except SptError as exc:
        print("spt: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback
        print("spt: internal error: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        return 1
    return 1  # start() returns only if the exec did not happen


def register(app: typer.Typer) -> None:
    @app.command(
        "entrypoint",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                          "allow_interspersed_args": False, "help_option_names": []},
        add_help_option=False,
    )
    def entrypoint(ctx: typer.Context) -> None:
        """Run as a container's PID 1: give the container's network to the
        unikernel, then become it (see `spt entrypoint --help`)."""
        raise typer.Exit(main(list(ctx.args)))
