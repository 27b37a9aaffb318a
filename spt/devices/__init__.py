"""Device modules: one file per device kind.

Each module owns four things and nothing global:
- its command-line options (`OPTIONS`, taken by the launcher's parser),
- its attach step (`attach(entry, settings) -> Attached`),
- what it writes into its manifest entry (the `entry` in `Attached`),
- its fragment of the allow-list (`policies/<POLICY>.policy`, filled from
  `Attached.facts`).

The launcher iterates `modules()` and never names a device kind. A module
also answers `inherited_fds(settings)` (fds the caller passed that must stay
open) and `check(settings)` (what can be verified without attaching, for
`spt unit check`).
"""

from spt.lean import Record



class Option(Record, fields="flag key parse metavar help required host",
             defaults=(False, None)):
    """A device option `--FLAG:NAME=VALUE`: `parse(NAME, VALUE)` turns VALUE
    into the setting `key` (raising SptError with the operator's message);
    `required` marks the option that attaches the device; `host` says what
    of the host VALUE names, for whoever sandboxes a launch: HOST_FILE (the
    guest reads and writes it) or HOST_INTERFACE (a TAP, through
    /dev/net/tun), or None."""

    __slots__ = ()


class Attached(Record, fields="entry fds facts policy watch", defaults=("", ())):
    """A device opened for the guest, as plain facts: `entry` the manifest
    entry (attached, with the device's facts), `fds` the fds the guest keeps,
    `facts` the placeholders of its policy fragment `policies/<policy>.policy`,
    `watch` the (fd, epoll data) pairs for yield."""

    __slots__ = ()


HOST_FILE = "file"
HOST_INTERFACE = "interface"


def options() -> dict:
    """Every device option flag (e.g. "block-sector-size") -> (module, Option)."""
    return {opt.flag: (module, opt) for module in modules() for opt in module.OPTIONS}


def modules():
    """The device modules, in a fixed order. Imported here, not at the top,
    so that `spt.devices` itself costs nothing to import."""
    from spt.devices import block, net

    return (block, net)
