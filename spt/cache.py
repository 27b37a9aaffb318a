"""A small cache of launch work that depends only on its inputs.

Two things are expensive on the launch path and fully determined by inputs
that are cheap to check: the checked `Image` (pyelftools, every ABI rule),
keyed by the kernel's size and a checksum of all its bytes (not the file's
identity: a write through a shared mapping changes neither mtime nor
ctime), and the BPF program, keyed by the exact policy texts and the device
facts rendered into them. A hit skips importing pyelftools and libseccomp;
a miss does the full work and stores it, and prunes the directory (`prune`).

Safety: an entry is used only if its file is a regular file owned by this
user and writable by nobody else, in a directory of the same kind, and if the
full key stored inside it equals the key asked for (the file name is only a
checksum of the key). Anything else is a miss. That keeps out other users,
not this user's other processes, which can write a valid entry: so callers
trust an entry for nothing they cannot check (spt/image.py checks a
remembered layout again, spt/policy.py installs a remembered filter only
when spt/bpfcheck.py proves it allows no more than its rules; who can write
the cache in each setting: docs/security.md, "5. Cache trust").
`SPT_CACHE=0` turns the cache off; `SPT_CACHE_DIR` moves it. Under systemd,
`CacheDirectory=` hands us `$CACHE_DIRECTORY`.
"""

import marshal
import posix  # not os: the launch path's modules do without it (spt/lean.py)

from spt import __version__, lean

_MAGIC = b"spt-cache-2\n"


def cache_dir() -> str | None:
    """Where entries live, or None if the cache is off."""
    if lean.getenv("SPT_CACHE") == "0":
        return None
    explicit = lean.getenv("SPT_CACHE_DIR") or lean.getenv("CACHE_DIRECTORY")
    if explicit:
        return explicit.split(":")[0]
    if posix.geteuid() == 0:
        return "/var/cache/spt"
    base = lean.getenv("XDG_CACHE_HOME")
    if not base:
        home = _home()
        if home is None:
            return None  # no home to cache in: every launch does the full work
        base = lean.join(home, ".cache")
    return lean.join(base, "spt")


def _home() -> str | None:
    """`os.path.expanduser("~")`: $HOME, else the user database's; None for
    a uid the database does not know (a container's arbitrary uid)."""
    home = lean.getenv("HOME")
    if home is None:
        import pwd

        try:
            home = pwd.getpwuid(posix.getuid()).pw_dir
        except KeyError:
            return None
    return home.rstrip("/") or "/"


def trusted(st) -> bool:
    """The rule for everything in the launch cache's directory (the image
    store's files too): owned by this user, writable by nobody else."""
    return (st.st_uid == posix.geteuid()
            and not st.st_mode & (lean.stat.S_IWGRP | lean.stat.S_IWOTH))


def _path(directory: str, kind: str, key: bytes) -> str:
    return lean.join(directory, "%s-%016x" % (kind, lean.checksum(key)))


def _full_key(kind: str, key: str, code) -> bytes:
    """The key, with the identity of the code that computes the value: an
    entry made by other code (an edited checkout, another release) is a miss."""
    stamps = []
    for path in code:
        try:
            st = posix.stat(path)
            stamps.append("%s:%d:%d" % (path, st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(path + ":?")
    return ("%s|%s|%s|%s" % (kind, __version__, ",".join(stamps), key)).encode()


def load(kind: str, key: str, code=()):
    """The value stored under (kind, key), or None. `code` names the source
    files whose logic produced the value (see `_full_key`)."""
    directory = cache_dir()
    if directory is None:
        return None
    full = _full_key(kind, key, code)
    try:
        if not trusted(posix.stat(directory)):
            return None
        fd = posix.open(_path(directory, kind, full),
                        posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = posix.fstat(fd)
        if not lean.stat.S_ISREG(st.st_mode) or not trusted(st) or st.st_size > 1 << 20:
            return None
        data = posix.read(fd, st.st_size)
    except OSError:
        return None
    finally:
        posix.close(fd)
    header = _MAGIC + full + b"\0"
    if not data.startswith(header):
        return None
    body = data[len(header):]
    if len(body) < 8 or lean.checksum(body[8:]) != int.from_bytes(body[:8], "little"):
        return None  # torn or corrupt: recompute
    try:
        return marshal.loads(body[8:])
    except (EOFError, ValueError, TypeError):
        return None


def store(kind: str, key: str, value, code=()) -> None:
    """Remember `value` (plain data: tuples, ints, bytes, str). Failing to
    store is never an error: the next launch just does the work again."""
    import os

    directory = cache_dir()
    if directory is None:
        return
    full = _full_key(kind, key, code)
    payload = marshal.dumps(value)
    data = _MAGIC + full + b"\0" + lean.checksum(payload).to_bytes(8, "little") + payload
    path = _path(directory, kind, full)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not trusted(os.stat(directory)):
            return
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return
    prune(directory)


# The cache stays small: a store (a cache miss, which has just spent tens of
# milliseconds) also removes entries beyond MAX_ENTRIES (the oldest first),
# entries older than MAX_AGE (made by other code, for kernels long gone) and
# temporary files a killed writer left. A hit never writes.
MAX_ENTRIES = 256
MAX_AGE = 30 * 24 * 3600
_TMP_AGE = 3600
_KINDS = ("image-", "bpf-")


def _ours(name: str) -> bool:
    """image-, bpf- and 16 hex digits, or one of their temporary files."""
    kind = next((k for k in _KINDS if name.startswith(k)), None)
    if kind is None:
        return False
    stem, _dot, rest = name[len(kind):].partition(".")
    digits = "0123456789abcdef"
    return (len(stem) == 16 and all(c in digits for c in stem)
            and (not rest or (rest.endswith(".tmp") and rest[:-4].isdigit())))


def prune(directory: str, now: float | None = None) -> int:
    """Remove what MAX_ENTRIES, MAX_AGE and _TMP_AGE say; only regular files
    of our names and owner, never through a link. Returns how many."""
    import os

    import time

    now = time.time() if now is None else now
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return 0
    removed = 0
    try:
        entries, doomed = [], []
        with os.scandir(dfd) as it:
            for item in it:
                if not _ours(item.name):
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not lean.stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                    continue
                age = now - st.st_mtime
                if item.name.endswith(".tmp"):
                    if age > _TMP_AGE:
                        doomed.append(item.name)
                elif age > MAX_AGE:
                    doomed.append(item.name)
                else:
                    entries.append((st.st_mtime, item.name))
        entries.sort(reverse=True)  # newest first
        doomed += [name for _mtime, name in entries[MAX_ENTRIES:]]
        for name in doomed:
            try:
                os.unlink(name, dir_fd=dfd)
                removed += 1
            except OSError:
                pass
    finally:
        os.close(dfd)
    return removed


def problem(directory: str | None) -> str | None:
    """Why the cache cannot serve launches from `directory`, or None. Tried
    for real, as a launch would: the directory is created if missing and a
    probe file written and removed. (`spt doctor` asks; a launch that cannot
    use the cache says nothing and does the full work.)"""
    import os

    if directory is None:
        return "turned off (SPT_CACHE=0, or no home directory to hold it)"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.stat(directory)
        if not lean.stat.S_ISDIR(st.st_mode):
            return "not a directory"
        if not trusted(st):
            return ("not owned by uid %d, or writable by others: its entries are ignored"
                    % os.geteuid())
        probe = os.path.join(directory, ".probe.%d" % os.getpid())
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                         | os.O_NOFOLLOW, 0o600))
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
