"""Device modules: one file per device kind.

Each module owns four things and nothing global:
- its command-line options (`OPTIONS`, taken by the launcher's parser),
- its attach step (`attach(entry, settings) -> Attached`),
- what it writes into its manifest entry (the `entry` in `Attached`),
- its fragment of the allow-list (`policies/<POLICY>.policy`, filled from
  `Attached.facts`).

The launcher iterates `MODULES` and never names a device kind.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from spt.manifest import Entry


class Option(NamedTuple):
    """A device option `--FLAG:NAME=VALUE`; `parse` turns VALUE into the
    setting `key` (raising SptError with the operator's message)."""

    flag: str
    key: str
    parse: Callable[[str, str], object]
    metavar: str
    help: str
    required: bool = False  # the option that attaches the device


class Attached(NamedTuple):
    """A device opened for the guest: plain facts, no behaviour."""

    entry: Entry  # the manifest entry, attached, with the device's facts
    fds: tuple[int, ...]  # fds the guest keeps
    facts: dict  # placeholders of the policy fragment (never mutated)
    policy: str = ""  # policies/<policy>.policy
    watch: tuple[tuple[int, int], ...] = ()  # (fd, epoll data) for yield


def modules():
    """The device modules, in a fixed order. Imported here, not at the top,
    so that `spt.devices` itself costs nothing to import."""
    from spt.devices import block, net

    return (block, net)
