"""Structured manifest fuzzing (Hypothesis, derandomized: the same examples
every run, so CI is deterministic).

Manifests are drawn field by field - version, entry count (true or not),
names of every length and byte, types, hostfd, the attached flag, the union,
trailing or missing bytes - and `spt.manifest.parse` must agree with the
rules of spt-abi §1.2 as tests/fuzzing.py states them: the same devices when
valid, a one-line "Solo5 manifest is invalid" otherwise. The same manifests
are then put into a real image, where the whole loader must agree too.
"""

from __future__ import annotations

import struct
from pathlib import Path

import elfcraft as ec
import fuzzing
from conftest import guest_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spt import image, manifest
from spt.errors import SptError

DETERMINISTIC = settings(derandomize=True, database=None, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow])

names = st.one_of(
    st.binary(max_size=68),
    st.text("abcXYZ019", min_size=1, max_size=67).map(str.encode),
    st.just(b"A" * 68),
)
types = st.sampled_from([ec.MFT_DEV_BLOCK_BASIC, ec.MFT_DEV_NET_BASIC, ec.MFT_RESERVED_FIRST,
                         0, 3, 0x40000001, 0xFFFFFFFF])


def record(name: bytes, type_: int, union: bytes = bytes(16), hostfd: int = -1,
           attached: int = 0) -> bytes:
    return (name.ljust(68, b"\0")[:68] + struct.pack("<I", type_) + union
            + struct.pack("<q", hostfd) + bytes([attached]) + bytes(7))


odd_records = st.builds(
    record, names, types, st.binary(min_size=16, max_size=16),
    st.sampled_from([-1, 0, 3, 1 << 40]), st.sampled_from([0, 0, 1, 255]))


@st.composite
def manifests(draw) -> bytes:
    """A plausible manifest (the reserved entry, then devices d1, d2 ...)
    with a few records replaced by odd ones, and header and size bent."""
    count = draw(st.sampled_from([0, 1, 2, 3, 8, 62, 63, 64, 65, 66]))
    body = [record(b"", ec.MFT_RESERVED_FIRST)] + [
        record(b"d%d" % i, (ec.MFT_DEV_BLOCK_BASIC, ec.MFT_DEV_NET_BASIC)[i % 2])
        for i in range(1, count)]
    body = body[:count]
    for _ in range(draw(st.integers(0, 3)) if count else 0):
        body[draw(st.integers(0, count - 1))] = draw(odd_records)
    version = draw(st.sampled_from([1] * 12 + [0, 2, 0xFFFFFFFF]))
    declared = draw(st.sampled_from([count] * 10 + [count + 1, max(count - 1, 0),
                                                  0xFFFFFFFF]))
    content = struct.pack("<II", version, declared) + b"".join(body)
    cut = draw(st.sampled_from([None] * 12 + [0, 4, 7, len(content) - 1]))
    if cut is not None:
        content = content[:max(cut, 0)]
    return content + draw(st.sampled_from([b""] * 12 + [b"\0", bytes(104)]))


@settings(DETERMINISTIC, max_examples=600)
@given(manifests())
def test_manifest_parser_matches_the_abi(content):
    expected = fuzzing.spec_manifest(content)
    try:
        parsed = manifest.parse(content)
    except manifest.ManifestError as exc:
        message = str(exc)
        assert message.startswith("Solo5 manifest is invalid") and "\n" not in message, message
        assert isinstance(expected, str), "valid per the ABI, refused: %s" % message
        return
    assert not isinstance(expected, str), "invalid per the ABI (%s), accepted" % expected
    assert tuple((e.name, e.type) for e in parsed.devices) == expected
    assert not any(e.attached for e in parsed.entries)


@settings(DETERMINISTIC, max_examples=200)
@given(manifests())
def test_loader_matches_the_abi_with_any_manifest(tmp_path_factory, content):
    base = Path(guest_path("hello")).read_bytes()
    data = ec.with_manifest(base, content)
    path = tmp_path_factory.mktemp("mft") / "case.spt"
    path.write_bytes(data)
    reference = fuzzing.spec_verdict(data, 512 << 20)
    try:
        got = fuzzing.loader_view(image.load(str(path)))
    except SptError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
        assert not reference.ok, "valid per the ABI, refused: %s" % exc
        return
    assert reference.ok, "invalid per the ABI (%s), accepted" % reference.why
    assert got == reference
