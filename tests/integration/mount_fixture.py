"""A real cluster and a real mount for integration tests.

`mounted_cluster` starts 3 metadata nodes and N chunkservers (free ports, a temp
directory), waits until the chunkservers are connected (files can be written only
then), mounts with the real `mooseng mount` command (background mode), and at the
end unmounts and stops everything, also when the test failed: a mount left behind
is detached with `fusermount3 -uz` and its process killed.

    with mounted_cluster(tmp_path) as cluster:
        open(os.path.join(cluster.mountpoint, "f"), "w").write("hi")
"""

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time

from fuse_client import mountinfo
from fuse_client.metadata_client import MetadataClient
from fuse_client.mount import pid_file
from mooseng import classes
from tests.integration.chunk_cluster import ChunkCluster
from tests.integration.metadata_cluster import MetadataCluster

FUSECTL = "/sys/fs/fuse/connections"
MOUNTED = re.compile(r"\(pid (\d+), log ")


class MountedCluster:
    def __init__(self, root, chunkservers: int = 3, master_args: tuple[str, ...] = ()):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.meta = MetadataCluster(root, extra_args=master_args)
        self.masters = ",".join(self.meta.addresses.values())
        self.chunks = ChunkCluster(root, list(self.meta.addresses.values()), n=chunkservers)
        self.mountpoint = os.path.join(self.root, "mnt")
        self.log = os.path.join(self.root, "mount.log")
        self.pid = 0
        self.device = ""     # major:minor of the mount, which names its FUSE connection

    def start(self, *mount_options: str) -> None:
        self.meta.start_all()
        self.chunks.start_all()
        asyncio.run(asyncio.wait_for(_connected(self.meta, self.chunks.n), 60))
        os.makedirs(self.mountpoint, exist_ok=True)
        self.mount(*mount_options)

    def mooseng(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mooseng", *args], capture_output=True,
                              text=True, timeout=timeout)

    def mount(self, *options: str) -> None:
        """`mooseng mount` in background mode; it returns once the mount is live."""
        done = self.mooseng("mount", "--masters", self.masters, "--log", self.log,
                            *[a for o in options for a in ("-o", o)], self.mountpoint)
        assert done.returncode == 0, f"mount failed: {done.stderr}\n{self.mount_log()}"
        self.pid = int(MOUNTED.search(done.stdout).group(1))
        self.device = mountinfo.find(self.mountpoint).device

    def umount(self) -> subprocess.CompletedProcess:
        return self.mooseng("umount", self.mountpoint)

    def is_mounted(self) -> bool:
        return mountinfo.find(self.mountpoint) is not None

    def process_alive(self) -> bool:
        if not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait_process_gone(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.process_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def mount_log(self) -> str:
        with contextlib.suppress(OSError), open(self.log, errors="replace") as f:
            return f.read()
        return ""

    def unmount_anyhow(self) -> None:
        """Unmount and end the mount process, whatever state they are in. A process
        stuck serving the kernel is not enough to kill: its FUSE connection is
        aborted, or processes blocked on the mount would never return."""
        if self.is_mounted():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.mooseng("umount", self.mountpoint, timeout=60)
        if self.is_mounted() or not self.wait_process_gone(10):
            abort_connection(self.device)
            subprocess.run(["fusermount3", "-uz", self.mountpoint], capture_output=True)
            if self.process_alive():
                os.kill(self.pid, signal.SIGKILL)
        forget_pid_file(self.mountpoint)

    def stop(self) -> None:
        """Unmount and stop every process."""
        try:
            self.unmount_anyhow()
        finally:
            self.chunks.stop_all()
            self.meta.stop_all()


def abort_connection(device: str) -> None:
    """End a FUSE connection: every request waiting on it fails (needs fusectl)."""
    minor = device.partition(":")[2]
    if mountinfo.find(FUSECTL) is None:
        subprocess.run(["mount", "-t", "fusectl", "fusectl", FUSECTL], capture_output=True)
    path = f"{FUSECTL}/{minor}/abort"
    if minor and os.path.exists(path):
        with open(path, "w") as f:
            f.write("1")


async def _connected(meta: MetadataCluster, n: int) -> None:
    async with MetadataClient(list(meta.addresses.values())) as md:
        while sum(s.connected for s in (await classes.health(md)).servers) < n:
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def mounted_cluster(root, chunkservers: int = 3, master_args: tuple[str, ...] = (),
                    mount_options: tuple[str, ...] = ()):
    cluster = MountedCluster(root, chunkservers, master_args)
    try:
        cluster.start(*mount_options)
        yield cluster
    finally:
        cluster.stop()


# -- helpers for tests with two mounts -------------------------------------------
@contextlib.contextmanager
def second_mount(cluster, name: str):
    """`mooseng mount` of the same cluster on another directory; always unmounted."""
    point = os.path.join(cluster.root, name)
    os.makedirs(point)
    done = cluster.mooseng("mount", "--masters", cluster.masters, "--log",
                           os.path.join(cluster.root, f"{name}.log"), point)
    assert done.returncode == 0, done.stderr
    pid = int(MOUNTED.search(done.stdout).group(1))
    try:
        yield point
    finally:
        cluster.mooseng("umount", point)
        if mountinfo.find(point) is not None:
            subprocess.run(["fusermount3", "-uz", point], capture_output=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        forget_pid_file(point)


def forget_pid_file(point: str) -> None:
    """A mount process killed (by a test, or at teardown) cannot remove its pid file."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pid_file(point))


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write(path: str, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(data)


def read_removed_while_open(made: str, seen: str, data: bytes) -> bytes:
    """Write `data` at path `made`, open the same file through another mount's path
    `seen`, remove it through the first, then read all of it from the open file with
    the page cache dropped (so the bytes come from the cluster, not the kernel)."""
    write(made, data)
    fd = os.open(seen, os.O_RDONLY)
    try:
        os.unlink(made)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        got = bytearray()
        while block := os.read(fd, 1 << 20):
            got += block
        return bytes(got)
    finally:
        os.close(fd)


def within(timeout: float, check) -> float:
    """Seconds until check() held; fails after `timeout`."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not seen within {timeout} s")
        time.sleep(0.02)


def gone(path: str) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    return False


def mount_process(point: str) -> int:
    """The pid of the `mooseng mount` process serving `point`."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            if b"mount" in args and point.encode() in args:
                return int(pid)
    raise AssertionError(f"no mount process for {point}")
