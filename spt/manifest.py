"""The Solo5 manifest: parse it from an image, fill it for the guest, and
generate it from JSON for the guest kit.

The same `Manifest` type serves the launcher (which reads the MFT1 note and
writes the attached copy at boot), `spt inspect` and `spt manifest gen` (which
turns a JSON declaration into the C source of the note), so the kit and the
launcher agree on the layout by construction.
"""

from __future__ import annotations

import struct
from collections import namedtuple

from spt import abi
from spt.errors import SptError

# u32 version; u32 entries
_HEADER = struct.Struct("<II")
# char name[68]; u32 type; 16-byte union; int hostfd (8-byte slot); bool attached; pad
_ENTRY = struct.Struct("<68sI16sq?7x")
_BLOCK_UNION = struct.Struct("<QH6x")  # u64 capacity; u16 block_size
_NET_UNION = struct.Struct("<6sH8x")  # u8 mac[6]; u16 mtu
assert _ENTRY.size == abi.MFT_ENTRY_SIZE



def valid_name(name) -> bool:
    """A device NAME: 1 to 67 of [A-Za-z0-9] (ASCII letters and digits)."""
    return (isinstance(name, str) and 1 <= len(name) <= abi.MFT_NAME_MAX
            and name.isascii() and name.isalnum())

TYPE_BY_NAME = {name: number for number, name in abi.MFT_TYPE_NAMES.items()}


class ManifestError(SptError):
    """The manifest does not follow the ABI's rules."""


# Records are namedtuples (immutable, `_replace` to derive one): the launch
# path avoids importing typing and dataclasses, which cost more than the rest
# of a launch.
class Entry(namedtuple("Entry", "index name type hostfd attached capacity block_size mac mtu",
                       defaults=(-1, False, 0, 0, b"\0" * 6, 0))):
    """One manifest record; `index` is the device handle the guest uses.
    `hostfd`, `attached` and the device facts (block `capacity` and
    `block_size`, net `mac` and `mtu`) are filled in at attach time."""

    __slots__ = ()

    @property
    def type_name(self) -> str:
        return abi.MFT_TYPE_NAMES.get(self.type, "UNKNOWN(%#x)" % self.type)


class Manifest(namedtuple("Manifest", "version entries")):
    """The manifest: its version and every entry, index 0 included."""

    __slots__ = ()

    @property
    def devices(self) -> tuple[Entry, ...]:
        """The real devices (entry 0 is the reserved first entry)."""
        return self.entries[1:]

    def find(self, name: str) -> Entry | None:
        for entry in self.devices:
            if entry.name == name:
                return entry
        return None

    def with_entry(self, entry: Entry) -> Manifest:
        entries = list(self.entries)
        entries[entry.index] = entry
        return self._replace(entries=tuple(entries))

    def pack(self) -> bytes:
        """The manifest bytes as the guest reads them at boot."""
        out = [_HEADER.pack(self.version, len(self.entries))]
        for e in self.entries:
            if e.type == abi.MFT_DEV_BLOCK_BASIC:
                union = _BLOCK_UNION.pack(e.capacity, e.block_size)
            elif e.type == abi.MFT_DEV_NET_BASIC:
                union = _NET_UNION.pack(e.mac, e.mtu)
            else:
                union = bytes(16)
            out.append(_ENTRY.pack(e.name.encode(), e.type, union, e.hostfd, e.attached))
        return b"".join(out)

    def to_json(self) -> dict:
        """The shape Solo5's elftool prints for `query-manifest`."""
        return {
            "type": "solo5.manifest",
            "version": self.version,
            "devices": [{"name": e.name, "type": e.type_name} for e in self.devices],
        }


def parse(content: bytes) -> Manifest:
    """Parse and validate MFT1 note content (spt-abi §1.2).

    Every rule failure is the single message scripts look for; the detail
    goes after a colon so operators can see which rule it was.
    """

    def invalid(why: str) -> ManifestError:
        return ManifestError("Solo5 manifest is invalid: %s" % why)

    if len(content) < _HEADER.size:
        raise invalid("shorter than its header")
    version, count = _HEADER.unpack_from(content)
    if version != abi.MFT_VERSION:
        raise invalid("version %d, expected %d" % (version, abi.MFT_VERSION))
    if count > abi.MFT_MAX_ENTRIES:
        raise invalid("%d entries, at most %d allowed" % (count, abi.MFT_MAX_ENTRIES))
    if len(content) != _HEADER.size + abi.MFT_ENTRY_SIZE * count:
        raise invalid("size %d does not match %d entries" % (len(content), count))
    if count < 1:
        raise invalid("no entries")
    entries = []
    seen = set()
    for index in range(count):
        raw_name, type_, _union, hostfd, attached = _ENTRY.unpack_from(
            content, _HEADER.size + index * abi.MFT_ENTRY_SIZE
        )
        if raw_name[abi.MFT_NAME_MAX] != 0:
            raise invalid("entry %d: name is not NUL-terminated" % index)
        if attached:
            raise invalid("entry %d: already marked attached" % index)
        name = raw_name.split(b"\0", 1)[0].decode("latin-1")
        if index == 0:
            if type_ != abi.MFT_RESERVED_FIRST or name:
                raise invalid("entry 0 must be the reserved first entry")
        elif name in seen:
            # A second entry of one name could never be attached (options
            # name devices by name), so the guest would boot with a declared
            # device missing; Solo5's tender refuses such a manifest too.
            raise invalid("entry %d: name %s is declared twice" % (index, ascii(name)))
        else:
            seen.add(name)
        entries.append(Entry(index=index, name=name, type=type_, hostfd=hostfd))
    return Manifest(version=version, entries=tuple(entries))


def from_json(text: str) -> Manifest:
    """A manifest declared in Solo5's JSON shape, checked against the ABI."""
    import json

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError("manifest JSON is malformed: %s" % exc) from None
    if not isinstance(doc, dict) or doc.get("type") != "solo5.manifest":
        raise ManifestError('manifest JSON must be an object with "type": "solo5.manifest"')
    if type(doc.get("version")) is not int or doc["version"] != abi.MFT_VERSION:
        raise ManifestError("manifest JSON version must be %d" % abi.MFT_VERSION)
    devices = doc.get("devices", [])
    if not isinstance(devices, list):
        raise ManifestError('manifest JSON "devices" must be a list')
    if len(devices) > abi.MFT_MAX_ENTRIES - 1:
        raise ManifestError("manifest declares %d devices, at most %d allowed"
                            % (len(devices), abi.MFT_MAX_ENTRIES - 1))
    entries = [Entry(index=0, name="", type=abi.MFT_RESERVED_FIRST)]
    seen = set()
    for index, dev in enumerate(devices, start=1):
        if not isinstance(dev, dict):
            raise ManifestError("manifest device %d must be an object" % index)
        name, type_name = dev.get("name"), dev.get("type")
        if not valid_name(name):
            raise ManifestError("manifest device %d: name %r must be 1 to %d of [A-Za-z0-9]"
                                % (index, name, abi.MFT_NAME_MAX))
        if name in seen:
            raise ManifestError("manifest device name %r is declared twice" % name)
        seen.add(name)
        if type_name not in ("BLOCK_BASIC", "NET_BASIC"):
            raise ManifestError("manifest device %r: type must be BLOCK_BASIC or NET_BASIC" % name)
        entries.append(Entry(index=index, name=name, type=TYPE_BY_NAME[type_name]))
    return Manifest(version=abi.MFT_VERSION, entries=tuple(entries))


def to_c_source(manifest: Manifest) -> str:
    """C source of the MFT1 note for a guest-kit image.

    The note header is 20 bytes and the content must start at offset 24
    (8-byte aligned), so descsz counts 4 bytes of padding plus the content.
    """
    content = manifest.pack()
    descsz = len(content) + (24 - abi.NOTE_HEADER_SIZE)
    rows = ",\n".join(
        "    " + ", ".join("0x%02x" % b for b in content[i:i + 12])
        for i in range(0, len(content), 12)
    )
    names = ", ".join("%s (%s)" % (e.name, e.type_name) for e in manifest.devices) or "none"
    return f"""/* Generated by `spt manifest gen`: do not edit.
 * Devices: {names}
 * An MFT1 note in its own section; the kit's linker script gives it its own
 * PT_NOTE segment, as the spt ABI requires. */
#include <stdint.h>

struct spt_mft1_note {{
    uint32_t namesz, descsz, type;
    char name[8];            /* "Solo5", padded so the content is 8-aligned */
    uint32_t pad;            /* content starts at offset 24 */
    uint8_t content[{len(content)}];
}} __attribute__((packed, aligned(8)));

__attribute__((section(".note.solo5.manifest"), used))
const struct spt_mft1_note spt_mft1_note = {{
    .namesz = 6,
    .descsz = {descsz},
    .type = 0x{abi.MFT1_NOTE_TYPE:08x},
    .name = "Solo5",
    .pad = 0,
    .content = {{
{rows}
    }},
}};
"""


def read_json(json_path: str) -> Manifest:
    """The manifest declared in the JSON file, checked; errors name the file."""
    try:
        with open(json_path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError("%s: %s" % (json_path, getattr(exc, "strerror", None) or exc)) from None
    try:
        return from_json(text)
    except ManifestError as exc:
        raise ManifestError("%s: %s" % (json_path, exc)) from None


def write_c_source(json_path: str, out_path: str) -> None:
    """Check a JSON manifest and write its note's C source, atomically."""
    from spt.fileutil import write_atomic

    try:
        write_atomic(out_path, to_c_source(read_json(json_path)).encode())
    except OSError as exc:
        raise ManifestError("%s: %s" % (out_path, exc.strerror or exc)) from None


if __name__ == "__main__":  # used by the guest kit's build before `spt` exists
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "gen":
        sys.exit("usage: python -m spt.manifest gen MANIFEST.json OUT.c")
    try:
        write_c_source(sys.argv[2], sys.argv[3])
    except SptError as exc:
        sys.exit("spt: %s" % exc)
