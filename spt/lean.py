"""The launch path's stand-ins for os, collections, struct, zlib and resource.

A warm launch is measured against the bare interpreter (`python -I -S -c
pass`, about 6.5 ms on a 2-core host; docs/benchmarks.md), and the standard
modules it would otherwise import cost more than a third of that: `os` (1
ms: its environment mapping and the collections ABCs under it),
`collections` (1.3 ms with operator, keyword and reprlib), `zlib` (0.3 ms: a
C extension and libz to load), `struct` and `resource` (0.2 and 0.15 ms).
The modules of the launch path use what is built into the interpreter
instead, through this module:

- `posix`, the C module under os: its functions are os's own (`os.open is
  posix.open`). From here: the environment by name (`getenv`), file names
  as bytes (`fsencode`), `read_file`, `join` and `dirname`, resource limits
  read from /proc/self/limits (`getrlimit`), and `lean.stat`, the C module
  under stat (`S_ISREG`, `S_IWOTH`, ...) without stat.py around it.
- `Record`: classes of namedtuple's shape (`class X(Record, fields="a b")`),
  their fields the interpreter's `_collections._tuplegetter`, which
  namedtuple's fields are made of.
- `Layout`: the little-endian C layouts the plan, the manifest and BPF use,
  with struct.Struct's `format`, `size`, `pack` and `unpack_from`.
- `checksum`: a 64-bit SipHash of bytes, the one the interpreter computes
  for hash-based .pyc files (`_imp.source_hash`, PEP 552), where zlib's
  crc32 would have served: as fast, and built in.

tests/test_lean.py holds each to the standard module it stands in for, and
tests/test_launch_path.py checks that a warm launch imports none of them.
Code off the launch path (the tool, a cache miss's full checks) uses the
standard modules.
"""

import _imp
import _stat
import posix
import sys
from _collections import _tuplegetter

stat = _stat  # the C module under stat: its functions and constants (lean.stat.S_ISREG)


# os

def getenv(name: str, default: str | None = None) -> str | None:
    """$name, as `os.environ.get` gives it. Once anything has imported os
    (the operator tool, a test), os.environ is the environment that code
    may have changed; before that, nothing can have changed posix's copy."""
    os = sys.modules.get("os")
    if os is not None:
        return os.environ.get(name, default)
    value = posix.environ.get(fsencode(name))
    return default if value is None else value.decode(sys.getfilesystemencoding(),
                                                      sys.getfilesystemencodeerrors())


def fsencode(text: str) -> bytes:
    """`os.fsencode`: the bytes of a file name or argument that reached
    Python as str (undecodable bytes come back as they were)."""
    return text.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def read_file(path: str) -> bytes:
    """The bytes of a small file (`open(path, "rb").read()` without the io
    objects around the fd)."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        chunks = []
        while chunk := posix.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        posix.close(fd)
    return b"".join(chunks)


def join(directory: str, name: str) -> str:
    """`os.path.join` of a directory and a relative name."""
    if not directory or directory.endswith("/"):
        return directory + name
    return directory + "/" + name


def dirname(path: str) -> str:
    """`os.path.dirname`."""
    head = path[:path.rfind("/") + 1]
    return head.rstrip("/") or head


DEVNULL = "/dev/null"


# The key of `checksum`: any fixed number (the ASCII of "spt-sum1"); a change
# of it changes every name and key the launch cache computes, as a new spt
# release does.
_CHECKSUM_KEY = 0x7370742D73756D31


def checksum(data) -> int:
    """A 64-bit checksum of bytes-like `data`: SipHash-1-3 keyed with
    _CHECKSUM_KEY (`_imp.source_hash`, which the import system uses for
    hash-based .pyc files). It guards against accidental change, as CRC-32
    would, not against a forger (who could write a cache entry outright)."""
    return int.from_bytes(_imp.source_hash(_CHECKSUM_KEY, data), "little")


# Resource numbers of linux/resource.h (asm-generic: x86_64 and aarch64
# alike); tests/test_lean.py holds them to the resource module's.
RLIMIT_NPROC, RLIMIT_NOFILE, RLIMIT_MEMLOCK, RLIMIT_AS = 6, 7, 8, 9
RLIMIT_MSGQUEUE, RLIMIT_NICE, RLIMIT_RTPRIO = 12, 13, 14
RLIM_INFINITY = -1  # as the resource module says "unlimited"


def getrlimit(resource: int) -> tuple[int, int]:
    """`resource.getrlimit(resource)`: (soft, hard)."""
    return getrlimits(resource)[0]


def getrlimits(*resources: int) -> list[tuple[int, int]]:
    """`resource.getrlimit` of each, read from /proc/self/limits in one go
    (a line per resource, in resource order, soft and hard limit in fixed
    columns); that spares a launch the resource module's C extension, which
    answers where /proc does not."""
    try:
        fd = posix.open("/proc/self/limits", posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            lines = posix.read(fd, 8192).split(b"\n")
        finally:
            posix.close(fd)
        if not lines[0].startswith(b"Limit "):
            raise ValueError("not the table this reads")
        return [(_limit(lines[r + 1][26:46]), _limit(lines[r + 1][47:67])) for r in resources]
    except (OSError, IndexError, ValueError):
        import resource as resource_module

        return [resource_module.getrlimit(r) for r in resources]


def _limit(column: bytes) -> int:
    value = column.strip()
    return RLIM_INFINITY if value == b"unlimited" else int(value)


# collections.namedtuple

class _RecordType(type):
    """Makes a record class in one step: its fields' getters go into the
    class namespace before the class exists (cheaper than adding them after,
    which a launch would pay for a dozen classes)."""

    def __new__(mcls, name, bases, namespace, fields: str = "", defaults=()):
        if fields:
            names, defaults = tuple(fields.split()), tuple(defaults)
            if len(defaults) > len(names):
                raise TypeError("got more default values than field names")
            namespace.update(_fields=names, _defaults=defaults, __match_args__=names,
                             _field_defaults=dict(zip(names[len(names) - len(defaults):],
                                                      defaults)))
            for index, field in enumerate(names):
                namespace[field] = _tuplegetter(index, "Field %d: %s" % (index, field))
        return super().__new__(mcls, name, bases, namespace)

    def __init__(cls, name, bases, namespace, **_fields_and_defaults):
        super().__init__(name, bases, namespace)


class Record(tuple, metaclass=_RecordType):
    """A record class names its fields where it is defined:

        class Segment(Record, fields="index offset vaddr", defaults=(0,)):
            __slots__ = ()

    (`defaults` fill the last fields; a subclass without `fields` keeps its
    parent's). One class per record, made by the class statement: namedtuple
    makes two, and evals source for each."""

    __slots__ = ()
    _fields: tuple = ()
    _defaults: tuple = ()
    _field_defaults: dict = {}

    def __new__(cls, *args, **kwargs):
        fields = cls._fields
        if len(args) > len(fields):
            raise TypeError("%s() takes %d arguments, %d given"
                            % (cls.__name__, len(fields), len(args)))
        if kwargs or len(args) < len(fields):
            values, first_default = list(args), len(fields) - len(cls._defaults)
            for i in range(len(args), len(fields)):
                if fields[i] in kwargs:
                    values.append(kwargs.pop(fields[i]))
                elif i >= first_default:
                    values.append(cls._defaults[i - first_default])
                else:
                    raise TypeError("%s() missing required argument: '%s'"
                                    % (cls.__name__, fields[i]))
            if kwargs:
                name = next(iter(kwargs))
                why = "multiple values for" if name in fields else "an unexpected keyword"
                raise TypeError("%s() got %s argument '%s'" % (cls.__name__, why, name))
            args = values
        return tuple.__new__(cls, args)

    @classmethod
    def _make(cls, iterable):
        made = tuple.__new__(cls, iterable)
        if len(made) != len(cls._fields):
            raise TypeError("Expected %d arguments, got %d" % (len(cls._fields), len(made)))
        return made

    def _replace(self, **changes):
        made = self._make([changes.pop(name, value) for name, value in zip(self._fields, self)])
        if changes:
            raise ValueError("Got unexpected field names: %r" % list(changes))
        return made

    def _asdict(self) -> dict:
        return dict(zip(self._fields, self))

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__name__,
                           ", ".join("%s=%r" % pair for pair in zip(self._fields, self)))

    def __getnewargs__(self):
        return tuple(self)


# struct

# code -> (bytes per item, signed); "s" and "x" are bytes and padding
_CODES = {"x": (1, False), "?": (1, False), "B": (1, False), "H": (2, False),
          "I": (4, False), "i": (4, True), "Q": (8, False), "q": (8, True), "s": (1, False)}


class error(Exception):
    """A value that does not fit its field, or a buffer too short (struct.error's role)."""


class Layout:
    """One little-endian, packed (no alignment) C struct."""

    __slots__ = ("format", "size", "_items", "_count")

    def __init__(self, fmt: str):
        if not fmt.startswith("<"):
            raise ValueError("Layout formats are little-endian standard sizes: %r" % fmt)
        items, at, digits = [], 0, ""
        for ch in fmt[1:]:
            if ch.isdigit():
                digits += ch
                continue
            if ch not in _CODES:
                raise ValueError("unsupported format character %r in %r" % (ch, fmt))
            count, digits = int(digits) if digits else 1, ""
            width, signed = _CODES[ch]
            if ch in "sx":
                items.append((ch, at, count, signed))
                at += count
            else:
                for _ in range(count):
                    items.append((ch, at, width, signed))
                    at += width
        if digits:
            raise ValueError("format %r ends in a count" % fmt)
        self.format, self.size, self._items = fmt, at, tuple(items)
        self._count = sum(1 for code, *_ in items if code != "x")

    def pack(self, *values) -> bytes:
        if len(values) != self._count:
            raise error("pack expected %d items, got %d" % (self._count, len(values)))
        out, values = [], iter(values)
        for code, _at, width, signed in self._items:
            if code == "x":
                out.append(bytes(width))
            elif code == "s":
                value = next(values)
                if not isinstance(value, (bytes, bytearray)):
                    raise error("argument for 's' must be a bytes object")
                out.append(bytes(value[:width]).ljust(width, b"\0"))
            elif code == "?":
                out.append(b"\1" if next(values) else b"\0")
            else:
                try:
                    out.append(next(values).to_bytes(width, "little", signed=signed))
                except (AttributeError, OverflowError) as exc:
                    raise error("a value for '%s' is out of range or not an integer: %s"
                                % (code, exc)) from None
        return b"".join(out)

    def unpack_from(self, buffer, offset: int = 0) -> tuple:
        view = memoryview(buffer)[offset:]
        if offset < 0 or len(view) < self.size:
            raise error("unpack_from requires a buffer of at least %d bytes" % (self.size + offset))
        out = []
        for code, at, width, signed in self._items:
            if code == "x":
                continue
            if code == "s":
                out.append(bytes(view[at:at + width]))
            elif code == "?":
                out.append(view[at] != 0)
            else:
                out.append(int.from_bytes(view[at:at + width], "little", signed=signed))
        return tuple(out)
