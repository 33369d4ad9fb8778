"""The past brought back after an `rm -rf`, as an operator does it: restore the
metalogger's archive at a time before the removal, mount it read-only with
`mooseng mount --restored` and read every file back, then bring the subtree back
into the live file system with `mooseng restore --path --into` (its contents are
the chunks the cluster still retains)."""

import asyncio
import contextlib
import datetime
import errno
import os
import shutil
import subprocess
import sys
import time

import pytest

from fuse_client import mountinfo
from fuse_client.metadata_client import MetadataClient
from mooseng import classes
from tests.integration.metalogger_process import Metalogger
from tests.integration.mount_fixture import MOUNTED, abort_connection, mounted_cluster


def make_tree(root: str) -> None:
    os.makedirs(f"{root}/proj/sub/deeper")
    with open(f"{root}/proj/a.txt", "wb") as f:
        f.write(b"the first file\n")
    with open(f"{root}/proj/sub/b.bin", "wb") as f:
        f.write(os.urandom(300_000))
    with open(f"{root}/proj/sub/deeper/c.bin", "wb") as f:
        f.write(os.urandom(70_000))
    open(f"{root}/proj/sub/empty", "wb").close()
    os.symlink("../a.txt", f"{root}/proj/sub/link")
    os.link(f"{root}/proj/a.txt", f"{root}/proj/sub/hard")
    os.chmod(f"{root}/proj/sub/b.bin", 0o640)
    os.setxattr(f"{root}/proj/a.txt", "user.tag", b"kept")
    os.utime(f"{root}/proj/sub/deeper/c.bin", ns=(1_700_000_000 * 10**9,) * 2)


def snapshot(root: str) -> dict:
    """What a user would compare: every path's type, mode, size, mtime, contents,
    link target, xattrs, and which names share an inode."""
    seen, out = {}, {}
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            item = {"mode": st.st_mode, "uid": st.st_uid, "mtime": st.st_mtime_ns,
                    "size": st.st_size, "same_as": seen.setdefault(st.st_ino, rel)}
            if os.path.islink(path):
                item["target"] = os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    item["data"] = f.read()
                item["xattrs"] = {n: os.getxattr(path, n) for n in os.listxattr(path)}
            out[rel] = item
    return out


async def orphans_deleted(masters: list[str], timeout: float = 60) -> None:
    """Until the leader has deleted every chunk no file refers to (past retention)."""
    await asyncio.sleep(3)   # the leader first notices them, then waits the retention
    async with MetadataClient(masters) as md:
        deadline = time.monotonic() + timeout
        while (health := await classes.health(md)).orphans or health.jobs:
            assert time.monotonic() < deadline, f"orphans not deleted: {health}"
            await asyncio.sleep(0.2)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def tail(path: str) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return f.read()[-3000:]
    return ""


@contextlib.contextmanager
def restored_mount(cluster, restored: str, mountpoint: str):
    """`mooseng mount --restored`, unmounted (and its process gone) at the end."""
    os.makedirs(mountpoint, exist_ok=True)
    log = os.path.join(cluster.root, "restored-mount.log")
    done = cluster.mooseng("mount", "--restored", restored, "--masters", cluster.masters,
                           "--log", log, mountpoint)
    assert done.returncode == 0, f"{done.stderr}\n{tail(log)}"
    pid = int(MOUNTED.search(done.stdout).group(1))
    device = mountinfo.find(mountpoint).device
    try:
        yield
    finally:
        if mountinfo.find(mountpoint) is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                cluster.mooseng("umount", mountpoint, timeout=60)
        if mountinfo.find(mountpoint) is not None:
            abort_connection(device)
            subprocess.run(["fusermount3", "-uz", mountpoint], capture_output=True)
        with contextlib.suppress(ProcessLookupError):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, 9)


@pytest.mark.slow
def test_a_removed_tree_is_read_back_restored_and_undeleted(tmp_path):
    with mounted_cluster(tmp_path) as cluster:
        metalogger = Metalogger(str(tmp_path), cluster.masters.split(","))
        metalogger.start()
        try:
            metalogger.wait_following()
            live = cluster.mountpoint
            make_tree(live)
            before = snapshot(f"{live}/proj")
            time.sleep(1.0)
            at = now_iso()
            time.sleep(1.0)
            shutil.rmtree(f"{live}/proj")
            assert not os.path.exists(f"{live}/proj")
            metalogger.wait_archived(cluster.meta.wait_leader()["commit_index"])

            restored = str(tmp_path / "restored")
            # no --voters: the first leader wrote the members into the log
            done = cluster.mooseng("restore", "--from", metalogger.archive_dir, "--at", at,
                                   "--to", restored)
            assert done.returncode == 0, done.stderr
            view = str(tmp_path / "past")
            with restored_mount(cluster, restored, view):
                assert snapshot(f"{view}/proj") == before
                with pytest.raises(OSError) as refused, open(f"{view}/proj/new", "w"):
                    pass
                assert refused.value.errno == errno.EROFS

            undelete = ("restore", "--from", metalogger.archive_dir, "--at", at,
                        "--path", "/proj", "--into", "/proj.restored",
                        "--masters", cluster.masters)
            done = cluster.mooseng(*undelete)
            assert done.returncode == 0, done.stderr
            assert snapshot(f"{live}/proj.restored") == before
            again = cluster.mooseng(*undelete)
            assert again.returncode == 2 and "/proj.restored exists" in again.stderr
            # The restored files are ordinary files: they can be changed.
            with open(f"{live}/proj.restored/a.txt", "ab") as f:
                f.write(b"more\n")
            with open(f"{live}/proj.restored/sub/hard", "rb") as f:
                assert f.read() == b"the first file\nmore\n"
        finally:
            metalogger.stop()


def test_undelete_arguments_are_explained(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mooseng", "restore", "--from", str(tmp_path), "--path", "/p"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--into" in done.stderr and "--masters" in done.stderr


@pytest.mark.slow
def test_an_undelete_after_the_retention_window_says_so_and_changes_nothing(tmp_path):
    """A file kept in chunks is gone once its chunks are (a small file kept inline is
    in the log: see the next test)."""
    with mounted_cluster(tmp_path, master_args=("--chunk-retention", "1")) as cluster:
        metalogger = Metalogger(str(tmp_path), cluster.masters.split(","))
        metalogger.start()
        try:
            metalogger.wait_following()
            live = cluster.mountpoint
            os.makedirs(f"{live}/proj")
            with open(f"{live}/proj/f", "wb") as f:
                f.write(b"gone soon" * 10_000)
            time.sleep(1.0)
            at = now_iso()
            time.sleep(1.0)
            shutil.rmtree(f"{live}/proj")
            metalogger.wait_archived(cluster.meta.wait_leader()["commit_index"])
            undelete = ("restore", "--from", metalogger.archive_dir, "--at", at,
                        "--path", "/proj", "--into", "/back", "--masters", cluster.masters)
            asyncio.run(orphans_deleted(cluster.masters.split(",")))
            done = cluster.mooseng(*undelete)
            assert done.returncode == 2 and "no longer retained" in done.stderr, done.stderr
            assert "/proj/f" in done.stderr and "nothing was changed" in done.stderr
            assert not os.path.exists(f"{live}/back")
        finally:
            metalogger.stop()


def test_small_files_come_back_whatever_the_chunk_retention(tmp_path):
    """Bytes kept inline live in the log and the archive: an undelete writes them
    again long after the chunks of deleted files were collected."""
    with mounted_cluster(tmp_path, master_args=("--chunk-retention", "1")) as cluster:
        metalogger = Metalogger(str(tmp_path), cluster.masters.split(","))
        metalogger.start()
        try:
            metalogger.wait_following()
            live = cluster.mountpoint
            os.makedirs(f"{live}/proj/sub")
            with open(f"{live}/proj/sub/small", "wb") as f:
                f.write(b"kept in the log\n")
            with open(f"{live}/proj/sparse", "wb") as f:
                f.write(b"head")
                f.truncate(10_000)
            time.sleep(1.0)
            at = now_iso()
            time.sleep(1.0)
            shutil.rmtree(f"{live}/proj")
            metalogger.wait_archived(cluster.meta.wait_leader()["commit_index"])
            asyncio.run(orphans_deleted(cluster.masters.split(",")))
            done = cluster.mooseng("restore", "--from", metalogger.archive_dir, "--at", at,
                                   "--path", "/proj", "--into", "/back", "--masters",
                                   cluster.masters)
            assert done.returncode == 0, done.stderr
            with open(f"{live}/back/sub/small", "rb") as f:
                assert f.read() == b"kept in the log\n"
            with open(f"{live}/back/sparse", "rb") as f:
                assert f.read() == b"head" + bytes(10_000 - 4)
        finally:
            metalogger.stop()
