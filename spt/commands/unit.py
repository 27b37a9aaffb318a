"""`spt unit`: one systemd unit per unikernel.

    spt unit install NAME --kernel K [--mem N] [--block DEV=PATH ...] [--net DEV=IFACE ...]
                     [--block-sector-size DEV=N ...] [--net-mac DEV=MAC ...] [--arg ARG ...]
                     [--user USER] [--root DIR]
    spt unit check NAME      validate /etc/spt/NAME.conf against its unikernel
    spt unit show NAME       the configuration, the launch it means, the unit files
    spt unit exec NAME       the launch spt@NAME.service runs (as python -m spt.unit_exec)

`install` validates first and then writes three files: the configuration
(/etc/spt/NAME.conf, spt.unitconf's format), the template spt@.service (the
tightest sandbox, with this installation's Python in ExecStart) and the
instance's drop-in spt@NAME.service.d/spt.conf, which opens only what the
unikernel's devices need. The unit runs spt.unit_exec: it reads the
configuration and becomes the launcher in the same process, so the unit's
main PID is the guest's from the first instruction to the last, and the
trampoline's READY=1 is the start.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import typer

from spt import unitconf
from spt.commands._common import SptTyper, one_line_errors, print_json
from spt.errors import SptError

UNIT_DIR = "/etc/systemd/system"
TEMPLATE_NAME = "spt@.service"
DROPIN_NAME = "spt.conf"
TEMPLATE_SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "data", TEMPLATE_NAME)
# What the template's sandbox hides, and how a path under it is brought back.
HIDDEN_BY_PROTECT_HOME = ("/home", "/root", "/run/user")
HIDDEN_BY_PRIVATE_TMP = ("/tmp", "/var/tmp")
TUN = "/dev/net/tun"
CONFIG_MODE = 0o600
CONFIG_USER_MODE = 0o640
UNIT_MODE = 0o644

unit_app = SptTyper(name="unit", no_args_is_help=True,
                       help="Run unikernels as hardened systemd units (spt@NAME.service).")


@dataclass(frozen=True)
class UnitFiles:
    """Where `install` writes, under `root`."""

    config: str
    template: str
    dropin: str


def unit_files(name: str, root: str = "/") -> UnitFiles:
    units = os.path.join(root, UNIT_DIR.lstrip("/"))
    return UnitFiles(
        config=unitconf.config_path(name, root),
        template=os.path.join(units, TEMPLATE_NAME),
        dropin=os.path.join(units, "spt@%s.service.d" % name, DROPIN_NAME),
    )


def exec_start() -> str:
    """ExecStart= of the template: this installation's interpreter (its
    virtual environment's, not resolved: that is what finds spt) running
    spt.unit_exec, which imports the launcher and the configuration parser,
    not this tool. -I: no
    PYTHON* variables, no user site, and not the working directory on the
    module path."""
    from spt.unitsyntax import exec_word

    python = os.path.abspath(sys.executable)
    unitconf.check_unit_path(python, "the Python interpreter")
    return "%s -I -m spt.unit_exec %%i" % exec_word(python)


def runtime_paths() -> list[str]:
    """What a launch reads besides the OS: the virtual environment, the
    interpreter it was made from, and spt's own tree (the trampoline, the
    policies); the sandbox must not hide them."""
    import spt

    paths = [os.path.abspath(sys.prefix), os.path.realpath(sys.base_prefix),
             os.path.dirname(os.path.dirname(os.path.abspath(spt.__file__)))]
    unique = []
    for path in paths:
        if not any(_under(path, other) for other in unique):
            unique = [p for p in unique if not _under(p, path)] + [path]
    return unique


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _hidden(path: str) -> bool:
    return any(_under(path, top) for top in HIDDEN_BY_PROTECT_HOME + HIDDEN_BY_PRIVATE_TMP)


def render_template(exec_line: str) -> str:
    with open(TEMPLATE_SOURCE, encoding="utf-8") as f:
        return f.read().replace("@EXEC_START@", exec_line)


def render_dropin(config: unitconf.UnitConfig, runtime: list[str]) -> str:
    """The instance's sandbox: the template's, opened exactly as far as this
    unikernel's devices need, and MemoryMax= from its memory."""
    from spt.devices.core import OVERHEAD_BYTES
    from spt.unitsyntax import path_word

    for path in runtime:
        unitconf.check_unit_path(path, "runtime path")
    lines = [
        "# Written by `spt unit install %s` from %s: what this" % (config.name,
                                                              unitconf.config_path(config.name)),
        "# instance needs beyond the template's sandbox. Re-run the install to change it.",
        "[Service]",
        "# the guest's memory plus what the launch maps besides it",
        "MemoryMax=%dM" % (config.mem_mib + (OVERHEAD_BYTES >> 20)),
    ]
    # "-": a missing file is the launcher's to report (one clear line in the
    # journal), not a failure to set up the unit's mount namespace. Every
    # path is one word quoted as systemd reads it (a `:` in a bind path
    # would otherwise split it into SOURCE:DEST)
    writable, bind_rw, devices = [], [], []
    for path in config.storage:
        if _under(path, "/dev"):
            devices.append(path_word(path))
        elif _hidden(path):
            bind_rw.append("-" + path_word(path))
        else:
            writable.append("-" + path_word(path))
    bind_ro = ["-" + path_word(config.kernel)] if _hidden(config.kernel) else []
    bind_ro += [path_word(p) for p in runtime if _hidden(p)]
    if writable:
        lines += ["# block files: the only writable paths", "ReadWritePaths=" + " ".join(writable)]
    if bind_rw or bind_ro:
        lines.append("# under /home, /root, /run/user, /tmp or /var/tmp, which the template hides")
    if bind_rw:
        lines.append("BindPaths=" + " ".join(bind_rw))
    if bind_ro:
        lines.append("BindReadOnlyPaths=" + " ".join(bind_ro))
    if any(_under(p, top) for p in [*config.storage, config.kernel, *runtime] if _hidden(p)
           for top in HIDDEN_BY_PROTECT_HOME):
        lines.append("ProtectHome=tmpfs")
    if devices:
        lines += ["# block devices", "BindPaths=" + " ".join(devices)]
        lines += ["DeviceAllow=%s rw" % d for d in devices]
    if config.taps:
        lines += ["# TAP interfaces: %s" % " ".join(config.taps),
                  "PrivateNetwork=no", "BindPaths=" + TUN, "DeviceAllow=%s rw" % TUN]
        if not config.user:
            lines += ["# attaching a TAP one does not own takes CAP_NET_ADMIN in the host's",
                      "# user namespace", "CapabilityBoundingSet=CAP_NET_ADMIN",
                      "PrivateUsers=no"]
    if config.user:
        lines += ["# runs as %s without capabilities (TAPs must be owned by it, offloads off)"
                  % config.user, "User=%s" % config.user, "RemoveIPC=yes"]
    return "\n".join(lines) + "\n"


def _open_directory(root: str, path: str) -> int:
    """A descriptor of the directory `path` is to be written in, made if
    missing. Under a --root other than /, each directory is reached from
    `root` without following a symbolic link, so nothing the tree holds
    sends a write outside it (at /, the system's own links are followed:
    they lead nowhere root could not write anyway)."""
    from spt import fileutil

    directory = os.path.dirname(path)
    if root == "/":
        os.makedirs(directory, mode=0o755, exist_ok=True)
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return fileutil.open_directory_under(root, os.path.relpath(directory, root))


def _write_at(dir_fd: int, path: str, text: str, mode: int, group: int | None = None,
              keep_same: bool = False) -> bool:
    """Write `path` (its directory open as `dir_fd`) atomically
    (spt.fileutil); whether it was written. With `keep_same`, a regular
    file of ours that already holds `text` and that nobody else may write is
    left as it is. `group`: the file's group."""
    from spt import fileutil

    name = os.path.basename(path)
    data = text.encode()
    try:
        if keep_same and _holds(dir_fd, name, data):
            return False
        fileutil.write_atomic_at(dir_fd, name, data, mode, group)
        return True
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None


def _holds(dir_fd: int, name: str, data: bytes) -> bool:
    import stat

    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return False  # missing, a link, unreadable: written anew
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return False
        return f.read(len(data) + 1) == data


def _pairs(option: str, values: list[str]) -> list[unitconf.Setting]:
    """`--block DEV=PATH` -> Setting("block.DEV", PATH)."""
    settings = []
    for value in values:
        # named in messages as given, or escaped if it holds what a
        # terminal line should not (line breaks, escapes, undecodable bytes)
        shown = value if value.isprintable() else ascii(value)
        dev, eq, rest = value.partition("=")
        if not eq:
            raise SptError("--%s %s: expected DEV=VALUE" % (option, shown))
        settings.append(unitconf.Setting("%s.%s" % (option, dev), rest,
                                         "--%s %s" % (option, shown)))
    return settings


def describe(config: unitconf.UnitConfig, root: str) -> dict:
    files = unit_files(config.name, root)
    return {
        "name": config.name,
        "unit": "spt@%s.service" % config.name,
        "config": files.config,
        "template": files.template,
        "dropin": files.dropin,
        "kernel": config.kernel,
        "mem_mib": config.mem_mib,
        "devices": [{"option": d.flag, "device": d.name, "value": d.value}
                    for d in config.devices],
        "args": list(config.args),
        "user": config.user or None,
        "launch": ["solo5-spt"] + unitconf.to_argv(config),
    }


@unit_app.command("install")
@one_line_errors
def install(
    name: str = typer.Argument(..., metavar="NAME", help="Instance name: spt@NAME.service."),
    kernel: str = typer.Option(..., "--kernel", metavar="PATH",
                               help="The unikernel (absolute path)."),
    mem: str = typer.Option(None, "--mem", metavar="MIB", help="Guest memory in MiB (default 512)."),
    block: list[str] = typer.Option([], "--block", metavar="DEV=PATH",
                                    help="Attach block device DEV to the file PATH."),
    block_sector_size: list[str] = typer.Option([], "--block-sector-size", metavar="DEV=N",
                                                help="Sector size of block device DEV."),
    net: list[str] = typer.Option([], "--net", metavar="DEV=IFACE",
                                  help="Attach net device DEV to the TAP interface IFACE."),
    net_mac: list[str] = typer.Option([], "--net-mac", metavar="DEV=MAC",
                                      help="MAC address of net device DEV."),
    arg: list[str] = typer.Option([], "--arg", metavar="ARG",
                                  help="One argument for the guest (repeat)."),
    user: str = typer.Option(None, "--user", metavar="USER",
                             help="Run as USER with no capabilities (TAPs made for USER)."),
    root: str = typer.Option("/", "--root", metavar="DIR",
                             help="Write under DIR (an image being built)."),
) -> None:
    """Validate and write /etc/spt/NAME.conf, spt@.service and NAME's drop-in."""
    import shlex

    root = unitconf.check_root(root)
    settings = [unitconf.Setting("kernel", kernel, "--kernel")]
    if mem is not None:
        settings.append(unitconf.Setting("mem", mem, "--mem"))
    for option, values in (("block", block), ("block-sector-size", block_sector_size),
                           ("net", net), ("net-mac", net_mac)):
        settings += _pairs(option, values)
    if arg:
        settings.append(unitconf.Setting("args", shlex.join(arg), "--arg"))
    if user is not None:
        settings.append(unitconf.Setting("user", user, "--user"))
    config = unitconf.from_settings(name, settings, "command line")
    unitconf.validate(config, root)
    texts = (unitconf.render(config), render_template(exec_start()),
             render_dropin(config, runtime_paths()))
    files = unit_files(name, root)
    # the configuration holds the guest's arguments: root's alone (0600),
    # or readable by the group of the unit's User= too (0640), which reads
    # it; the shared template is rewritten only when it changes
    group = unitconf.user_group(config.user, root) if config.user else None
    writes = ((files.config, texts[0], CONFIG_USER_MODE if config.user else CONFIG_MODE, group,
               False),
              (files.template, texts[1], UNIT_MODE, None, True),
              (files.dropin, texts[2], UNIT_MODE, None, False))
    # every directory first: one refused (a link under --root) writes nothing
    dir_fds = []
    try:
        for path, *_ in writes:
            dir_fds.append(_open_directory(root, path))
        for dir_fd, (path, text, mode, gid, keep_same) in zip(dir_fds, writes):
            if _write_at(dir_fd, path, text, mode, gid, keep_same):
                typer.echo("wrote %s" % path)
            else:
                typer.echo("kept %s (unchanged)" % path)
    finally:
        for dir_fd in dir_fds:
            os.close(dir_fd)
    if root == "/":
        typer.echo("start it: systemctl daemon-reload && systemctl enable --now spt@%s" % name)


@unit_app.command("check")
@one_line_errors
def check(
    name: str = typer.Argument(..., metavar="NAME"),
    root: str = typer.Option("/", "--root", metavar="DIR", help="Read under DIR."),
) -> None:
    """Validate /etc/spt/NAME.conf against its unikernel, starting nothing."""
    import shlex

    root = unitconf.check_root(root)
    config = unitconf.read(name, root)
    unitconf.validate(config, root)
    typer.echo("%s: ok: solo5-spt %s" % (unitconf.config_path(name, root),
                                         shlex.join(unitconf.to_argv(config))))


@unit_app.command("show")
@one_line_errors
def show(
    name: str = typer.Argument(..., metavar="NAME"),
    root: str = typer.Option("/", "--root", metavar="DIR", help="Read under DIR."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """The configuration, the launch it means, and where the unit files are."""
    import shlex

    root = unitconf.check_root(root)
    doc = describe(unitconf.read(name, root), root)
    if as_json:
        print_json(doc)
        return
    for key in ("unit", "config", "template", "dropin", "kernel", "mem_mib", "user"):
        typer.echo("%-9s %s" % (key, doc[key] if doc[key] is not None else "root (no user)"))
    for dev in doc["devices"]:
        typer.echo("%-9s %s.%s = %s" % ("device", dev["option"], dev["device"], dev["value"]))
    typer.echo("%-9s %s" % ("launch", shlex.join(doc["launch"])))


@unit_app.command("exec")
def exec_(
    name: str = typer.Argument(..., metavar="NAME"),
    root: str = typer.Option("/", "--root", metavar="DIR",
                             help="Read under DIR (tests, chroots)."),
) -> None:
    """Read /etc/spt/NAME.conf and become the launcher (no fork: this process
    becomes the guest). The unit runs the same with `python -m spt.unit_exec`."""
    from spt import unit_exec

    unit_exec.run(name, root)


def register(app: typer.Typer) -> None:
    app.add_typer(unit_app)
