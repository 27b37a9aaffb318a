"""The per-instance configuration of a unikernel unit: `/etc/spt/NAME.conf`.

One `key = value` a line; `#` starts a comment line:

    kernel = /var/lib/spt/web.spt
    mem = 64
    block.storage = /var/lib/spt/web.img
    block-sector-size.storage = 4096
    net.service0 = tap-web
    net-mac.service0 = 02:00:00:00:00:01
    args = --ipv4=10.0.0.2/24 "a quoted argument"
    user = spt-web

Device keys are `FLAG.NAME` for every device option `--FLAG:NAME=VALUE` that
solo5-spt takes, so the file says what the command line would say, and a new
device module's options become keys without a change here. Every value goes
through the launcher's own parser; every refusal names the file and line.

Plain data in, plain data out: `parse`/`from_settings` build a `UnitConfig`,
`render` writes it back, `to_argv` is the solo5-spt command line it means,
and `validate` refuses what the launcher would refuse, before anything starts.
"""

from __future__ import annotations

import os
from collections import namedtuple

from spt.devices import HOST_FILE, HOST_INTERFACE
from spt.errors import SptError

CONFIG_DIR = "/etc/spt"
# An instance name: the `%i` of spt@NAME.service, the file NAME.conf and the
# process name spt:NAME; no systemd escaping needed, no path tricks: 1 to 64
# of these, the first a letter or digit.
_DIGITS = "0123456789"
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
INSTANCE_CHARS = frozenset(_LETTERS + _DIGITS + "_.-")
INSTANCE_FIRST = frozenset(_LETTERS + _DIGITS)
INSTANCE_MAX = 64
# A user name as User= takes it: 1 to 32 of USER_CHARS, the first a letter or
# `_`; or a numeric uid of 1 to 10 digits.
USER_CHARS = INSTANCE_CHARS
USER_FIRST = frozenset(_LETTERS + "_")
USER_MAX = 32
UID_CHARS = frozenset(_DIGITS)
UID_MAX_DIGITS = 10
PLAIN_KEYS = ("kernel", "mem", "args", "user")
MAX_CONFIG_BYTES = 64 * 1024
# shlex's whitespace (posix mode), mapped to a space
_SHLEX_BLANKS = str.maketrans("\t\r\n", "   ")
# Exit status of `spt unit exec` for a configuration it refuses (EX_CONFIG):
# the unit does not restart for it, since a restart cannot mend the file.
EX_CONFIG = 78

# What a device option's value is to the sandbox, as its module declares it
# (Option.host), so no device kind is named here: a HOST_FILE is a file the
# guest reads and writes (given absolute; its unit may write it, nothing
# else), a HOST_INTERFACE a TAP (its unit needs /dev/net/tun and the host's
# network). The launcher's modules know nothing of systemd; this is the one
# place that does.


class ConfigError(SptError):
    """The configuration file is wrong; the message names file and line."""


class Setting(namedtuple("Setting", "key value where")):
    """One `key = value`, and where it was given ("web.conf:3", "--mem")."""

    __slots__ = ()


class DeviceSetting(namedtuple("DeviceSetting", "flag name value where")):
    """One device option: `flag` the solo5-spt option ("block", "net-mac",
    ...), `name` the device's name in the manifest."""

    __slots__ = ()


class UnitConfig(namedtuple("UnitConfig", "name kernel mem_mib devices args user",
                            defaults=((), (), ""))):
    """A parsed configuration: `devices` DeviceSettings in the order given,
    `args` the guest's arguments, `user` "" for root."""

    __slots__ = ()

    def values(self, host: str) -> list[str]:
        """The values of the device options that name a `host` resource
        (HOST_FILE, HOST_INTERFACE), in order."""
        from spt.devices import options

        flags = options()
        return [d.value for d in self.devices if flags[d.flag][1].host == host]

    @property
    def storage(self) -> list[str]:
        return self.values(HOST_FILE)

    @property
    def taps(self) -> list[str]:
        return self.values(HOST_INTERFACE)


def config_path(name: str, root: str = "/") -> str:
    return os.path.join(root, CONFIG_DIR.lstrip("/"), name + ".conf")


def check_root(root: str) -> str:
    """`--root DIR`: where /etc/spt and the unit files are, for an image."""
    if not os.path.isabs(root) or not os.path.isdir(root):
        raise ConfigError("--root %s: not an absolute path to a directory" % root)
    return root


def check_instance(name: str) -> str:
    if not (0 < len(name) <= INSTANCE_MAX and name[0] in INSTANCE_FIRST
            and INSTANCE_CHARS.issuperset(name)):
        raise ConfigError("instance name %r: use 1 to 64 of [A-Za-z0-9_.-], starting with a "
                          "letter or digit" % name)
    return name


def parse(text: str, path: str, name: str) -> UnitConfig:
    """Parse the text of `path`, the configuration of instance `name`."""
    settings = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = "%s:%d" % (path, number)
        key, eq, value = line.partition("=")
        if not eq:
            raise ConfigError("%s: expected `key = value`, got %r" % (where, line[:60]))
        settings.append(Setting(key.strip(), value.strip(), where))
    return from_settings(name, settings, path)


def read(name: str, root: str = "/") -> UnitConfig:
    """Read and parse /etc/spt/NAME.conf (under `root`)."""
    check_instance(name)
    path = config_path(name, root)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError("%s: larger than %d bytes" % (path, MAX_CONFIG_BYTES))
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError("%s: %s" % (path, exc.strerror or exc)) from None
    except UnicodeDecodeError:
        raise ConfigError("%s: not UTF-8 text" % path) from None
    return parse(text, path, name)


def from_settings(name: str, settings: list[Setting], label: str) -> UnitConfig:
    """A UnitConfig from `key = value` settings, each checked where it stands."""
    from spt import abi
    from spt.devices import options

    check_instance(name)
    flags = options()
    seen: dict[str, str] = {}
    plain: dict[str, Setting] = {}
    devices = []
    for s in settings:
        if s.key in seen:
            raise ConfigError("%s: %s is already set at %s" % (s.where, s.key, seen[s.key]))
        seen[s.key] = s.where
        check_text(s.value, "%s: %s:" % (s.where, s.key))
        if s.key in PLAIN_KEYS:
            plain[s.key] = s
        else:
            devices.append(_device(s, flags))
    if "kernel" not in plain:
        raise ConfigError("%s: no `kernel = PATH` (the unikernel to run)" % label)
    kernel = plain["kernel"]
    _absolute(kernel)
    return UnitConfig(
        name=name,
        kernel=kernel.value,
        mem_mib=_mem(plain["mem"]) if "mem" in plain else abi.DEFAULT_MEM_MIB,
        devices=tuple(devices),
        args=_args(plain["args"]) if "args" in plain else (),
        user=_user(plain["user"]) if "user" in plain else "",
    )


def _device(s: Setting, flags: dict) -> DeviceSetting:
    from spt.manifest import valid_name

    flag, dot, dev = s.key.partition(".")
    if not dot or flag not in flags:
        known = ", ".join(list(PLAIN_KEYS) + ["%s.NAME" % f for f in flags])
        raise ConfigError("%s: unknown key %r (known: %s)" % (s.where, s.key, known))
    if not valid_name(dev):
        raise ConfigError("%s: device name %r: use 1 to 67 of [A-Za-z0-9]" % (s.where, dev))
    module, opt = flags[flag]
    try:
        parsed = opt.parse(dev, s.value)
    except SptError as exc:
        raise ConfigError("%s: %s" % (s.where, exc)) from None
    if module.inherited_fds({opt.key: parsed}):
        raise ConfigError("%s: %s = %s: a unit has no caller to pass a TAP fd; name the "
                          "interface" % (s.where, s.key, s.value))
    if opt.host == HOST_FILE:
        _absolute(s)
    return DeviceSetting(flag, dev, s.value, s.where)


def _absolute(s: Setting) -> None:
    if not os.path.isabs(s.value) or os.path.normpath(s.value) != s.value.rstrip("/") or \
            "\0" in s.value:
        raise ConfigError("%s: %s = %r: must be an absolute, normalised path"
                          % (s.where, s.key, s.value))
    check_unit_path(s.value, "%s: %s =" % (s.where, s.key))


def check_text(value: str, what: str) -> None:
    """A value goes into this file and into unit files as it is, or quoted
    (spt.unitsyntax); what neither can hold is refused: a line break (what
    `render` writes must read back as the same lines), another control
    character but a tab, blanks around it (which reading strips), bytes
    that are not UTF-8 (both files are UTF-8 text)."""
    if value.splitlines() not in ([], [value]) or "\0" in value:
        raise ConfigError("%s a value is one line of text" % what)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("%s %s: not UTF-8 (the configuration and the unit files are UTF-8 "
                          "text)" % (what, ascii(value))) from None
    control = next((c for c in value if (ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0) and c != "\t"),
                   None)
    if control is not None:
        raise ConfigError("%s %s: control character %s in a value"
                          % (what, ascii(value), ascii(control)))
    if value != value.strip():
        raise ConfigError("%s %r: blanks around a value (reading the file would strip them)"
                          % (what, value))


def check_unit_path(path: str, what: str) -> None:
    """A path goes into the unit's directives (ReadWritePaths=, BindPaths=,
    ExecStart=, ...) quoted as each of them reads its words
    (spt.unitsyntax); what no unit file can hold is refused."""
    check_text(path, what)


def _mem(s: Setting) -> int:
    from spt.devices.core import parse_mem

    try:
        return parse_mem(s.value)
    except SptError as exc:
        raise ConfigError("%s: mem = %s: %s (MiB, a positive integer)"
                          % (s.where, s.value, exc)) from None


def _args(s: Setting) -> tuple[str, ...]:
    """`args`, split as a POSIX shell splits words. Without quotes or
    backslashes that is splitting at shlex's whitespace, done here so that a
    unit's start does not import shlex (and re, ~5 ms)."""
    if not any(c in s.value for c in "'\"\\"):
        return tuple(w for w in s.value.translate(_SHLEX_BLANKS).split(" ") if w)
    import shlex

    try:
        return tuple(shlex.split(s.value, comments=False))
    except ValueError as exc:
        raise ConfigError("%s: args: %s" % (s.where, exc)) from None


def _user(s: Setting) -> str:
    name = s.value
    if not (0 < len(name) <= USER_MAX and name[0] in USER_FIRST and USER_CHARS.issuperset(name)
            or 0 < len(name) <= UID_MAX_DIGITS and UID_CHARS.issuperset(name)):
        raise ConfigError("%s: user = %r is not a user name" % (s.where, s.value))
    return s.value


def render(config: UnitConfig) -> str:
    """The configuration as the file `spt unit install` writes."""
    import shlex

    lines = [
        "# The unikernel spt@%s.service runs (written by `spt unit install`)." % config.name,
        "# `spt unit check %s` validates it; the unit reads it at every start." % config.name,
        "kernel = %s" % config.kernel,
        "mem = %d" % config.mem_mib,
    ]
    lines += ["%s.%s = %s" % (d.flag, d.name, d.value) for d in config.devices]
    if config.args:
        lines.append("args = %s" % shlex.join(config.args))
    if config.user:
        lines.append("user = %s" % config.user)
    return "\n".join(lines) + "\n"


def to_argv(config: UnitConfig, root: str = "/") -> list[str]:
    """The solo5-spt command line of the configuration (paths under `root`)."""
    from spt.devices import options

    def at_root(value: str) -> str:
        return os.path.join(root, value.lstrip("/")) if root != "/" else value

    flags = options()
    argv = ["--mem=%d" % config.mem_mib]
    for d in config.devices:
        value = at_root(d.value) if flags[d.flag][1].host == HOST_FILE else d.value
        argv.append("--%s:%s=%s" % (d.flag, d.name, value))
    return argv + ["--", at_root(config.kernel), *config.args]


def validate(config: UnitConfig, root: str = "/") -> None:
    """Refuse now what the launcher would refuse at start: the image and its
    ABI, memory that does not fit, devices the manifest does not declare (or
    declares and the file leaves out), block files that are missing or of a
    bad size, a command line too long, a user that does not exist. The checks
    are the launcher's own (`check_launch`) and each device module's `check`,
    which attaches nothing: block files are opened read-only without the lock
    (a running guest holds it), TAPs are not opened (they may be made after
    the configuration, and a running guest holds its own)."""
    from spt import image, launcher

    opts = launcher.parse_argv(to_argv(config, root))
    launcher.check_launch(opts, image.load(opts.kernel))
    for (module, _name), settings in opts.devices.items():
        module.check(settings)
    if config.user:
        user_group(config.user, root)


def user_group(user: str, root: str = "/") -> int:
    """The primary group of `user` (a name or a uid) in the passwd database
    of `root`: the group that may read the unit's configuration, which the
    unit reads as that user. A user that is not there is refused (under a
    --root being built: add the user first)."""
    if root == "/":
        import pwd

        try:
            return (pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)).pw_gid
        except KeyError:
            raise ConfigError("user %r does not exist (its group is to read the "
                              "configuration)" % user) from None
    else:
        passwd = os.path.join(root, "etc/passwd")
        try:
            with open(passwd, encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.rstrip("\n").split(":")
                    if len(fields) >= 4 and user in (fields[0], fields[2]) and \
                            fields[3].isdigit():
                        return int(fields[3])
        except OSError:
            pass
    raise ConfigError("user %r does not exist in %s (its group is to read the configuration)"
                      % (user, os.path.join(root, "etc/passwd")))
