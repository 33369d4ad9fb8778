"""The three directories bench/fs.py measures, each a context manager that always
cleans up: a MooseNG mount, a fresh tmpfs, a directory on the local disk.

Cleanup runs with SIGINT ignored, so a second Ctrl-C cannot leave a mount or a
server behind halfway through it."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from fuse_client import mountinfo
from fuse_client.mount import pid_file
from mooseng.local_cluster import LocalCluster


def warn(message: str) -> None:
    print(f"bench/fs: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def uninterruptible():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:   # None: a handler not set from Python, which cannot be put back
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None
                      else previous)


@contextlib.contextmanager
def mooseng_mount(work: str):
    """`mooseng up`: 3 metadata nodes, 3 chunkservers (data under `work`, production
    settings, default storage class copies=2) and a mount; yields the mount point."""
    cluster = LocalCluster(os.path.join(work, "cluster"))
    mountpoint = os.path.join(work, "mnt")
    try:
        cluster.up(mountpoint)
        yield mountpoint
    except Exception:   # not an interrupt: what went wrong is in the logs
        kept = tempfile.mkdtemp(prefix="mooseng-bench-fs-logs-")
        with contextlib.suppress(OSError):
            shutil.copytree(cluster.path("logs"), kept, dirs_exist_ok=True)
        warn(f"the cluster's logs are kept in {kept}")
        raise
    finally:
        with uninterruptible():
            _stop_cluster(cluster, mountpoint)


def _stop_cluster(cluster: LocalCluster, mountpoint: str) -> None:
    try:
        cluster.down()
    except Exception as exc:   # a stuck unmount: detach it and stop the servers anyway
        warn(f"stopping the cluster: {exc!r}")
    if mountinfo.find(mountpoint):
        warn(f"{mountpoint} is still mounted: detaching it (fusermount3 -uz)")
        subprocess.run(["fusermount3", "-uz", mountpoint], capture_output=True)
    _kill_mount_process(mountpoint)
    for name in ("cs1", "cs2", "cs3", "meta1", "meta2", "meta3"):
        cluster.stop(name)


def _kill_mount_process(mountpoint: str) -> None:
    """The mount's process, if it outlived the unmount (its pid file is removed when
    it ends; the pid is checked to still be a mount of this mount point)."""
    with contextlib.suppress(OSError, ValueError):
        with open(pid_file(mountpoint)) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if mountpoint.encode() not in f.read():
                return
        warn(f"the mount process {pid} outlived the unmount: killing it")
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def tmpfs(work: str, size_mib: int):
    point = os.path.join(work, "tmpfs")
    os.mkdir(point)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs",
                    point], check=True, capture_output=True)
    try:
        yield point
    finally:
        with uninterruptible():
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                warn(f"{point} is busy: unmounting it lazily")
                subprocess.run(["umount", "-l", point], capture_output=True)
            os.rmdir(point)


@contextlib.contextmanager
def disk(work: str):
    path = tempfile.mkdtemp(prefix="disk-", dir=work)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def describe(path: str) -> str:
    """"ext4 on /dev/vda" for the file system holding `path`."""
    done = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", path],
                          capture_output=True, text=True)
    fstype, _, source = done.stdout.strip().partition(" ")
    return f"{fstype} on {source.strip()}" if done.returncode == 0 else "unknown"


def mounts_under(path: str) -> list[str]:
    with open(mountinfo.MOUNTINFO) as f:
        return [m.mountpoint for m in mountinfo.parse(f.read())
                if m.mountpoint.startswith(os.path.realpath(path) + "/")]
