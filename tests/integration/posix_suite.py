"""A POSIX conformance suite that compares a directory with a local tmpfs.

Each case is a short script of system calls run in a fresh directory. A `Trace`
records what a user would see of every step: the return value or the errno (by
name), the stat fields that must agree (type, mode bits, nlink, uid, gid, size,
rdev), and for timestamps only relations ("mtime changed") or exact values set by
utimensat, never absolute clock readings. Running the same case on tmpfs and on
the directory under test and comparing the two traces step by step names the
first step where they part.

Never compared: st_ino and st_dev (they differ by design), a directory's st_size
(tmpfs counts 20 bytes an entry, MooseNG counts entries; POSIX leaves it open),
st_blocks, and atime relations (relatime makes them depend on history).

Steps as another user run in a forked child that drops to that uid, gid and groups
(`as_user`); the child runs with the case directory as its working directory, so
the path above it needs no permissions.
"""

import ctypes
import errno
import gc
import os
import pickle
import socket
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

MiB = 1 << 20
CHUNK = 64 * MiB            # MooseNG's chunk size: offsets around it are worth a look
TICK_S = 0.02               # longer than a coarse clock tick, so a change shows in times


# -- identities ------------------------------------------------------------------------------
@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    groups: tuple[int, ...]


OWNER = User(1000, 1000, (1000, 2000))    # owns most test nodes; also in group 2000
MEMBER = User(1001, 1001, (1001, 1000))   # in OWNER's group
OTHER = User(1002, 1002, (1002,))         # neither


def as_user(user: User, fn: Callable, *args):
    """Run fn(*args) in a forked child as `user`; return its result, or raise the
    OSError it raised (same errno), so callers treat it like a local call."""
    read_end, write_end = os.pipe()
    # Dead threads (a gRPC client's, an event loop's executor) still in threading's
    # weak set made a forked child spin in threading._after_fork once: collect first.
    gc.collect()
    pid = os.fork()
    if pid == 0:   # the child: never returns into pytest
        try:
            os.close(read_end)
            try:
                os.setgroups(list(user.groups))
                os.setgid(user.gid)
                os.setuid(user.uid)
                payload = ("ok", fn(*args))
            except OSError as exc:
                payload = ("oserror", exc.errno, exc.strerror)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                payload = ("error", repr(exc))
            with os.fdopen(write_end, "wb") as out:
                out.write(pickle.dumps(payload))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"the child running {fn.__name__} as {user} died silently")
    kind, *rest = pickle.loads(data)
    if kind == "ok":
        return rest[0]
    if kind == "oserror":
        raise OSError(rest[0], rest[1])
    raise RuntimeError(f"{fn.__name__} as {user} failed: {rest[0]}")


# -- calls os does not offer -----------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _check(ret: int) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def renameat2(old: str, new: str, flags: int) -> None:
    _check(_libc.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(),
                           ctypes.c_uint(flags)))


def utimensat(path: str, atime: tuple[int, int], mtime: tuple[int, int],
              follow: bool = True) -> None:
    """utimensat(2) with (seconds, nanoseconds) pairs; nanoseconds may be UTIME_NOW
    or UTIME_OMIT, which os.utime cannot express."""
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    _check(_libc.utimensat(AT_FDCWD, path.encode(), times,
                           0 if follow else AT_SYMLINK_NOFOLLOW))


def utimensat_null(path: str) -> None:
    """utimensat(path, NULL): both times now, which only needs write permission."""
    _check(_libc.utimensat(AT_FDCWD, path.encode(), None, 0))


def lchmod(path: str, mode: int) -> None:
    """fchmodat(AT_SYMLINK_NOFOLLOW), which os.chmod refuses to try on Linux."""
    _check(_libc.fchmodat(AT_FDCWD, path.encode(), mode, AT_SYMLINK_NOFOLLOW))


def fallocate(path: str, mode: int, offset: int, length: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        _check(_libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)))
    finally:
        os.close(fd)


# -- small operations whose results are worth comparing -------------------------------------
TYPE_NAMES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
              stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
              stat.S_IFBLK: "blockdev"}


def stat_of(path: str, follow: bool = False) -> dict:
    st = os.stat(path, follow_symlinks=follow)
    out = {"type": TYPE_NAMES.get(stat.S_IFMT(st.st_mode), oct(stat.S_IFMT(st.st_mode))),
           "mode": oct(stat.S_IMODE(st.st_mode)), "nlink": st.st_nlink,
           "uid": st.st_uid, "gid": st.st_gid}
    if not stat.S_ISDIR(st.st_mode):
        out["size"] = st.st_size
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        out["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return out


def fstat_of(path: str, flags: int = os.O_RDONLY) -> dict:
    fd = os.open(path, flags)
    try:
        return stat_of(f"/proc/self/fd/{fd}", follow=True)
    finally:
        os.close(fd)


def open_close(path: str, flags: int, mode: int = 0o644) -> None:
    os.close(os.open(path, flags, mode))


def write_file(path: str, data: bytes,
               flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> None:
    """A new file gets 0644 (0666 under the suite's umask): chmod for other modes."""
    fd = os.open(path, flags, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def pwrite(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return f.read()


def pread(path: str, offset: int, length: int) -> bytes:
    """Read past the page cache where the file system has one to drop (a FUSE mount
    then asks the file system again; tmpfs keeps its pages: they are the file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def write_through(path: str, flags: int, data: bytes, seek: int | None = None) -> int:
    """Open with `flags`, optionally seek, write; returns how many bytes went in."""
    fd = os.open(path, flags)
    try:
        if seek is not None:
            os.lseek(fd, seek, os.SEEK_SET)
        return os.write(fd, data)
    finally:
        os.close(fd)


def read_through(path: str, flags: int) -> bytes:
    fd = os.open(path, flags)
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def listing(path: str = ".") -> list[str]:
    return sorted(os.listdir(path))


def listing_types(path: str = ".") -> list[tuple[str, str]]:
    """Names and the type readdir reports (d_type), before any stat."""
    def kind(e: os.DirEntry) -> str:
        if e.is_symlink():
            return "symlink"
        return "dir" if e.is_dir(follow_symlinks=False) else \
            "file" if e.is_file(follow_symlinks=False) else "other"
    with os.scandir(path) as it:
        return sorted((e.name, kind(e)) for e in it)


def xattrs(path: str, follow: bool = True) -> list[str]:
    return sorted(os.listxattr(path, follow_symlinks=follow))


def times_ns(path: str, follow: bool = False) -> tuple[int, int]:
    st = os.stat(path, follow_symlinks=follow)
    return st.st_atime_ns, st.st_mtime_ns


def access_matrix(path: str) -> dict[str, bool]:
    return {"R": os.access(path, os.R_OK), "W": os.access(path, os.W_OK),
            "X": os.access(path, os.X_OK)}


def try_open(path: str, flags: int) -> str:
    """'ok' or the errno name, so several attempts fit in one child's answer."""
    try:
        os.close(os.open(path, flags))
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def try_call(fn: Callable, *args) -> object:
    try:
        result = fn(*args)
        return "ok" if result is None else result
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def symlink_chain(n: int, target: str) -> str:
    """l1 -> l2 -> ... -> ln -> target; returns the head."""
    os.symlink(target, f"chain{n}")
    for i in range(n - 1, 0, -1):
        os.symlink(f"chain{i + 1}", f"chain{i}")
    return "chain1"


def bind_and_connect(path: str) -> str:
    """A unix socket bound on the file system, and a client talking to it."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        server.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            conn, _ = server.accept()
            with conn:
                client.sendall(b"ping")
                return conn.recv(4).decode()
    finally:
        server.close()


# -- the trace -------------------------------------------------------------------------------
def _outcome(fn: Callable, args: tuple, user: User | None):
    try:
        value = fn(*args) if user is None else as_user(user, fn, *args)
        return "ok" if value is None else ("ok", value)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, f"errno {exc.errno}")


class Trace:
    """What one run of a case showed, step by step."""

    def __init__(self):
        self.steps: list[tuple[str, object]] = []

    def record(self, step: str, value) -> None:
        self.steps.append((step, value))

    def do(self, step: str, fn: Callable, *args, user: User | None = None):
        self.record(step, _outcome(fn, args, user))

    def stat(self, step: str, path: str, follow: bool = False,
             user: User | None = None) -> None:
        self.do(step, stat_of, path, follow, user=user)

    def read(self, step: str, path: str, user: User | None = None) -> None:
        self.do(step, read_file, path, user=user)

    def ls(self, step: str, path: str = ".") -> None:
        self.do(step, listing, path)

    def clock(self, *paths: str) -> dict[str, tuple[int, int] | None]:
        """mtime and ctime of `paths` now; then a pause, so a change that follows
        is visible even on a clock that ticks coarsely."""
        before = {}
        for p in paths:
            try:
                st = os.stat(p, follow_symlinks=False)
                before[p] = (st.st_mtime_ns, st.st_ctime_ns)
            except OSError:
                before[p] = None
        time.sleep(TICK_S)
        return before

    def changed(self, step: str, before: dict, moved: dict[str, str] | None = None) -> None:
        """Which of mtime and ctime changed since `clock`, for each path (a path in
        `moved` is looked at under its new name)."""
        out = {}
        for p, then in before.items():
            try:
                st = os.stat((moved or {}).get(p, p), follow_symlinks=False)
            except OSError as exc:
                out[p] = errno.errorcode.get(exc.errno)
                continue
            out[p] = {"mtime": "changed" if then[0] != st.st_mtime_ns else "same",
                      "ctime": "changed" if then[1] != st.st_ctime_ns else "same"}
        self.record(step, out)


# -- the registry ----------------------------------------------------------------------------
CASES: dict[str, Callable[[Trace], None]] = {}


def case(family: str, name: str):
    def register(fn: Callable[[Trace], None]):
        key = f"{family}-{name}"
        assert key not in CASES, f"two cases named {key}"
        CASES[key] = fn
        return fn
    return register


def run_case(name: str, root: str) -> list[tuple[str, object]]:
    """Run case `name` in a fresh directory `root/name-XXXX` (mode 0777, so every
    test user may create in it) with umask 022; returns its steps."""
    workdir = tempfile.mkdtemp(prefix=f"{name}-", dir=root)
    os.chmod(workdir, 0o777)
    old_cwd, old_umask = os.getcwd(), os.umask(0o022)
    os.chdir(workdir)
    trace = Trace()
    try:
        CASES[name](trace)
    finally:
        os.chdir(old_cwd)
        os.umask(old_umask)
    return trace.steps


def differences(reference: list, got: list, ref_name: str = "tmpfs",
                got_name: str = "target") -> list[str]:
    """Each step where the two runs differ, named, with both results."""
    out = []
    for i, ((step_a, a), (step_b, b)) in enumerate(zip(reference, got, strict=False)):
        assert step_a == step_b, f"the runs took different paths at step {i}"
        if a != b:
            out.append(f"step {i} {step_a!r}: {ref_name}={a!r} {got_name}={b!r}")
    if len(reference) != len(got):
        out.append(f"{ref_name} ran {len(reference)} steps, {got_name} {len(got)}")
    return out


# =============================================================================================
# open / creat
# =============================================================================================


@case("open", "creat_mode_and_umask")
def _open_creat(t: Trace):
    t.do("open O_CREAT|O_WRONLY 0666", open_close, "f", os.O_CREAT | os.O_WRONLY, 0o666)
    t.stat("new file gets 0666 & ~umask", "f")
    t.do("open O_CREAT again, mode 0777", open_close, "f", os.O_CREAT | os.O_WRONLY, 0o777)
    t.stat("an existing file keeps its mode", "f")
    t.do("open O_CREAT 06755", open_close, "suid", os.O_CREAT | os.O_WRONLY, 0o6755)
    t.stat("root keeps set-id bits on create", "suid")
    t.do("open O_CREAT mode 0", open_close, "zero", os.O_CREAT | os.O_RDWR, 0)
    t.stat("mode 0 file", "zero")
    t.do("root opens a mode-0 file for writing", open_close, "zero", os.O_RDWR)
    t.do("a user may not", open_close, "zero", os.O_RDONLY, user=OWNER)


@case("open", "creat_updates_parent")
def _open_creat_parent(t: Trace):
    os.mkdir("d")
    before = t.clock("d")
    t.do("open O_CREAT d/f", open_close, "d/f", os.O_CREAT | os.O_WRONLY)
    t.changed("parent mtime and ctime change", before)
    before = t.clock("d", "d/f")
    t.do("open existing O_CREAT without O_TRUNC", open_close, "d/f", os.O_CREAT | os.O_WRONLY)
    t.changed("nothing changes", before)


@case("open", "excl")
def _open_excl(t: Trace):
    write_file("f", b"data")
    os.mkdir("d")
    os.symlink("nowhere", "dangling")
    t.do("O_CREAT|O_EXCL on a file", open_close, "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    t.do("O_CREAT|O_EXCL on a dir", open_close, "d", os.O_CREAT | os.O_EXCL | os.O_RDONLY)
    t.do("O_CREAT|O_EXCL on a dangling symlink", open_close, "dangling",
         os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    t.do("O_CREAT|O_EXCL new", open_close, "g", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    t.do("O_EXCL without O_CREAT is ignored", open_close, "f", os.O_EXCL | os.O_RDONLY)
    t.read("the file kept its data", "f")
    t.ls("names")


@case("open", "creat_through_dangling_symlink")
def _open_dangling(t: Trace):
    os.symlink("target", "link")
    t.do("O_CREAT through a dangling symlink", write_file, "link", b"via link")
    t.stat("the target was created", "target")
    t.read("with the data", "target")
    t.stat("the link is still a link", "link")


@case("open", "trunc")
def _open_trunc(t: Trace):
    write_file("f", b"x" * 10000)
    before = t.clock("f")
    t.do("O_TRUNC|O_WRONLY", open_close, "f", os.O_TRUNC | os.O_WRONLY)
    t.stat("size 0", "f")
    t.changed("mtime and ctime change", before)
    t.read("no data left", "f")
    write_file("g", b"y" * 100)
    t.do("O_TRUNC|O_RDONLY truncates on Linux", open_close, "g", os.O_TRUNC | os.O_RDONLY)
    t.stat("g size", "g")
    os.chown("f", OWNER.uid, OWNER.gid)
    os.chmod("f", 0o444)
    write_file("f", b"zz", os.O_WRONLY)
    t.do("O_TRUNC without write permission", open_close, "f", os.O_TRUNC | os.O_RDONLY,
         user=OWNER)
    t.read("still there", "f")


@case("open", "append")
def _open_append(t: Trace):
    write_file("f", b"abc")
    t.do("O_APPEND write after lseek 0", write_through, "f", os.O_WRONLY | os.O_APPEND,
         b"def", 0)
    t.read("appended at the end", "f")
    t.do("O_APPEND|O_RDWR write", write_through, "f", os.O_RDWR | os.O_APPEND, b"ghi")
    t.read("appended again", "f")
    t.stat("size", "f")


@case("open", "directory_and_nofollow")
def _open_directory(t: Trace):
    write_file("f", b"x")
    os.mkdir("d")
    os.symlink("f", "lf")
    os.symlink("d", "ld")
    t.do("O_DIRECTORY on a file", open_close, "f", os.O_DIRECTORY | os.O_RDONLY)
    t.do("O_DIRECTORY on a dir", open_close, "d", os.O_DIRECTORY | os.O_RDONLY)
    t.do("O_DIRECTORY through a symlink to a dir", open_close, "ld",
         os.O_DIRECTORY | os.O_RDONLY)
    t.do("O_DIRECTORY|O_CREAT on a new name", open_close, "new",
         os.O_DIRECTORY | os.O_CREAT | os.O_RDONLY)
    t.do("O_NOFOLLOW on a symlink", open_close, "lf", os.O_NOFOLLOW | os.O_RDONLY)
    t.do("O_NOFOLLOW on a file", open_close, "f", os.O_NOFOLLOW | os.O_RDONLY)
    t.do("O_NOFOLLOW|O_PATH on a symlink", open_close, "lf", os.O_NOFOLLOW | os.O_PATH)
    t.do("trailing slash on a file", open_close, "f/", os.O_RDONLY)
    t.do("O_CREAT on a trailing slash", open_close, "g/", os.O_CREAT | os.O_WRONLY)
    t.ls("names")


@case("open", "access_mode_errors")
def _open_modes(t: Trace):
    write_file("f", b"data")
    os.mkdir("d")
    t.do("write on an O_RDONLY fd", write_through, "f", os.O_RDONLY, b"x")
    t.do("read on an O_WRONLY fd", read_through, "f", os.O_WRONLY)
    t.do("a dir O_WRONLY", open_close, "d", os.O_WRONLY)
    t.do("a dir O_RDWR", open_close, "d", os.O_RDWR)
    t.do("O_CREAT on a dir", open_close, "d", os.O_CREAT | os.O_WRONLY)
    t.do("read a dir fd", read_through, "d", os.O_RDONLY)
    t.read("unchanged", "f")


@case("open", "missing_paths")
def _open_missing(t: Trace):
    write_file("f", b"x")
    t.do("no such file", open_close, "nope", os.O_RDONLY)
    t.do("O_CREAT in a missing dir", open_close, "nodir/f", os.O_CREAT | os.O_WRONLY)
    t.do("a file as a dir", open_close, "f/x", os.O_CREAT | os.O_WRONLY)
    t.do("255-byte name", open_close, "n" * 255, os.O_CREAT | os.O_WRONLY)
    t.do("256-byte name", open_close, "n" * 256, os.O_CREAT | os.O_WRONLY)
    t.do("256-byte name without O_CREAT", open_close, "n" * 256, os.O_RDONLY)
    t.ls("names")


@case("open", "creat_in_setgid_dir")
def _open_setgid_dir(t: Trace):
    os.mkdir("d")
    os.chown("d", OWNER.uid, 2000)
    os.chmod("d", 0o2777)
    t.do("member of the group creates 02775", open_close, "d/mine",
         os.O_CREAT | os.O_WRONLY, 0o2775, user=OWNER)
    t.stat("takes the dir's group and keeps S_ISGID", "d/mine")
    t.do("outsider creates 02775", open_close, "d/theirs", os.O_CREAT | os.O_WRONLY,
         0o2775, user=OTHER)
    t.stat("takes the dir's group, loses S_ISGID", "d/theirs")
    t.do("outsider mkdir", os.mkdir, "d/sub", 0o755, user=OTHER)
    t.stat("a subdir inherits S_ISGID and the group", "d/sub")


# =============================================================================================
# read / write / readdir
# =============================================================================================
@case("io", "holes_and_offsets")
def _io_holes(t: Trace):
    write_file("f", b"")
    t.do("write past the end", pwrite, "f", 1_000_000, b"tail")
    t.stat("size", "f")
    t.do("the hole reads zeros", pread, "f", 999_990, 14)
    t.do("read past EOF", pread, "f", 2_000_000, 10)
    t.do("write across 64 KiB blocks", pwrite, "f", 65_530, b"0123456789abc")
    t.do("read it back", pread, "f", 65_520, 30)


@case("io", "chunk_boundary")
def _io_chunk_boundary(t: Trace):
    write_file("f", b"")
    data = bytes(range(256)) * 64
    t.do("write across the 64 MiB boundary", pwrite, "f", CHUNK - 8000, data)
    t.do("read it back", pread, "f", CHUNK - 8000, len(data))
    t.stat("size", "f")
    t.do("first byte of chunk 0 is a hole", pread, "f", 0, 4)


@case("io", "overwrite_and_reread")
def _io_overwrite(t: Trace):
    write_file("f", b"a" * 300_000)
    t.do("overwrite the middle", pwrite, "f", 100_000, b"b" * 50_000)
    t.do("bytes around the edges", pread, "f", 99_998, 4)
    t.do("bytes at the end of the patch", pread, "f", 149_998, 4)
    t.stat("size unchanged", "f")
    t.do("fstat sees the same", fstat_of, "f")


@case("io", "write_times")
def _io_times(t: Trace):
    write_file("f", b"x")
    before = t.clock("f", ".")
    t.do("write", pwrite, "f", 0, b"y")
    t.changed("mtime and ctime of the file change, the dir's do not", before)
    before = t.clock("f")
    t.do("read", read_file, "f")
    t.changed("a read changes neither", before)


@case("io", "mmap")
def _io_mmap(t: Trace):
    import mmap
    write_file("f", b"\0" * 8192)

    def through_mmap():
        with open("f", "r+b") as f, mmap.mmap(f.fileno(), 8192) as m:
            m[100:105] = b"hello"
            m.flush()
    t.do("write through a shared mapping", through_mmap)
    t.do("read(2) sees it", pread, "f", 98, 9)


@case("io", "readdir")
def _io_readdir(t: Trace):
    os.mkdir("d")
    for i in range(300):
        write_file(f"d/file{i:03}", b"")
    os.mkdir("d/sub")
    os.symlink("file000", "d/link")
    os.mkfifo("d/fifo")
    t.do("listdir sees every name", listing, "d")
    t.do("d_type of a few", lambda: [x for x in listing_types("d") if not
                                    x[0].startswith("file") or x[0] == "file000"])
    for i in range(0, 300, 2):
        os.unlink(f"d/file{i:03}")
    t.do("after removing half", listing, "d")
    t.stat("nlink of a dir with a subdir", "d")


@case("io", "unlink_while_listing")
def _io_unlink_while_listing(t: Trace):
    os.mkdir("d")
    for i in range(200):
        write_file(f"d/f{i:03}", b"")

    def delete_while_reading():
        """rm -r's pattern: unlink each entry as readdir returns it."""
        seen = []
        with os.scandir("d") as it:
            for entry in it:
                seen.append(entry.name)
                os.unlink(os.path.join("d", entry.name))
        return len(seen), len(set(seen)), sorted(os.listdir("d"))
    t.do("every entry seen once, none left", delete_while_reading)


# =============================================================================================
# chmod
# =============================================================================================
@case("chmod", "root")
def _chmod_root(t: Trace):
    write_file("f", b"x")
    before = t.clock("f")
    t.do("chmod 07777", os.chmod, "f", 0o7777)
    t.stat("all bits", "f")
    t.changed("ctime changes, mtime does not", before)
    t.do("chmod 0", os.chmod, "f", 0)
    t.stat("no bits", "f")
    os.mkdir("d")
    t.do("chmod a dir 01777", os.chmod, "d", 0o1777)
    t.stat("sticky dir", "d")
    t.do("chmod a missing file", os.chmod, "nope", 0o644)


@case("chmod", "symlinks")
def _chmod_symlinks(t: Trace):
    write_file("f", b"x")
    os.symlink("f", "l")
    t.do("chmod through a symlink", os.chmod, "l", 0o600)
    t.stat("the target changed", "f")
    t.stat("the link did not", "l")
    t.do("chmod the link itself (fchmodat AT_SYMLINK_NOFOLLOW)", lchmod, "l", 0o600)
    t.do("fchmod", lambda: _with_fd("f", os.O_RDONLY, lambda fd: os.fchmod(fd, 0o640)))
    t.stat("fchmod applied", "f")


def _with_fd(path: str, flags: int, fn: Callable[[int], object]):
    fd = os.open(path, flags)
    try:
        return fn(fd)
    finally:
        os.close(fd)


@case("chmod", "unprivileged")
def _chmod_unprivileged(t: Trace):
    write_file("f", b"x")
    os.chown("f", OWNER.uid, OWNER.gid)
    t.do("the owner chmods", os.chmod, "f", 0o600, user=OWNER)
    t.stat("applied", "f")
    t.do("someone else may not", os.chmod, "f", 0o666, user=MEMBER)
    t.stat("unchanged", "f")
    write_file("g", b"x")
    os.chown("g", OWNER.uid, 0)
    t.do("owner sets S_ISGID, not in the file's group", os.chmod, "g", 0o2755, user=OWNER)
    t.stat("S_ISGID silently dropped", "g")
    os.chown("g", OWNER.uid, 2000)
    t.do("owner sets S_ISGID, in the file's group", os.chmod, "g", 0o2755, user=OWNER)
    t.stat("S_ISGID kept", "g")
    t.do("owner sets S_ISUID", os.chmod, "g", 0o4755, user=OWNER)
    t.stat("S_ISUID kept", "g")
    os.mkdir("d")
    os.chown("d", OWNER.uid, 0)
    t.do("owner sets sticky and S_ISGID on a dir, not in its group", os.chmod, "d", 0o3777,
         user=OWNER)
    t.stat("a dir drops S_ISGID too", "d")


# =============================================================================================
# chown
# =============================================================================================
@case("chown", "root")
def _chown_root(t: Trace):
    write_file("f", b"x")
    before = t.clock("f")
    t.do("chown 1000:1000", os.chown, "f", 1000, 1000)
    t.stat("owner and group", "f")
    t.changed("ctime changes, mtime does not", before)
    t.do("chown -1:2000", os.chown, "f", -1, 2000)
    t.stat("only the group", "f")
    t.do("chown a missing file", os.chown, "nope", 1, 1)


@case("chown", "root_clears_setid")
def _chown_root_setid(t: Trace):
    for name, mode in (("sx", 0o6755), ("s_nox", 0o6745), ("u", 0o4700)):
        write_file(name, b"x")
        os.chmod(name, mode)
        t.do(f"root chowns {oct(mode)}", os.chown, name, 1000, 1000)
        t.stat(f"{oct(mode)} after chown", name)
    os.mkdir("d")
    os.chmod("d", 0o7755)
    t.do("root chowns a 07755 dir", os.chown, "d", 1000, 1000)
    t.stat("a dir keeps its bits", "d")
    write_file("same", b"x")
    os.chmod("same", 0o6755)
    t.do("chown to the same owner", os.chown, "same", 0, 0)
    t.stat("still clears", "same")
    write_file("noop", b"x")
    os.chmod("noop", 0o6755)
    t.do("chown -1:-1", os.chown, "noop", -1, -1)
    t.stat("chown -1:-1 and the bits", "noop")


@case("chown", "unprivileged")
def _chown_unprivileged(t: Trace):
    write_file("f", b"x")
    os.chown("f", OWNER.uid, OWNER.gid)
    os.chmod("f", 0o6755)
    t.do("owner gives the file away", os.chown, "f", MEMBER.uid, -1, user=OWNER)
    t.do("owner 'changes' uid to itself", os.chown, "f", OWNER.uid, -1, user=OWNER)
    t.stat("bits after a no-op uid change", "f")
    os.chmod("f", 0o6755)
    t.do("owner changes group to one of its groups", os.chown, "f", -1, 2000, user=OWNER)
    t.stat("group changed, set-id bits cleared", "f")
    t.do("owner changes group to a foreign group", os.chown, "f", -1, 1002, user=OWNER)
    t.do("a member of the group may not chgrp", os.chown, "f", -1, 1000, user=MEMBER)
    t.do("chown -1:-1 by someone else", os.chown, "f", -1, -1, user=OTHER)
    t.stat("final", "f")


@case("chown", "symlink")
def _chown_symlink(t: Trace):
    write_file("f", b"x")
    os.symlink("f", "l")
    t.do("lchown", os.lchown, "l", 1000, 1000)
    t.stat("the link changed", "l")
    t.stat("the target did not", "f")
    t.do("chown through the link", os.chown, "l", 1001, 1001)
    t.stat("now the target changed", "f")


# =============================================================================================
# link
# =============================================================================================
@case("link", "basics")
def _link_basics(t: Trace):
    write_file("f", b"shared")
    os.mkdir("d")
    before = t.clock("f", ".")
    t.do("link f g", os.link, "f", "g")
    t.changed("the file's ctime and the dir's times change", before)
    t.stat("f has 2 links", "f")
    t.stat("g is the same file", "g")
    t.do("write through g", pwrite, "g", 0, b"SH")
    t.read("f sees it", "f")
    t.do("link onto an existing name", os.link, "f", "g")
    t.do("link a missing file", os.link, "nope", "h")
    t.do("link into a missing dir", os.link, "f", "nodir/h")
    t.do("link a directory", os.link, "d", "d2")
    t.do("link into a subdir", os.link, "f", "d/h")
    t.stat("3 links", "f")
    t.do("unlink the original", os.unlink, "f")
    t.read("the others keep the data", "d/h")
    t.stat("2 links", "g")


@case("link", "symlink_and_special")
def _link_symlink(t: Trace):
    write_file("f", b"x")
    os.symlink("f", "l")
    t.do("link a symlink (not followed)",
         lambda: os.link("l", "l2", follow_symlinks=False))
    t.stat("the new name is a symlink", "l2")
    t.do("readlink", os.readlink, "l2")
    t.stat("the symlink has 2 links", "l")
    t.stat("the target still has 1", "f")
    os.mkfifo("p")
    t.do("link a fifo", os.link, "p", "p2")
    t.stat("fifo links", "p2")


@case("link", "protected_hardlinks")
def _link_protected(t: Trace):
    write_file("secret", b"x")
    os.chmod("secret", 0o600)
    write_file("public", b"x")
    os.chmod("public", 0o666)
    t.do("a user links a root file it cannot write", os.link, "secret", "mine", user=OWNER)
    t.do("a user links a root file it can read and write", os.link, "public", "ours",
         user=OWNER)
    t.ls("names")


# =============================================================================================
# mkdir
# =============================================================================================
@case("mkdir", "errors")
def _mkdir_errors(t: Trace):
    write_file("f", b"x")
    os.mkdir("d")
    os.symlink("nowhere", "dangling")
    t.do("an existing dir", os.mkdir, "d")
    t.do("an existing file", os.mkdir, "f")
    t.do("a dangling symlink", os.mkdir, "dangling")
    t.do("in a missing dir", os.mkdir, "no/d")
    t.do("under a file", os.mkdir, "f/d")
    t.do("255 bytes", os.mkdir, "n" * 255)
    t.do("256 bytes", os.mkdir, "m" * 256)
    t.do(".", os.mkdir, ".")
    t.do("..", os.mkdir, "d/..")
    t.do("trailing slash", os.mkdir, "e/")
    t.ls("names")


@case("mkdir", "modes_and_links")
def _mkdir_modes(t: Trace):
    before = t.clock(".")
    t.do("mkdir 0777", os.mkdir, "a", 0o777)
    t.changed("parent times change", before)
    t.stat("0777 & ~022", "a")
    t.do("mkdir 07777", os.mkdir, "b", 0o7777)
    t.stat("sticky kept, set-id dropped", "b")
    t.do("mkdir 0", os.mkdir, "c", 0)
    t.stat("mode 0 dir", "c")
    t.stat("parent has 2 + 3 links", ".")
    t.do("mkdir in a 0 dir as root", os.mkdir, "c/x")
    os.chmod("a", 0o555)
    t.do("a user mkdir in a read-only dir", os.mkdir, "a/x", user=OWNER)


# =============================================================================================
# mkfifo / mknod
# =============================================================================================
@case("mknod", "fifo")
def _mknod_fifo(t: Trace):
    t.do("mkfifo 0666", os.mkfifo, "p", 0o666)
    t.stat("a fifo", "p")
    t.do("mkfifo again", os.mkfifo, "p")
    t.do("writer without a reader (O_NONBLOCK)", open_close, "p", os.O_WRONLY | os.O_NONBLOCK)

    def round_trip():
        r = os.open("p", os.O_RDONLY | os.O_NONBLOCK)
        try:
            w = os.open("p", os.O_WRONLY)
            os.write(w, b"through the pipe")
            os.close(w)
            return os.read(r, 100)
        finally:
            os.close(r)
    t.do("data through the fifo", round_trip)
    t.stat("size stays 0", "p")


@case("mknod", "devices_as_root")
def _mknod_devices(t: Trace):
    t.do("char device 1:3", os.mknod, "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    t.stat("a char device", "null")
    t.do("char device 1:5", os.mknod, "zero", 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    t.do("block device 7:200", os.mknod, "blk", 0o600 | stat.S_IFBLK, os.makedev(7, 200))
    t.stat("a block device", "blk")
    t.do("write to the null device", write_through, "null", os.O_WRONLY, b"gone")
    t.do("read the zero device", read_through, "zero", os.O_RDONLY)
    t.do("mknod again", os.mknod, "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))


@case("mknod", "kinds")
def _mknod_kinds(t: Trace):
    t.do("S_IFSOCK", os.mknod, "sock", 0o644 | stat.S_IFSOCK)
    t.stat("a socket", "sock")
    t.do("S_IFREG", os.mknod, "reg", 0o600 | stat.S_IFREG)
    t.stat("a file", "reg")
    t.do("type 0 makes a file", os.mknod, "zero", 0o600)
    t.stat("type 0", "zero")
    t.do("S_IFDIR", os.mknod, "dir", 0o755 | stat.S_IFDIR)
    t.do("a user makes a char device", os.mknod, "udev", 0o666 | stat.S_IFCHR,
         os.makedev(1, 3), user=OWNER)
    t.do("a user makes a fifo", os.mknod, "ufifo", 0o666 | stat.S_IFIFO, user=OWNER)
    t.stat("owned by the user", "ufifo")
    t.do("a unix socket bound here", bind_and_connect, "live.sock")
    t.stat("the bound socket", "live.sock")


# =============================================================================================
# rename
# =============================================================================================
@case("rename", "file_over_file")
def _rename_file_file(t: Trace):
    write_file("a", b"new")
    write_file("b", b"old")
    os.link("b", "b_kept")
    before = t.clock("a", "b_kept", ".")
    t.do("rename a b", os.rename, "a", "b")
    t.read("b has a's data", "b")
    t.stat("a is gone", "a")
    t.stat("the replaced file lost a link", "b_kept")
    t.changed("moved file ctime, replaced file ctime, dir times", before, {"a": "b"})


@case("rename", "dirs")
def _rename_dirs(t: Trace):
    os.makedirs("src/inner")
    os.mkdir("empty")
    os.makedirs("full/x")
    write_file("file", b"f")
    t.do("dir over an empty dir", os.rename, "src", "empty")
    t.ls("names after")
    t.stat("moved dir keeps its links", "empty")
    t.do("dir over a non-empty dir", os.rename, "empty", "full")
    t.do("file over a dir", os.rename, "file", "full")
    t.do("dir over a file", os.rename, "full", "file")
    t.do("dir into its own subdir", os.rename, "full", "full/x/y")
    t.do("dir onto its own subdir", os.rename, "full", "full/x")
    t.do("dir into itself", os.rename, "full", "full/y")
    t.do("a missing source", os.rename, "nope", "x")
    t.do("into a missing dir", os.rename, "file", "nodir/x")
    t.do("rename .", os.rename, ".", "dot")
    t.do("rename onto ..", os.rename, "full/x", "full/..")
    t.ls("names at the end")


@case("rename", "across_dirs")
def _rename_across(t: Trace):
    os.makedirs("a/moving/child")
    os.mkdir("b")
    write_file("a/f", b"data")
    before = t.clock("a", "b", "a/moving", "a/f")
    t.do("move a dir to another parent", os.rename, "a/moving", "b/moved")
    t.do("move a file to another parent", os.rename, "a/f", "b/f")
    t.changed("both parents' and the moved nodes' times", before,
              {"a/moving": "b/moved", "a/f": "b/f"})
    t.stat("old parent loses a link", "a")
    t.stat("new parent gains one", "b")
    t.do("'..' of the moved dir is the new parent",
         lambda: os.path.samestat(os.stat("b/moved/.."), os.stat("b")))
    t.read("the file moved", "b/f")


@case("rename", "same_file_and_self")
def _rename_same(t: Trace):
    write_file("a", b"x")
    os.link("a", "b")
    t.do("rename between two links of one file", os.rename, "a", "b")
    t.ls("both names stay")
    t.stat("2 links", "a")
    t.do("rename to itself", os.rename, "a", "a")
    t.ls("unchanged")


@case("rename", "noreplace_and_exchange")
def _rename_flags(t: Trace):
    write_file("f", b"file")
    write_file("g", b"other")
    os.makedirs("d/sub")
    t.do("NOREPLACE onto an existing name", renameat2, "f", "g", RENAME_NOREPLACE)
    t.do("NOREPLACE onto a new name", renameat2, "f", "h", RENAME_NOREPLACE)
    t.ls("names")
    t.do("EXCHANGE a file and a dir", renameat2, "h", "d", RENAME_EXCHANGE)
    t.stat("h is now the dir", "h")
    t.stat("d is now the file", "d")
    t.read("with the file's data", "d")
    t.stat("h/sub is reachable", "h/sub")
    t.do("EXCHANGE with a missing target", renameat2, "g", "missing", RENAME_EXCHANGE)
    t.do("both flags", renameat2, "g", "d", RENAME_EXCHANGE | RENAME_NOREPLACE)
    t.do("EXCHANGE a dir with its own child", renameat2, "h", "h/sub", RENAME_EXCHANGE)
    t.do("an unknown flag", renameat2, "g", "d", 8)
    t.ls("names at the end")


@case("rename", "open_file_survives")
def _rename_open(t: Trace):
    write_file("old", b"old contents")
    write_file("new", b"replacement")

    def read_replaced():
        fd = os.open("old", os.O_RDONLY)
        try:
            os.rename("new", "old")
            return os.pread(fd, 100, 0), os.fstat(fd).st_nlink
        finally:
            os.close(fd)
    t.do("an open file replaced by rename still reads its data", read_replaced)
    t.read("the name has the new data", "old")


@case("rename", "symlinks")
def _rename_symlink(t: Trace):
    write_file("f", b"x")
    os.symlink("f", "l")
    os.mkdir("d")
    t.do("rename a symlink", os.rename, "l", "d/l")
    t.stat("still a symlink", "d/l")
    t.do("with its target text", os.readlink, "d/l")
    os.symlink("d", "ld")
    t.do("rename a symlink to a dir over a file", os.rename, "ld", "f")
    t.stat("f is the link now", "f")


@case("rename", "sticky_and_permissions")
def _rename_sticky(t: Trace):
    os.mkdir("sticky")
    os.chmod("sticky", 0o1777)
    write_file("sticky/owned", b"x")
    os.chown("sticky/owned", OWNER.uid, OWNER.gid)
    t.do("another user renames it away", os.rename, "sticky/owned", "sticky/stolen",
         user=OTHER)
    t.do("the owner may", os.rename, "sticky/owned", "sticky/moved", user=OWNER)
    os.mkdir("ro", 0o555)
    write_file("ro/f", b"x")
    t.do("a user renames in a read-only dir", os.rename, "ro/f", "ro/g", user=OWNER)
    os.makedirs("w/sub")
    os.chmod("w", 0o777)
    os.chmod("w/sub", 0o555)
    os.mkdir("w2", 0o777)
    t.do("a user moves a dir it cannot write to another parent", os.rename, "w/sub",
         "w2/sub", user=OWNER)
    t.do("root may", os.rename, "w/sub", "w2/sub")
    t.ls("names")


# =============================================================================================
# rmdir
# =============================================================================================
@case("rmdir", "errors_and_success")
def _rmdir(t: Trace):
    os.makedirs("full/x")
    os.mkdir("empty")
    write_file("f", b"x")
    os.symlink("empty", "ld")
    t.do("not empty", os.rmdir, "full")
    t.do("a file", os.rmdir, "f")
    t.do("a symlink to a dir", os.rmdir, "ld")
    t.do("missing", os.rmdir, "nope")
    t.do(".", os.rmdir, ".")
    t.do("empty/.", os.rmdir, "empty/.")
    t.do("full/x/..", os.rmdir, "full/x/..")
    before = t.clock(".")
    t.stat("links before", ".")
    t.do("an empty dir", os.rmdir, "empty")
    t.stat("links after", ".")
    t.changed("parent times change", before)
    t.ls("names")


@case("rmdir", "open_and_sticky")
def _rmdir_open(t: Trace):
    os.mkdir("d")

    def after_rmdir():
        fd = os.open("d", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.rmdir("d")
            return {"fstat nlink": try_call(lambda: os.fstat(fd).st_nlink),
                    "list": try_call(os.listdir, fd),
                    "create in it": try_call(open_close, "d/x", os.O_CREAT | os.O_WRONLY)}
        finally:
            os.close(fd)
    t.do("a removed but open dir: no links, no entries, takes no new ones", after_rmdir)
    os.mkdir("s")
    os.chmod("s", 0o1777)
    os.mkdir("s/owned")
    os.chown("s/owned", OWNER.uid, OWNER.gid)
    t.do("another user removes it from a sticky dir", os.rmdir, "s/owned", user=OTHER)
    t.do("the owner may", os.rmdir, "s/owned", user=OWNER)


# =============================================================================================
# symlink / readlink
# =============================================================================================
@case("symlink", "basics")
def _symlink_basics(t: Trace):
    write_file("f", b"target data")
    before = t.clock(".")
    t.do("symlink", os.symlink, "f", "l")
    t.changed("parent times change", before)
    t.stat("lstat: a symlink 0777, size = target length", "l")
    t.stat("stat follows", "l", True)
    t.do("readlink", os.readlink, "l")
    t.read("read through it", "l")
    t.do("onto an existing name", os.symlink, "x", "l")
    t.do("readlink a file", os.readlink, "f")
    t.do("readlink a missing name", os.readlink, "nope")
    t.do("symlink to a dir with a trailing slash", os.symlink, "d/", "ld")
    t.do("readlink keeps the slash", os.readlink, "ld")
    t.do("absolute target", os.symlink, "/proc/self/nonexistent/x", "abs")
    t.do("readlink absolute", os.readlink, "abs")


@case("symlink", "dangling_and_loops")
def _symlink_loops(t: Trace):
    os.symlink("nowhere", "dangling")
    os.symlink("b", "a")
    os.symlink("a", "b")
    os.symlink("self", "self")
    t.stat("lstat a dangling link", "dangling")
    t.stat("stat a dangling link", "dangling", True)
    t.do("open a dangling link", open_close, "dangling", os.O_RDONLY)
    t.stat("stat a loop", "a", True)
    t.do("open a loop", open_close, "a", os.O_RDONLY)
    t.do("open a self loop O_CREAT", open_close, "self", os.O_CREAT | os.O_WRONLY)
    t.do("O_NOFOLLOW on a loop", open_close, "a", os.O_RDONLY | os.O_NOFOLLOW)
    t.do("a loop as a path component", os.stat, "a/x")
    write_file("end", b"end of chain")
    head = symlink_chain(40, "end")
    t.read("a chain of 40 links resolves", head)
    os.symlink(head, "chain0")
    t.read("41 links is too many", "chain0")


@case("symlink", "target_lengths")
def _symlink_lengths(t: Trace):
    t.do("4095-byte target", os.symlink, "t" * 4095, "long")
    t.stat("its size", "long")
    t.do("readlink length", lambda: len(os.readlink("long")))
    t.do("4096-byte target", os.symlink, "t" * 4096, "toolong")
    t.do("empty target", os.symlink, "", "empty")
    t.do("odd bytes in a target", os.symlink, "sp ace/\u00e9\n", "odd")
    t.do("readlink odd", os.readlink, "odd")


# =============================================================================================
# truncate / ftruncate
# =============================================================================================
@case("truncate", "grow_and_shrink")
def _truncate(t: Trace):
    write_file("f", b"0123456789")
    before = t.clock("f")
    t.do("grow to 100", os.truncate, "f", 100)
    t.changed("mtime and ctime change", before)
    t.stat("size 100", "f")
    t.read("zeros after the data", "f")
    t.do("shrink to 4", os.truncate, "f", 4)
    t.read("4 bytes", "f")
    t.do("grow to 10 again", os.truncate, "f", 10)
    t.read("the cut bytes read as zeros", "f")
    before = t.clock("f")
    t.do("truncate to the same size", os.truncate, "f", 10)
    t.changed("same size by path", before)
    before = t.clock("f")
    t.do("ftruncate to the same size",
         lambda: _with_fd("f", os.O_WRONLY, lambda fd: os.ftruncate(fd, 10)))
    t.changed("same size through an fd", before)


@case("truncate", "errors")
def _truncate_errors(t: Trace):
    write_file("f", b"data")
    os.mkdir("d")
    os.mkfifo("p")
    t.do("a dir", os.truncate, "d", 0)
    t.do("negative", os.truncate, "f", -1)
    t.do("a fifo", os.truncate, "p", 0)
    t.do("missing", os.truncate, "nope", 0)
    t.do("ftruncate an O_RDONLY fd",
         lambda: _with_fd("f", os.O_RDONLY, lambda fd: os.ftruncate(fd, 0)))
    os.chown("f", OWNER.uid, OWNER.gid)
    os.chmod("f", 0o444)
    t.do("without write permission", os.truncate, "f", 1, user=OWNER)
    t.do("without write permission, as another user", os.truncate, "f", 1, user=OTHER)
    t.stat("unchanged", "f")


@case("truncate", "chunk_boundaries")
def _truncate_chunks(t: Trace):
    write_file("f", b"")
    t.do("grow to 130 MiB", os.truncate, "f", 130 * MiB)
    t.do("write a byte at 70 MiB", pwrite, "f", 70 * MiB, b"Z")
    t.do("it reads back", pread, "f", 70 * MiB - 1, 3)
    t.do("shrink to 65 MiB", os.truncate, "f", 65 * MiB)
    t.do("grow to 80 MiB", os.truncate, "f", 80 * MiB)
    t.do("the byte is gone", pread, "f", 70 * MiB - 1, 3)
    t.do("the last byte reads zero", pread, "f", 80 * MiB - 1, 10)
    t.stat("size", "f")


@case("truncate", "clears_setid")
def _truncate_setid(t: Trace):
    write_file("f", b"data")
    os.chown("f", OWNER.uid, OWNER.gid)
    os.chmod("f", 0o6775)
    t.do("the owner truncates", os.truncate, "f", 2, user=OWNER)
    t.stat("set-id bits cleared by a non-root truncate", "f")
    os.chmod("f", 0o6775)
    t.do("root truncates", os.truncate, "f", 1)
    t.stat("root keeps them", "f")
    os.chmod("f", 0o6775)
    t.do("a group member writes", pwrite, "f", 0, b"w", user=MEMBER)
    t.stat("a non-root write clears them", "f")


# =============================================================================================
# unlink
# =============================================================================================
@case("unlink", "basics")
def _unlink(t: Trace):
    write_file("f", b"x")
    os.link("f", "g")
    os.mkdir("d")
    os.symlink("g", "l")
    before = t.clock(".", "g")
    t.do("unlink a file", os.unlink, "f")
    t.changed("parent times and the surviving link's ctime change", before)
    t.stat("one link left", "g")
    t.do("unlink a dir", os.unlink, "d")
    t.do("unlink a missing name", os.unlink, "f")
    t.do("unlink under a file", os.unlink, "g/x")
    t.do("unlink a symlink", os.unlink, "l")
    t.stat("the target stays", "g")
    t.do("unlink with a trailing slash", os.unlink, "g/")
    t.ls("names")


@case("unlink", "open_file")
def _unlink_open(t: Trace):
    write_file("f", b"still here")

    def use_after_unlink():
        fd = os.open("f", os.O_RDWR)
        try:
            os.unlink("f")
            os.pwrite(fd, b"STILL", 0)
            st = os.fstat(fd)
            return os.pread(fd, 100, 0), st.st_nlink, st.st_size, os.path.exists("f")
        finally:
            os.close(fd)
    t.do("an unlinked open file reads and writes", use_after_unlink)
    t.ls("the name is gone")


@case("unlink", "sticky")
def _unlink_sticky(t: Trace):
    os.mkdir("s")
    os.chmod("s", 0o1777)
    for name, owner in (("a", OWNER), ("b", OWNER), ("c", MEMBER)):
        write_file(f"s/{name}", b"x")
        os.chown(f"s/{name}", owner.uid, owner.gid)
        os.chmod(f"s/{name}", 0o666)
    t.do("another user unlinks a writable file in a sticky dir", os.unlink, "s/a",
         user=MEMBER)
    t.do("the owner may", os.unlink, "s/a", user=OWNER)
    os.chown("s", OTHER.uid, OTHER.gid)
    t.do("the dir's owner may", os.unlink, "s/b", user=OTHER)
    t.do("root may", os.unlink, "s/c")
    os.mkdir("ro", 0o755)
    write_file("ro/f", b"x")
    t.do("a user in a dir it cannot write", os.unlink, "ro/f", user=OWNER)
    t.ls("names in s", "s")


# =============================================================================================
# utimensat
# =============================================================================================
@case("utimensat", "exact_values")
def _utimens_exact(t: Trace):
    write_file("f", b"x")
    before = t.clock("f")
    t.do("set with nanoseconds", lambda: os.utime("f", ns=(1_234_567_890_123_456_789,
                                                          1_300_000_000_987_654_321)))
    t.do("read back", times_ns, "f")
    t.changed("ctime changes", before)
    t.do("before 1970", lambda: os.utime("f", ns=(-1_000_000_000_000_000_001,
                                                  -3_000_000_000_000_000_000)))
    t.do("read back before 1970", times_ns, "f")
    t.do("after 2038", lambda: os.utime("f", ns=(4_102_444_800_123_456_789,
                                                 2_147_483_648_000_000_001)))
    t.do("read back after 2038", times_ns, "f")
    t.do("zero", lambda: os.utime("f", ns=(0, 0)))
    t.do("read back zero", times_ns, "f")
    os.mkdir("d")
    t.do("a dir", lambda: os.utime("d", ns=(5, 6)))
    t.do("read back the dir", times_ns, "d")
    os.symlink("f", "l")
    t.do("the link itself", lambda: os.utime("l", ns=(7, 8), follow_symlinks=False))
    t.do("read back the link", times_ns, "l")
    t.do("the target is untouched", times_ns, "f")


@case("utimensat", "now_and_omit")
def _utimens_special(t: Trace):
    write_file("f", b"x")
    os.utime("f", ns=(1_000_000_000_000_000_000, 1_100_000_000_000_000_000))
    t.do("atime OMIT, mtime given", utimensat, "f", (0, UTIME_OMIT), (42, 5))
    t.do("atime kept", times_ns, "f")
    t.do("atime given, mtime OMIT", utimensat, "f", (43, 6), (0, UTIME_OMIT))
    t.do("mtime kept", times_ns, "f")
    before = t.clock("f")
    t.do("both OMIT", utimensat, "f", (0, UTIME_OMIT), (0, UTIME_OMIT))
    t.changed("both OMIT changes nothing", before)
    t.do("unchanged", times_ns, "f")
    t.do("mtime NOW, atime OMIT", utimensat, "f", (0, UTIME_OMIT), (0, UTIME_NOW))
    t.do("atime still set, mtime is recent",
         lambda: (times_ns("f")[0], abs(time.time_ns() - times_ns("f")[1]) < 60 * 10**9))
    t.do("NULL times", utimensat_null, "f")
    t.do("both recent", lambda: [abs(time.time_ns() - x) < 60 * 10**9 for x in times_ns("f")])
    t.do("an invalid nanosecond value", utimensat, "f", (1, 1_000_000_000), (1, 0))


@case("utimensat", "permissions")
def _utimens_perms(t: Trace):
    write_file("f", b"x")
    os.chown("f", OWNER.uid, OWNER.gid)
    os.chmod("f", 0o666)
    t.do("owner sets explicit times", lambda: os.utime("f", ns=(10, 20)), user=OWNER)
    t.do("writer (not owner) sets times to now", utimensat_null, "f", user=MEMBER)
    t.do("writer sets explicit times", lambda: os.utime("f", ns=(30, 40)), user=MEMBER)
    t.do("writer sets mtime NOW alone", utimensat, "f", (0, UTIME_OMIT), (0, UTIME_NOW),
         user=MEMBER)
    os.chmod("f", 0o644)
    t.do("non-writer sets times to now", utimensat_null, "f", user=MEMBER)
    t.do("non-writer sets explicit times", lambda: os.utime("f", ns=(50, 60)), user=OTHER)
    t.do("root sets explicit times", lambda: os.utime("f", ns=(70, 80)))
    t.do("read back", times_ns, "f")


# =============================================================================================
# posix_fallocate / fallocate
# =============================================================================================
@case("fallocate", "posix_fallocate")
def _fallocate(t: Trace):
    write_file("f", b"abc")

    def allocate(offset, length, flags=os.O_RDWR):
        return _with_fd("f", flags, lambda fd: os.posix_fallocate(fd, offset, length))
    before = t.clock("f")
    t.do("allocate 1 MiB from 0", allocate, 0, MiB)
    t.stat("the size grows", "f")
    t.changed("times after growing", before)
    t.do("the data is kept and the rest reads zeros", pread, "f", 0, 8)
    t.do("allocate inside the file", allocate, 100, 1000)
    t.stat("size unchanged", "f")
    t.do("allocate past the end", allocate, 2 * MiB, 10)
    t.stat("size grows to the end", "f")
    t.do("zeros at the end", pread, "f", 2 * MiB, 20)
    t.do("on an O_RDONLY fd", allocate, 0, 10 * MiB, os.O_RDONLY)
    t.do("on an O_WRONLY fd, over data", allocate, 0, 3 * MiB + 100, os.O_WRONLY)
    t.stat("grown through the write-only fd", "f")
    t.do("a zero length", allocate, 0, 0)


@case("fallocate", "fallocate_modes")
def _fallocate_modes(t: Trace):
    write_file("f", b"y" * 5000)
    before = t.clock("f")
    t.do("mode 0 past the end", fallocate, "f", 0, 4000, 10_000)
    t.stat("the size grows", "f")
    t.changed("times after growing", before)
    t.do("zeros after the old end", pread, "f", 4990, 20)
    t.do("KEEP_SIZE past the end", fallocate, "f", FALLOC_FL_KEEP_SIZE, 0, 1 << 20)
    t.stat("the size is kept", "f")
    t.do("PUNCH_HOLE without KEEP_SIZE", fallocate, "f", FALLOC_FL_PUNCH_HOLE, 0, 10)
    t.do("a negative offset", fallocate, "f", 0, -1, 10)
    t.do("a zero length", fallocate, "f", 0, 0, 0)
    t.do("an unknown mode", fallocate, "f", 0x4000, 0, 10)
    t.do("on a directory", lambda: _with_fd(".", os.O_RDONLY, lambda fd: os.posix_fallocate(
        fd, 0, 10)))


@case("fallocate", "punch_hole")
def _punch_hole(t: Trace):
    write_file("f", b"x" * 200_000)
    t.do("punch a hole (KEEP_SIZE|PUNCH_HOLE)", fallocate, "f",
         FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 65536, 65536)
    t.stat("size kept", "f")
    t.do("the hole reads zeros, the rest does not", lambda: [
        pread("f", 65535, 2), pread("f", 131071, 2)])


# =============================================================================================
# access and permission checks on every kind of node
# =============================================================================================
def _probe_file(path: str) -> dict:
    return {**access_matrix(path), "open_r": try_open(path, os.O_RDONLY | os.O_NONBLOCK),
            "open_w": try_open(path, os.O_WRONLY | os.O_NONBLOCK)}


def _probe_dir(path: str) -> dict:
    return {**access_matrix(path), "list": try_call(listing, path),
            "stat_child": try_call(lambda: stat_of(f"{path}/child")["type"]),
            "create": try_call(open_close, f"{path}/new", os.O_CREAT | os.O_WRONLY),
            "chdir": try_call(os.chdir, path)}


def _node_kinds():
    def make_file(p):
        write_file(p, b"x")

    def make_dir(p):
        os.mkdir(p)
        write_file(f"{p}/child", b"x")

    return {"file": make_file, "dir": make_dir, "fifo": os.mkfifo,
            "chardev": lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3))}


for _kind, _make in _node_kinds().items():
    @case("access", _kind)
    def _access(t: Trace, kind=_kind, make=_make):
        probe = _probe_dir if kind == "dir" else _probe_file
        for mode in (0o640, 0o750, 0o075, 0o704, 0o000):
            path = f"{kind}{mode:03o}"
            make(path)
            os.chown(path, OWNER.uid, OWNER.gid)
            os.chmod(path, mode)
            for who, user in (("owner", OWNER), ("member", MEMBER), ("other", OTHER)):
                t.do(f"{kind} {mode:03o} as {who}", probe, path, user=user)
            t.do(f"{kind} {mode:03o} as root", access_matrix, path)


@case("access", "path_search")
def _access_search(t: Trace):
    os.makedirs("a/b")
    write_file("a/b/f", b"x")
    os.chmod("a", 0o700)
    t.stat("a user through a dir it may not search", "a/b/f", user=OWNER)
    t.do("open through it", read_file, "a/b/f", user=OWNER)
    os.chmod("a", 0o711)
    t.stat("search (x) alone is enough", "a/b/f", user=OWNER)
    t.do("but not to list", listing, "a", user=OWNER)
    os.chmod("a", 0o744)
    t.do("read (r) alone lists names", listing, "a", user=OWNER)
    t.stat("but may not stat them", "a/b", user=OWNER)


# =============================================================================================
# xattrs
# =============================================================================================
@case("xattr", "user_namespace")
def _xattr_user(t: Trace):
    write_file("f", b"x")
    before = t.clock("f")
    t.do("set user.a", os.setxattr, "f", "user.a", b"alpha")
    t.changed("ctime changes, mtime does not", before)
    t.do("get user.a", os.getxattr, "f", "user.a")
    t.do("set an empty value", os.setxattr, "f", "user.empty", b"")
    t.do("get the empty value", os.getxattr, "f", "user.empty")
    t.do("set a binary value", os.setxattr, "f", "user.bin", bytes(range(256)) * 16)
    t.do("get the binary value", os.getxattr, "f", "user.bin")
    t.do("list", xattrs, "f")
    t.do("get a missing one", os.getxattr, "f", "user.missing")
    t.do("XATTR_CREATE an existing one", os.setxattr, "f", "user.a", b"x", os.XATTR_CREATE)
    t.do("XATTR_REPLACE a missing one", os.setxattr, "f", "user.b", b"x", os.XATTR_REPLACE)
    t.do("XATTR_REPLACE an existing one", os.setxattr, "f", "user.a", b"A",
         os.XATTR_REPLACE)
    t.do("XATTR_CREATE a new one", os.setxattr, "f", "user.c", b"C", os.XATTR_CREATE)
    t.do("get after replace", os.getxattr, "f", "user.a")
    t.do("remove user.a", os.removexattr, "f", "user.a")
    t.do("remove it again", os.removexattr, "f", "user.a")
    t.do("list after remove", xattrs, "f")
    t.do("a 255-byte name", os.setxattr, "f", "user." + "n" * 250, b"v")
    t.do("a 256-byte name", os.setxattr, "f", "user." + "n" * 251, b"v")
    t.do("an unknown namespace", os.setxattr, "f", "bogus.a", b"v")
    t.do("an empty name", os.setxattr, "f", "", b"v")
    t.do("a namespace with no name", os.setxattr, "f", "user.", b"v")
    t.do("get a namespace with no name", os.getxattr, "f", "user.")
    t.do("remove a namespace with no name", os.removexattr, "f", "user.")
    t.do("a missing file", os.getxattr, "nope", "user.a")


@case("xattr", "node_kinds")
def _xattr_kinds(t: Trace):
    os.mkdir("d")
    write_file("f", b"x")
    os.symlink("f", "l")
    os.mkfifo("p")
    t.do("on a dir", os.setxattr, "d", "user.a", b"1")
    t.do("list the dir", xattrs, "d")
    t.do("through a symlink sets the target", os.setxattr, "l", "user.t", b"2")
    t.do("the target has it", xattrs, "f")
    t.do("user.* on the symlink itself",
         lambda: os.setxattr("l", "user.l", b"3", follow_symlinks=False))
    t.do("list the symlink itself", xattrs, "l", False)
    t.do("user.* on a fifo", os.setxattr, "p", "user.p", b"4")
    t.do("get user.* on a fifo", os.getxattr, "p", "user.p")
    t.do("trusted.* as root", os.setxattr, "f", "trusted.t", b"5")
    t.do("security.* as root", os.setxattr, "f", "security.s", b"6")
    t.do("root lists all", xattrs, "f")
    t.do("a user lists", xattrs, "f", user=OWNER)
    t.do("a user reads trusted.*", os.getxattr, "f", "trusted.t", user=OWNER)
    t.do("a user reads security.*", os.getxattr, "f", "security.s", user=OWNER)
    t.do("xattrs survive a rename",
         lambda: (os.rename("f", "g"), sorted(os.listxattr("g")))[1])
    os.link("g", "h")
    t.do("a hard link shares them", xattrs, "h")


@case("xattr", "permissions")
def _xattr_perms(t: Trace):
    write_file("f", b"x")
    os.chown("f", OWNER.uid, OWNER.gid)
    os.setxattr("f", "user.a", b"1")
    t.do("owner sets", os.setxattr, "f", "user.o", b"o", user=OWNER)
    t.do("a reader gets", os.getxattr, "f", "user.a", user=MEMBER)
    t.do("a reader lists", xattrs, "f", user=MEMBER)
    t.do("a non-writer sets", os.setxattr, "f", "user.m", b"m", user=MEMBER)
    t.do("a non-writer removes", os.removexattr, "f", "user.a", user=MEMBER)
    os.chmod("f", 0o600)
    t.do("a non-reader gets", os.getxattr, "f", "user.a", user=MEMBER)
    os.chmod("f", 0o620)     # the group may write but not read
    t.do("a writer who may not read creates one", os.setxattr, "f", "user.w", b"w",
         os.XATTR_CREATE, user=MEMBER)
    t.do("and replaces it", os.setxattr, "f", "user.w", b"W", os.XATTR_REPLACE, user=MEMBER)
    t.do("but cannot create it again", os.setxattr, "f", "user.w", b"x", os.XATTR_CREATE,
         user=MEMBER)
    t.do("nor replace a missing one", os.setxattr, "f", "user.none", b"x",
         os.XATTR_REPLACE, user=MEMBER)
    t.do("the owner reads it", os.getxattr, "f", "user.w", user=OWNER)
    os.chmod("f", 0o600)
    t.do("a user sets trusted.*", os.setxattr, "f", "trusted.x", b"x", user=OWNER)
    os.mkdir("s")
    os.chmod("s", 0o1777)
    t.do("a user sets user.* on a sticky dir it does not own", os.setxattr, "s", "user.s",
         b"s", user=OWNER)
