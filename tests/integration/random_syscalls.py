"""Random system call sequences, run on tmpfs and on the file system under test.

posix_suite.py checks the cases someone thought of; this walks into the ones nobody
did: a seeded random sequence of calls over a few names (files, directories,
symlinks, fifos, names with a trailing slash, `..`, names of 255 and 256 bytes),
some as an unprivileged user. Both runs start in an empty directory, so every
step's result (value or errno, the stat fields posix_suite compares, contents,
xattrs, listings, mtimes that were set explicitly) must agree. A seed replays its
sequence exactly.

Left out on purpose: atime (relatime), SEEK_DATA/SEEK_HOLE (tmpfs knows its holes,
MooseNG reports a file as all data, as POSIX allows) and O_TMPFILE (FUSE in this
libfuse has no tmpfile operation: EOPNOTSUPP).
"""

import ctypes
import errno
import hashlib
import os
import random
import stat

from tests.integration.posix_suite import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    MEMBER,
    _check,
    _libc,
    as_user,
    renameat2,
    stat_of,
)

NAMES = ["a", "b", "l", "d", "d/a", "d/b", "d/e", "d/e/a", "a/", "d/", "d/e/..",
         "n" * 255, "n" * 256]
LINK_TARGETS = ["a", "d", "d/../a", "nowhere", "d/e"]
SET_TIMES = (0, -10**9, 2**33 * 10**9 + 5, 123456789)   # before 1970, after 2038


def _open_close(path: str, flags: int, mode: int) -> None:
    os.close(os.open(path, flags | os.O_NONBLOCK, mode))


def _write(path: str, offset: int, data: bytes, append: bool) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | (os.O_APPEND if append else 0))
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)
    finally:
        os.close(fd)


def _contents(path: str):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            return "a fifo"
        data = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
        return len(data), hashlib.sha256(data).hexdigest()[:16]
    finally:
        os.close(fd)


def _ftruncate(path: str, flags: int, size: int) -> None:
    fd = os.open(path, flags | os.O_NONBLOCK)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _posix_fallocate(path: str, offset: int, length: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.posix_fallocate(fd, offset, length)
    finally:
        os.close(fd)


def _fallocate(path: str, mode: int, offset: int, length: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)   # a fifo must not block the run
    try:
        _check(_libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)))
    finally:
        os.close(fd)


def _mtime(path: str):
    """The mtime if a step set it explicitly, else only that the clock set it."""
    ns = os.stat(path).st_mtime_ns
    return ns if ns in SET_TIMES else "clock"


def _listing(path: str):
    return sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink())
                  for e in os.scandir(path))


def _dir_nlink(path: str):
    st = os.lstat(path)
    return st.st_nlink if stat.S_ISDIR(st.st_mode) else None


def _as_member(rng: random.Random, path: str):
    """One thing an unprivileged user in the owner's group tries."""
    what = rng.randrange(5)
    if what == 0:
        flags = rng.choice([os.O_RDONLY, os.O_WRONLY, os.O_CREAT | os.O_WRONLY])
        return as_user(MEMBER, _open_close, path, flags, 0o640)
    if what == 1:
        return as_user(MEMBER, os.unlink, path)
    if what == 2:
        return as_user(MEMBER, os.mkdir, path)
    if what == 3:
        return as_user(MEMBER, os.chmod, path, 0o777)
    return as_user(MEMBER, os.utime, path, None)


def _step(rng: random.Random, p, n: str, m: str):
    """(what, call) for one random step on names n and m (`p` makes them paths)."""
    choice = rng.randrange(30)
    mode = rng.choice([0o644, 0o600, 0o777, 0o4755, 0o2711, 0o1777, 0o000])
    flags = rng.choice([os.O_CREAT | os.O_WRONLY, os.O_CREAT | os.O_EXCL | os.O_RDWR,
                        os.O_TRUNC | os.O_WRONLY, os.O_RDONLY, os.O_DIRECTORY,
                        os.O_CREAT | os.O_DIRECTORY, os.O_WRONLY | os.O_APPEND])
    size = rng.choice([0, 1, 4095, 70_000, 1 << 20])
    steps = [
        ("open", lambda: _open_close(p(n), flags, mode)),
        ("mkdir", lambda: os.mkdir(p(n), mode)),
        ("rmdir", lambda: os.rmdir(p(n))),
        ("unlink", lambda: os.unlink(p(n))),
        ("rename", lambda: os.rename(p(n), p(m))),
        ("renameat2", lambda: renameat2(p(n), p(m), rng.choice([1, 2]))),
        ("link", lambda: os.link(p(n), p(m))),
        ("symlink", lambda: os.symlink(rng.choice(LINK_TARGETS), p(n))),
        ("stat", lambda: stat_of(p(n), True)),
        ("lstat", lambda: stat_of(p(n), False)),
        ("chmod", lambda: os.chmod(p(n), mode)),
        ("chown", lambda: os.chown(p(n), rng.choice([1000, 0, -1]),
                                   rng.choice([1000, 2000, -1]))),
        ("listdir", lambda: sorted(os.listdir(p(n)))),
        ("scandir", lambda: _listing(p(n))),
        ("readlink", lambda: os.readlink(p(n))),
        ("truncate", lambda: os.truncate(p(n), size)),
        ("ftruncate", lambda: _ftruncate(p(n), rng.choice([os.O_RDONLY, os.O_WRONLY]),
                                         size)),
        ("write", lambda: _write(p(n), rng.choice([0, 5, 4096, 65535, 200_000]),
                                 bytes([rng.randrange(256)]) * rng.choice([1, 100, 70_000]),
                                 rng.random() < 0.3)),
        ("read", lambda: _contents(p(n))),
        ("mkfifo", lambda: os.mkfifo(p(n), 0o640)),
        ("mknod", lambda: os.mknod(p(n), rng.choice([stat.S_IFCHR | 0o600,
                                                     stat.S_IFSOCK | 0o644,
                                                     stat.S_IFREG | 0o640]),
                                   os.makedev(1, 3))),
        ("setxattr", lambda: os.setxattr(p(n), "user." + rng.choice("xy"),
                                         b"v" * rng.choice([1, 10, 300]),
                                         rng.choice([0, os.XATTR_CREATE,
                                                     os.XATTR_REPLACE]))),
        ("getxattr", lambda: os.getxattr(p(n), "user." + rng.choice("xy"))),
        ("listxattr", lambda: sorted(os.listxattr(p(n)))),
        ("removexattr", lambda: os.removexattr(p(n), "user." + rng.choice("xy"))),
        ("posix_fallocate", lambda: _posix_fallocate(p(n), rng.choice([0, 100, 70_000]),
                                                     rng.choice([1, 4096, 1 << 20]))),
        ("fallocate", lambda: _fallocate(p(n), rng.choice(
            [0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE]),
            rng.choice([0, 100, 70_000]), rng.choice([1, 4096, 1 << 20]))),
        ("utime", lambda: os.utime(p(n), ns=(rng.choice(SET_TIMES),
                                            rng.choice(SET_TIMES)),
                                   follow_symlinks=rng.random() < 0.5)),
        ("mtime", lambda: (_mtime(p(n)), _dir_nlink(p(n)))),
        ("as another user", lambda: _as_member(rng, p(n))),
    ]
    return steps[choice]


def run_sequence(root: str, seed: int, length: int = 40) -> list[tuple]:
    """Run the sequence `seed` in the empty directory `root`: each step's
    (index, call, names, outcome). It runs in `root` with relative names, like
    posix_suite's cases, so the unprivileged steps need no rights above it."""
    rng = random.Random(seed)
    out = []
    old_cwd, old_umask = os.getcwd(), os.umask(0o022)
    os.chdir(root)
    try:
        for i in range(length):
            n, m = rng.choice(NAMES), rng.choice(NAMES)
            what, call = _step(rng, lambda name: name, n, m)
            try:
                outcome = ("ok", call())
            except OSError as exc:
                outcome = errno.errorcode.get(exc.errno, f"errno {exc.errno}")
            out.append((i, what, n[:20], m[:20], outcome))
    finally:
        os.chdir(old_cwd)
        os.umask(old_umask)
    return out


def first_difference(reference: list[tuple], got: list[tuple]) -> str | None:
    """The sequence up to the first step whose outcome differs, or None."""
    for a, b in zip(reference, got, strict=True):
        if a != b:
            before = "\n".join(f"  {s}" for s in reference[:a[0]])
            return (f"step {a[0]} ({a[1]} {a[2]!r} {a[3]!r}): tmpfs {a[4]!r}, "
                    f"target {b[4]!r}\nthe steps before it (on tmpfs):\n{before}")
    return None
