"""The mount as people use it: a real cluster, `mooseng mount`, and plain syscalls.

Contents are read back after dropping the kernel's cached pages, so they come from
the chunkservers, not from the page cache that wrote them.
"""

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from tests.integration.mount_fixture import MountedCluster, mounted_cluster

MiB = 1 << 20
USER_PYTHON = "/usr/bin/python3"   # one an unprivileged user may run (the venv is root's)
libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the mount tests run as root (allow_other, dev, chown)")
    root = tempfile.mkdtemp(prefix="mooseng-mount-")
    os.chmod(root, 0o755)      # other users reach the mount point too
    try:
        with mounted_cluster(root) as c:
            os.chmod(c.mountpoint, 0o777)
            yield c
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def d(cluster, request):
    """A fresh directory on the mount for one test."""
    path = os.path.join(cluster.mountpoint, request.node.name)
    os.mkdir(path)
    return path


def uncached(path: str) -> bytes:
    """The file's contents as the cluster has them: the kernel's pages are dropped."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        chunks = []
        while block := os.read(fd, 4 * MiB):
            chunks.append(block)
        return b"".join(chunks)
    finally:
        os.close(fd)


def pread_uncached(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def fails(code: int, fn, *args, **kwargs) -> None:
    with pytest.raises(OSError) as caught:
        fn(*args, **kwargs)
    assert caught.value.errno == code, f"{errno.errorcode[caught.value.errno]} instead of " \
                                       f"{errno.errorcode[code]}"


def write(path: str, data: bytes, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> None:
    fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:8 * MiB]):]
    finally:
        os.close(fd)


# -- contents -------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 65537, 3 * MiB + 7, 64 * MiB + 5])
def test_files_of_several_sizes_read_back(d, size):
    data = os.urandom(min(size, MiB)) * (size // MiB) + os.urandom(size % MiB)
    path = os.path.join(d, "f")
    write(path, data)
    assert os.stat(path).st_size == size
    assert uncached(path) == data


def test_sparse_file_far_past_the_first_chunks_reads_zeros_in_its_holes(d):
    path = os.path.join(d, "sparse")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.pwrite(fd, b"start", 0)
    os.pwrite(fd, b"end", 200 * MiB)
    os.close(fd)
    assert os.stat(path).st_size == 200 * MiB + 3
    assert pread_uncached(path, 0, 8) == b"start\0\0\0"
    assert pread_uncached(path, 64 * MiB - 4, 8) == bytes(8)     # across a chunk boundary
    assert pread_uncached(path, 150 * MiB, MiB) == bytes(MiB)
    assert pread_uncached(path, 200 * MiB - 2, 10) == b"\0\0end"


def test_truncate_then_extend_reads_zeros(d):
    path = os.path.join(d, "t")
    write(path, b"x" * 100_000)
    os.truncate(path, 10)
    os.truncate(path, 100_000)
    assert uncached(path) == b"x" * 10 + bytes(99_990)
    fd = os.open(path, os.O_RDWR)
    os.ftruncate(fd, 5)
    os.ftruncate(fd, 20)
    os.close(fd)
    assert uncached(path) == b"x" * 5 + bytes(15)


def test_o_append_writes_at_the_end_from_every_descriptor(d):
    path = os.path.join(d, "log")
    write(path, b"a")
    one = os.open(path, os.O_WRONLY | os.O_APPEND)
    two = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(one, b"b")
    os.write(two, b"c")
    os.write(one, b"d")
    os.close(one)
    os.close(two)
    assert uncached(path) == b"abcd"


def test_o_excl_and_o_trunc(d):
    path = os.path.join(d, "f")
    write(path, b"old contents")
    fails(errno.EEXIST, os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    assert os.fstat(fd).st_size == 0
    os.write(fd, b"new")
    os.close(fd)
    assert uncached(path) == b"new"


def test_posix_fallocate_extends_the_file_with_zeros(d):
    path = os.path.join(d, "f")
    write(path, b"abc")
    fd = os.open(path, os.O_RDWR)
    os.posix_fallocate(fd, 0, 3 * MiB)
    os.close(fd)
    assert os.stat(path).st_size == 3 * MiB
    assert uncached(path) == b"abc" + bytes(3 * MiB - 3)


def test_an_unlinked_open_file_stays_readable(d):
    path = os.path.join(d, "gone")
    write(path, b"still here" * 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.unlink(path)
        assert not os.path.exists(path)
        assert os.fstat(fd).st_nlink == 0
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, 10_000, 0) == b"still here" * 1000
    finally:
        os.close(fd)


# -- names ----------------------------------------------------------------------------------
def test_namespace_errors_are_the_posix_ones(d):
    sub, f = os.path.join(d, "sub"), os.path.join(d, "f")
    os.mkdir(sub)
    write(os.path.join(sub, "inner"), b"")
    write(f, b"")
    fails(errno.EEXIST, os.mkdir, sub)
    fails(errno.ENOENT, os.open, os.path.join(d, "missing"), os.O_RDONLY)
    fails(errno.ENOTEMPTY, os.rmdir, sub)
    fails(errno.EISDIR, os.unlink, sub)
    fails(errno.ENOTDIR, os.rmdir, f)
    fails(errno.ENOTDIR, os.open, os.path.join(f, "x"), os.O_RDONLY)
    fails(errno.ENAMETOOLONG, os.mkdir, os.path.join(d, "n" * 256))
    os.mkdir(os.path.join(d, "n" * 255))
    fails(errno.EISDIR, os.rename, f, sub)
    fails(errno.ENOTDIR, os.rename, sub, f)


def test_rename_moves_replaces_and_honours_its_flags(d):
    a, b, sub = os.path.join(d, "a"), os.path.join(d, "b"), os.path.join(d, "sub")
    write(a, b"A")
    write(b, b"B")
    os.mkdir(sub)
    renameat2 = libc.renameat2

    def rename2(old, new, flags):
        if renameat2(-100, old.encode(), -100, new.encode(), flags) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    fails(errno.EEXIST, rename2, a, b, 1)            # RENAME_NOREPLACE
    rename2(a, b, 2)                                 # RENAME_EXCHANGE
    assert uncached(a) == b"B" and uncached(b) == b"A"
    os.rename(a, os.path.join(sub, "moved"))
    os.replace(b, os.path.join(sub, "moved"))
    assert sorted(os.listdir(d)) == ["sub"]
    assert uncached(os.path.join(sub, "moved")) == b"A"


def test_symlinks_and_hard_links(d):
    target, link, hard = (os.path.join(d, n) for n in ("target", "link", "hard"))
    write(target, b"data")
    os.symlink("target", link)
    assert os.readlink(link) == "target"
    assert stat.S_ISLNK(os.lstat(link).st_mode)
    assert uncached(link) == b"data"
    os.link(target, hard)
    assert os.stat(target).st_nlink == 2
    assert os.stat(hard).st_ino == os.stat(target).st_ino
    os.unlink(target)
    assert os.stat(hard).st_nlink == 1
    fails(errno.ENOENT, os.stat, link)               # dangling now


def test_fifo_and_device_nodes(d):
    fifo, dev = os.path.join(d, "fifo"), os.path.join(d, "null")
    os.mkfifo(fifo, 0o640)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert stat.S_IMODE(os.stat(fifo).st_mode) == 0o640 & ~_umask()
    os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    st = os.stat(dev)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    with open(dev, "wb") as f:                       # the mount allows devices (dev)
        f.write(b"into /dev/null")


def test_listing_a_directory_of_many_entries(d):
    names = {f"file-{i:04d}" for i in range(700)}     # more than one page of the master
    for name in names:
        os.close(os.open(os.path.join(d, name), os.O_CREAT | os.O_WRONLY, 0o644))
    assert set(os.listdir(d)) == names
    with os.scandir(d) as entries:
        assert all(e.is_file() for e in entries)


# -- attributes -----------------------------------------------------------------------------
def test_chmod_chown_and_nanosecond_times(d):
    path = os.path.join(d, "f")
    write(path, b"x")
    os.chmod(path, 0o751)
    os.chown(path, 1234, 5678)
    atime, mtime = -1_500_000_000_123_456_789, (1 << 33) * 10**9 + 987_654_321
    os.utime(path, ns=(atime, mtime))
    st = os.stat(path)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o751, 1234, 5678)
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)
    before = time.time_ns()
    os.utime(path)                                    # "now"
    assert os.stat(path).st_mtime_ns >= before - 10**9


def test_times_survive_the_attribute_cache(cluster, d):
    path = os.path.join(d, "f")
    write(path, b"x")
    os.utime(path, ns=(5, -7))
    time.sleep(1.2)                                   # past attr_timeout: asked again
    st = os.stat(path)
    assert (st.st_atime_ns, st.st_mtime_ns) == (5, -7)


def test_xattrs_behave_as_on_linux(d):
    path = os.path.join(d, "f")
    write(path, b"")
    os.setxattr(path, "user.colour", b"blue")
    assert os.getxattr(path, "user.colour") == b"blue"
    assert "user.colour" in os.listxattr(path)
    fails(errno.ENODATA, os.getxattr, path, "user.none")
    fails(errno.EEXIST, os.setxattr, path, "user.colour", b"red", os.XATTR_CREATE)
    fails(errno.ENODATA, os.setxattr, path, "user.none", b"x", os.XATTR_REPLACE)
    buf = ctypes.create_string_buffer(2)
    assert libc.getxattr(path.encode(), b"user.colour", buf, 2) == -1
    assert ctypes.get_errno() == errno.ERANGE
    os.removexattr(path, "user.colour")
    assert "user.colour" not in os.listxattr(path)
    fails(errno.ENODATA, os.removexattr, path, "user.colour")


def test_statfs_reports_the_cluster_space(cluster):
    st = os.statvfs(cluster.mountpoint)
    assert st.f_blocks >= st.f_bfree > 0
    assert st.f_namemax == 255


# -- other users ----------------------------------------------------------------------------
def as_user(code: str, groups: tuple[int, ...] = ()) -> subprocess.CompletedProcess:
    """Run Python `code` as uid 1000, gid 1000 with supplementary `groups`."""
    if not os.access(USER_PYTHON, os.X_OK):
        pytest.skip(f"no {USER_PYTHON} for an unprivileged user")
    return subprocess.run([USER_PYTHON, "-c", f"import os\n{code}"], user=1000, group=1000,
                          extra_groups=list(groups), capture_output=True, text=True,
                          timeout=60)


def test_supplementary_groups_and_umask_of_the_caller_count(d):
    shared = os.path.join(d, "team")
    os.mkdir(shared)
    os.chown(shared, 0, 2000)
    os.chmod(shared, 0o770)
    os.chmod(d, 0o755)
    member = as_user(f"os.umask(0o027)\nopen('{shared}/f', 'w').write('x')\n"
                     f"os.mkdir('{shared}/sub', 0o777)", groups=(2000,))
    assert member.returncode == 0, member.stderr
    assert stat.S_IMODE(os.stat(f"{shared}/f").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(f"{shared}/sub").st_mode) == 0o750
    outsider = as_user(f"open('{shared}/g', 'w')")
    assert "PermissionError" in outsider.stderr


def test_a_new_read_only_file_is_writable_through_the_descriptor_that_made_it(d):
    os.chmod(d, 0o777)
    path = os.path.join(d, "readonly")
    made = as_user(f"fd = os.open('{path}', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)\n"
                   "os.write(fd, b'written once')\nos.close(fd)")
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert uncached(path) == b"written once"
    again = as_user(f"open('{path}', 'w')")
    assert "PermissionError" in again.stderr


# -- the mount process ----------------------------------------------------------------------
def test_the_mount_reads_ahead_1_mib(cluster):
    with open(f"/sys/class/bdi/{cluster.device}/read_ahead_kb") as f:
        assert f.read().strip() == "1024"


def test_a_read_only_mount_refuses_changes(cluster):
    write(os.path.join(cluster.mountpoint, "for-ro"), b"readable")
    other = second_mount(cluster, "mnt-ro", "ro")
    try:
        assert uncached(os.path.join(other.mountpoint, "for-ro")) == b"readable"
        fails(errno.EROFS, os.mkdir, os.path.join(other.mountpoint, "no"))
        fails(errno.EROFS, os.open, os.path.join(other.mountpoint, "for-ro"), os.O_WRONLY)
    finally:
        other.unmount_anyhow()


def second_mount(cluster: MountedCluster, name: str, *options: str) -> MountedCluster:
    """Another mount of the same cluster (another client), stopped by its test."""
    other = MountedCluster.__new__(MountedCluster)
    other.__dict__.update(cluster.__dict__)
    other.mountpoint = os.path.join(cluster.root, name)
    other.log = os.path.join(cluster.root, f"{name}.log")
    os.makedirs(other.mountpoint, exist_ok=True)
    other.mount(*options)
    return other


def within(seconds: float, check) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not seen within {seconds} s"
        time.sleep(0.02)


def test_another_mounts_changes_show_at_once_despite_long_cache_timeouts(cluster, d):
    """Only the master's pushed invalidations can make this mount see them before
    its 60 s timeouts end."""
    other = second_mount(cluster, "mnt-long-cache", "attr_timeout=60,entry_timeout=60")
    try:
        here, there = os.path.join(d, "f"), os.path.join(other.mountpoint,
                                                         os.path.basename(d), "f")
        assert not os.path.exists(there)           # remembered as missing for 60 s
        write(here, b"x")
        within(2, lambda: os.path.exists(there))
        assert stat.S_IMODE(os.stat(there).st_mode) == 0o644
        os.chmod(here, 0o600)
        within(2, lambda: stat.S_IMODE(os.stat(there).st_mode) == 0o600)
        os.unlink(here)
        within(2, lambda: not os.path.exists(there))
    finally:
        other.unmount_anyhow()


def test_umount_unmounts_and_the_process_ends(cluster):
    other = second_mount(cluster, "mnt-umount")
    try:
        write(os.path.join(other.mountpoint, "from-other"), b"seen by both")
        assert other.umount().returncode == 0
        assert not other.is_mounted()
        assert other.wait_process_gone(10)
        assert uncached(os.path.join(cluster.mountpoint, "from-other")) == b"seen by both"
        again = other.umount()
        assert again.returncode == 1 and "not mounted" in again.stderr
    finally:
        other.unmount_anyhow()


def test_sigterm_unmounts_after_committing_what_was_written(cluster):
    other = second_mount(cluster, "mnt-sigterm")
    try:
        data = os.urandom(3 * MiB)
        fd = os.open(os.path.join(other.mountpoint, "written-then-killed"),
                     os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)                            # still in the kernel's cache
        os.kill(other.pid, signal.SIGTERM)
        assert other.wait_process_gone(30)
        assert not other.is_mounted()
        with contextlib.suppress(OSError):            # the mount is gone: that is fine
            os.close(fd)
        assert uncached(os.path.join(cluster.mountpoint, "written-then-killed")) == data
    finally:
        other.unmount_anyhow()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
