"""spt.fileutil: atomic writes that never go through a link someone planted
(`spt policy --bpf`, `spt manifest gen`, `spt unit install` and
SPT_PLAN_DUMP all write with it, often as root)."""

from __future__ import annotations

import errno
import os

import pytest

from spt import fileutil


@pytest.fixture
def victim(tmp_path_factory):
    """A file outside the directory written in, that must stay as it is."""
    path = tmp_path_factory.mktemp("elsewhere") / "victim"
    path.write_text("untouched\n")
    return path


def test_planted_links_at_the_temporaries_a_pid_would_name_are_not_followed(tmp_path, victim):
    """The old temporary was DIR/.NAME.PID.tmp, opened with O_CREAT|O_TRUNC:
    a link planted there for the writer's PID made it write the victim."""
    target = tmp_path / "out.bpf"
    for pid in range(max(1, os.getpid() - 50), os.getpid() + 50):
        (tmp_path / (".out.bpf.%d.tmp" % pid)).symlink_to(victim)
    fileutil.write_atomic(str(target), b"program")
    assert victim.read_text() == "untouched\n"
    assert target.read_bytes() == b"program" and not target.is_symlink()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink())
    assert leftovers == ["out.bpf"]


def test_a_link_at_the_target_is_replaced_not_written_through(tmp_path, victim):
    target = tmp_path / "spt.conf"
    target.symlink_to(victim)
    fileutil.write_atomic(str(target), b"new\n")
    assert victim.read_text() == "untouched\n"
    assert not target.is_symlink() and target.read_bytes() == b"new\n"


def test_a_taken_temporary_name_is_retried_under_another(tmp_path, victim, monkeypatch):
    draws = iter([b"\x00" * 8, b"\x00" * 8, b"\x01" * 8])
    monkeypatch.setattr(fileutil.os, "urandom", lambda n: next(draws))
    (tmp_path / (".f.%s.tmp" % ("00" * 8))).symlink_to(victim)
    fileutil.write_atomic(str(tmp_path / "f"), b"x")
    assert (tmp_path / "f").read_bytes() == b"x" and victim.read_text() == "untouched\n"
    assert not (tmp_path / (".f.%s.tmp" % ("01" * 8))).exists()  # renamed over f


def test_when_every_name_is_taken_the_write_fails_naming_the_target(tmp_path, victim,
                                                                    monkeypatch):
    monkeypatch.setattr(fileutil.os, "urandom", lambda n: b"\x07" * n)
    (tmp_path / (".f.%s.tmp" % ("07" * 8))).symlink_to(victim)
    with pytest.raises(OSError) as err:
        fileutil.write_atomic(str(tmp_path / "f"), b"x")
    assert (err.value.errno, err.value.filename) == (errno.EEXIST, str(tmp_path / "f"))
    assert victim.read_text() == "untouched\n" and not (tmp_path / "f").exists()


def test_the_temporary_has_the_final_mode_from_its_creation(tmp_path, monkeypatch):
    """Created 0600, the data is never readable by others, not even before
    the rename (a mode set after the write would leave a window)."""
    seen = []
    real_replace = os.replace

    def spy(src, dst, **kwargs):
        seen.append(os.stat(src, dir_fd=kwargs["src_dir_fd"]).st_mode & 0o777)
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(fileutil.os, "replace", spy)
    fileutil.write_atomic(str(tmp_path / "secret"), b"args", mode=0o600)
    assert seen == [0o600] and (tmp_path / "secret").stat().st_mode & 0o777 == 0o600


def test_a_long_name_still_fits_a_temporary(tmp_path):
    name = "n" * 255
    fileutil.write_atomic(str(tmp_path / name), b"x")
    assert (tmp_path / name).read_bytes() == b"x"
