"""Writing files so that a reader never sees half of one, and never through a
link someone else planted.

A file is written to a temporary beside it, made exclusively (O_EXCL, so an
existing name, a symbolic link included, is never opened; O_NOFOLLOW says
the same once more) under a random name, retried on a collision; then it is
renamed over the target. rename() replaces the target's directory entry: if
the target is a symbolic link, the link is replaced by the file and what it
pointed at is left alone. A directory others may write is still theirs (they
may remove or rename what is written there), but nothing is ever written
outside it through a name they made.
"""

from __future__ import annotations

import errno
import os
import stat

# Tries at a free temporary name: 64 random bits each, so a second collision
# means someone is planting names faster than chance would.
TEMPORARY_TRIES = 16
# The target's name in the temporary's, cut so that the whole stays within
# NAME_MAX (255) with the dot, 16 hex digits and the suffix.
NAME_IN_TEMPORARY = 200


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over.
    A failure names `path`, the file asked for, not the temporary one."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            write_atomic_at(dir_fd, name, data, mode)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None


def write_atomic_at(dir_fd: int, name: str, data: bytes, mode: int = 0o644,
                    group: int | None = None) -> None:
    """write_atomic() of the entry `name` in the directory open as `dir_fd`.
    `mode` is the temporary's from its creation (less the umask), `group`
    (if given) its group before the data: the data is never readable by
    more than that."""
    tmp, fd = _create_temporary(dir_fd, name, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if group is not None:
                os.fchown(f.fileno(), -1, group)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise


def _create_temporary(dir_fd: int, name: str, mode: int) -> tuple[str, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(TEMPORARY_TRIES):
        tmp = ".%s.%s.tmp" % (name[:NAME_IN_TEMPORARY], os.urandom(8).hex())
        try:
            return tmp, os.open(tmp, flags, mode, dir_fd=dir_fd)
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "no free temporary name beside it after %d tries"
                  % TEMPORARY_TRIES)


def open_directory_under(root: str, relative: str) -> int:
    """A descriptor of the directory ROOT/RELATIVE, each missing component
    made (0755), each reached from the one before without following a
    symbolic link: whatever the tree under `root` holds, the directory is
    inside it. A component that is a link fails with ELOOP, naming it."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    here = root
    try:
        for part in (p for p in relative.split("/") if p):
            here = os.path.join(here, part)
            if part in (".", ".."):
                raise OSError(errno.EINVAL, "not a plain path component", here)
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                below = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd):
                    raise OSError(errno.ELOOP, "a symbolic link, not followed (writes under "
                                  "--root stay in it)", here) from None
                raise OSError(exc.errno, exc.strerror, here) from None
            os.close(fd)
            fd = below
        return fd
    except BaseException:
        os.close(fd)
        raise


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
