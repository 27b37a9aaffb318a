"""spt/lean.py's stand-ins behave as the standard modules they stand in for.

The launch path uses them instead of os, collections.namedtuple, struct and
resource (spt/lean.py says why); each is held here to the standard module's
own answers, so a launch never sees a difference.
"""

import collections
import os
import pickle
import posix
import resource
import stat
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT
from spt import lean, manifest, plan

# --- os ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/a/b", "/a/b/", "a", "/", "//a", "a/b//c", "/a//b", "",
                                  "a/", "./x", "../y/z"])
def test_dirname_is_os_path_dirname(path):
    assert lean.dirname(path) == os.path.dirname(path)


@pytest.mark.parametrize("directory, name", [("/a", "b"), ("/a/", "b"), ("", "b"), ("a", "b"),
                                             ("/", "x/y"), ("a//", "b")])
def test_join_is_os_path_join(directory, name):
    assert lean.join(directory, name) == os.path.join(directory, name)


@pytest.mark.parametrize("text", ["plain", "caf\u00e9", "bad\udcff\udcfe", ""])
def test_fsencode_is_os_fsencode(text):
    assert lean.fsencode(text) == os.fsencode(text)


def test_getenv_follows_os_environ_once_os_is_imported(monkeypatch):
    monkeypatch.setenv("SPT_LEAN_PROBE", "caf\u00e9")
    assert lean.getenv("SPT_LEAN_PROBE") == "caf\u00e9"
    monkeypatch.delenv("SPT_LEAN_PROBE")
    assert lean.getenv("SPT_LEAN_PROBE") is None
    assert lean.getenv("SPT_LEAN_PROBE", "dflt") == "dflt"


def test_getenv_reads_the_process_environment_where_os_is_not_imported():
    """The launch path's case: no os in sys.modules, the environment as
    the process got it (not UTF-8 bytes come back as os.environ gives them)."""
    probe = ("import sys; sys.path.insert(0, %r); from spt import lean; "
             "assert 'os' not in sys.modules; "
             "print(ascii(lean.getenv('SPT_LEAN_PROBE')), lean.getenv('SPT_LEAN_NONE', 'dflt'), "
             "'os' in sys.modules)" % str(ROOT))
    env = {b"SPT_LEAN_PROBE": b"a\xffb", b"PATH": b"/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [ascii(os.fsdecode(b"a\xffb")), "dflt", "False"]


def test_read_file_reads_the_whole_file(tmp_path):
    data = os.urandom(200_000)
    (tmp_path / "f").write_bytes(data)
    assert lean.read_file(str(tmp_path / "f")) == data
    with pytest.raises(FileNotFoundError):
        lean.read_file(str(tmp_path / "missing"))


def test_rlimits_are_resources_own():
    for number in range(16):
        assert lean.getrlimit(number) == resource.getrlimit(number), number
    numbers = list(range(16))
    assert lean.getrlimits(*numbers) == [resource.getrlimit(n) for n in numbers]
    for name in ("NPROC", "NOFILE", "MEMLOCK", "AS", "MSGQUEUE", "NICE", "RTPRIO"):
        assert getattr(lean, "RLIMIT_" + name) == getattr(resource, "RLIMIT_" + name), name
    assert lean.RLIM_INFINITY == resource.RLIM_INFINITY


def test_rlimits_follow_a_lowered_limit_and_unlimited():
    """Read in a child that lowered its own limits: numbers and
    `unlimited` both come back as the resource module says them."""
    probe = ("import resource, sys; sys.path.insert(0, %r); from spt import lean; "
             "resource.setrlimit(resource.RLIMIT_NOFILE, (17, 23)); "
             "resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2); "
             "print(lean.getrlimits(resource.RLIMIT_NOFILE, resource.RLIMIT_CORE))"
             % str(ROOT))
    out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(17, 23), (-1, -1)]"


def test_rlimits_fall_back_to_the_resource_module_without_proc(monkeypatch):
    real_open = posix.open

    def no_proc(path, *args, **kwargs):
        if path == "/proc/self/limits":
            raise FileNotFoundError(2, "No such file or directory")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(posix, "open", no_proc)
    assert lean.getrlimits(resource.RLIMIT_NOFILE, resource.RLIMIT_AS) == [
        resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_AS)]


def test_stat_is_the_c_module_under_stat():
    for name in ("S_ISREG", "S_ISDIR", "S_IWGRP", "S_IWOTH", "S_IWUSR"):
        assert getattr(lean.stat, name) == getattr(stat, name), name
    assert lean.stat.S_ISREG(os.stat(__file__).st_mode)
    assert lean.stat.S_ISDIR(os.stat(ROOT).st_mode)


# --- collections.namedtuple ----------------------------------------------------


class Point(lean.Record, fields="x y z", defaults=(5,)):
    __slots__ = ()


NamedPoint = collections.namedtuple("Point", "x y z", defaults=(5,))


@pytest.mark.parametrize("args, kwargs", [((1, 2), {}), ((1, 2, 3), {}), ((1,), {"y": 2}),
                                          ((), {"x": 1, "y": 2, "z": 3}), ((), {"y": 1, "x": 0})])
def test_a_record_is_built_and_read_as_a_namedtuple(args, kwargs):
    mine, theirs = Point(*args, **kwargs), NamedPoint(*args, **kwargs)
    assert tuple(mine) == tuple(theirs) and mine == theirs and hash(mine) == hash(theirs)
    assert repr(mine) == repr(theirs)
    assert mine._asdict() == theirs._asdict()
    assert mine._replace(y=9) == theirs._replace(y=9)
    assert type(mine._replace(y=9)) is Point
    assert (mine.x, mine.y, mine.z) == (theirs.x, theirs.y, theirs.z)
    assert Point._make(tuple(mine)) == mine
    x, y, z = mine
    assert (x, y, z) == tuple(theirs)


@pytest.mark.parametrize("args, kwargs", [((1, 2, 3, 4), {}), ((1,), {}), ((1, 2), {"x": 3}),
                                          ((1, 2), {"q": 1})])
def test_a_record_refuses_what_namedtuple_refuses(args, kwargs):
    with pytest.raises(TypeError):
        NamedPoint(*args, **kwargs)
    with pytest.raises(TypeError):
        Point(*args, **kwargs)
    with pytest.raises(ValueError):
        Point(1, 2)._replace(q=1)
    with pytest.raises(TypeError):
        Point._make((1, 2))


def test_record_class_facts_are_namedtuples():
    assert Point._fields == NamedPoint._fields
    assert Point._field_defaults == NamedPoint._field_defaults
    assert Point.__match_args__ == NamedPoint.__match_args__
    assert Point.__module__ == __name__
    assert not hasattr(Point(1, 2), "__dict__")
    assert pickle.loads(pickle.dumps(Point(1, 2))) == Point(1, 2)

    class Moved(Point):
        __slots__ = ()

    moved = Moved(1, 2)
    assert moved._fields == Point._fields and type(moved._replace(x=0)) is Moved
    assert repr(moved) == "Moved(x=1, y=2, z=5)"
    with pytest.raises(TypeError):
        class TooMany(lean.Record, fields="a", defaults=(1, 2)):
            __slots__ = ()


# --- struct ----------------------------------------------------------------------

# every layout the launch path packs or reads
LAYOUTS = [plan.HEADER, plan.SEGMENT, plan.EPOLL, plan.RLIMIT, plan.BOOT_INFO, manifest._HEADER,
           manifest._ENTRY, manifest._BLOCK_UNION, manifest._NET_UNION, lean.Layout("<3i"),
           lean.Layout("<H"), lean.Layout("<HBBI")]
RANGES = {"B": (0, 255), "H": (0, 65535), "I": (0, 2**32 - 1), "i": (-2**31, 2**31 - 1),
          "Q": (0, 2**64 - 1), "q": (-2**63, 2**63 - 1)}


def _codes(layout):
    """One (code, width) per packed value of a layout's format."""
    out, digits = [], ""
    for ch in layout.format[1:]:
        if ch.isdigit():
            digits += ch
            continue
        count, digits = int(digits or 1), ""
        if ch == "s":
            out.append(("s", count))
        elif ch != "x":
            out += [(ch, 1)] * count
    return out


def _values(layout):
    parts = []
    for code, width in _codes(layout):
        if code == "s":
            parts.append(st.binary(max_size=width + 3))
        elif code == "?":
            parts.append(st.booleans())
        else:
            parts.append(st.integers(*RANGES[code]))
    return st.tuples(*parts)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.format)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_layout_packs_and_reads_as_struct_does(layout, data):
    values = data.draw(_values(layout))
    ours = layout.pack(*values)
    assert ours == struct.pack(layout.format, *values)
    assert layout.size == struct.calcsize(layout.format)
    buffer = b"\x07" * 3 + ours + b"\x09"
    assert layout.unpack_from(buffer, 3) == struct.unpack_from(layout.format, buffer, 3)


@pytest.mark.parametrize("fmt, values", [("<I", (-1,)), ("<I", (2**32,)), ("<H", ("1",)),
                                         ("<8s", (7,)), ("<II", (1,)), ("<q", (2**63,))])
def test_a_layout_refuses_what_struct_refuses(fmt, values):
    with pytest.raises(struct.error):
        struct.pack(fmt, *values)
    with pytest.raises(lean.error):
        lean.Layout(fmt).pack(*values)


def test_a_layout_refuses_a_short_buffer_and_other_formats():
    with pytest.raises(lean.error):
        lean.Layout("<QI").unpack_from(bytes(11))
    with pytest.raises(lean.error):
        lean.Layout("<I").unpack_from(bytes(8), 5)
    for fmt in ("QI", ">I", "<f", "<I3"):
        with pytest.raises(ValueError):
            lean.Layout(fmt)
