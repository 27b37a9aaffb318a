"""The Solo5 manifest: parse it from an image and fill it for the guest.

The same `Manifest` type serves the launcher (which reads the MFT1 note and
writes the attached copy at boot), `spt inspect` and `spt manifest gen`
(spt/manifestgen.py, which turns a JSON declaration into the C source of the
note), so the kit and the launcher agree on the layout by construction.
"""

from spt import SptError, abi
from spt.lean import Layout
from spt.lean import Record

# u32 version; u32 entries
_HEADER = Layout("<II")
# char name[68]; u32 type; 16-byte union; int hostfd (8-byte slot); bool attached; pad
_ENTRY = Layout("<68sI16sq?7x")
_BLOCK_UNION = Layout("<QH6x")  # u64 capacity; u16 block_size
_NET_UNION = Layout("<6sH8x")  # u8 mac[6]; u16 mtu
assert _ENTRY.size == abi.MFT_ENTRY_SIZE



def valid_name(name) -> bool:
    """A device NAME: 1 to 67 of [A-Za-z0-9] (ASCII letters and digits)."""
    return (isinstance(name, str) and 1 <= len(name) <= abi.MFT_NAME_MAX
            and name.isascii() and name.isalnum())


class ManifestError(SptError):
    """The manifest does not follow the ABI's rules."""


# Records are namedtuple-shaped (spt/lean.py; immutable, `_replace` to derive
# one): the launch path avoids importing typing, dataclasses and collections,
# which cost more than the rest of a launch.
class Entry(Record, fields="index name type hostfd attached capacity block_size mac mtu",
            defaults=(-1, False, 0, 0, b"\0" * 6, 0)):
    """One manifest record; `index` is the device handle the guest uses.
    `hostfd`, `attached` and the device facts (block `capacity` and
    `block_size`, net `mac` and `mtu`) are filled in at attach time."""

    __slots__ = ()

    @property
    def type_name(self) -> str:
        return abi.MFT_TYPE_NAMES.get(self.type, "UNKNOWN(%#x)" % self.type)


class Manifest(Record, fields="version entries"):
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

    def with_entry(self, entry: Entry) -> "Manifest":
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
