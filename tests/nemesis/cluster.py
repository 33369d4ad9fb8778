"""Metadata nodes and chunkservers as real processes, each in its own network namespace
(netlab.py)."""

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import sys
import time

from mooseng.status import gather
from tests.nemesis.netlab import NetLab

PORT = 7000
CHUNK_PORT = 9420
TICK_MS = 20   # elections in 200-400 ms, as the integration tests
DISK_MB, RESERVE_MB = 192, 32   # each node's data on a tmpfs of its own, so it can fill
# The chunk manager repairs soon: a chunkserver gone 3 s is replaced, a chunk is left
# alone 1 s after a write to it began (as tests/integration/test_partition.py).
CHUNK_ARGS = ("--default-class", "copies=2", "--replicate-after", "3", "--chunk-quiet", "1")
HEARTBEAT_S = 0.5
FILLER = "nemesis-filler"
ARCHIVE_MB = 1024   # a long run's archive, snapshots included, is a few hundred MiB
CHUNK_DISK_MB = 1024


def mount_tmpfs(path: str, size_mb: int) -> str:
    os.makedirs(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", path],
                   check=True)
    return path


def fill(path: str, keep: int) -> None:
    """Fill the file system of `path` up to `keep` free bytes."""
    st = os.statvfs(path)
    size = st.f_bavail * st.f_frsize - keep
    with open(os.path.join(path, FILLER), "wb") as f:
        while size > 0:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
                return
            except OSError as exc:     # the node wrote meanwhile: a little less
                if exc.errno != errno.ENOSPC:
                    raise
                size -= 4 << 20


def unfill(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(path, FILLER))


class Processes:
    """One process per id, each in its node's namespace: kill, pause, resume, stop."""

    def __init__(self, lab: NetLab, root: str, ids: list[int]):
        self.lab, self.root, self.ids = lab, root, list(ids)
        self.procs: dict[int, subprocess.Popen] = {}
        self.paused: set[int] = set()

    def start(self, i: int) -> None:
        raise NotImplementedError

    def _spawn(self, i: int, args: list[str]) -> None:
        log = open(self.log_path(i), "ab")  # noqa: SIM115
        self.procs[i] = subprocess.Popen([*self.lab.exec_prefix(i), sys.executable, "-m",
                                          "mooseng", *args],
                                         stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def log_path(self, i: int) -> str:
        return os.path.join(self.root, f"node{i}.log")

    def start_all(self) -> None:
        for i in self.ids:
            self.start(i)

    def kill(self, i: int) -> None:
        self.cont(i)
        proc = self.procs.pop(i)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def pause(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGSTOP)
        self.paused.add(i)

    def cont(self, i: int) -> None:
        if i in self.paused:
            self.procs[i].send_signal(signal.SIGCONT)
            self.paused.discard(i)

    def restart_missing(self) -> None:
        """Resume what is paused and start what was killed."""
        for i in list(self.paused):
            self.cont(i)
        for i in self.ids:
            if i not in self.procs:
                self.start(i)

    def stop_all(self, sig: int = signal.SIGKILL) -> dict[int, int]:
        codes = {}
        for i in list(self.procs):
            self.cont(i)
            proc = self.procs.pop(i)
            if proc.poll() is None:
                proc.send_signal(sig)
            codes[i] = proc.wait(timeout=60)
        return codes

    def crashed(self) -> dict[int, int]:
        """Processes that ended by themselves, with their exit codes."""
        return {i: p.returncode for i, p in self.procs.items() if p.poll() is not None}

    def log_of(self, i: int) -> str:
        with open(self.log_path(i), errors="replace") as f:
            return f.read()


class NetCluster(Processes):
    def __init__(self, lab: NetLab, root: str, ids: list[int], lease_reads: bool = True,
                 snapshot_every: int = 2_000, rates: dict[int, float] | None = None):
        """`rates`: how fast each node's clock runs against real time (drift)."""
        super().__init__(lab, root, ids)
        self.rates = rates or {}
        self.lease_reads, self.snapshot_every = lease_reads, snapshot_every
        self.addresses = {i: f"{lab.address(i)}:{PORT}" for i in self.ids}
        self.peers = ",".join(f"{i}={a}" for i, a in self.addresses.items())
        self.mounted: list[str] = []

    def make_disks(self) -> None:
        for i in self.ids:
            self.mounted.append(mount_tmpfs(self.data(i), DISK_MB))

    def remove_disks(self) -> None:
        for path in self.mounted:
            subprocess.run(["umount", "-l", path], check=False)
        self.mounted.clear()

    def fill(self, i: int) -> None:
        """Leave half the reserve free on node i's disk."""
        fill(self.data(i), (RESERVE_MB << 20) // 2)

    def unfill(self, i: int) -> None:
        unfill(self.data(i))

    def data(self, i: int) -> str:
        return os.path.join(self.root, f"node{i}")

    def start(self, i: int) -> None:
        self._spawn(i, [
            "metadata", "--id", str(i), "--data", self.data(i),
            "--listen", self.addresses[i], "--peers", self.peers,
            "--tick-ms", str(TICK_MS), "--snapshot-every", str(self.snapshot_every),
            "--disk-reserve-mb", str(RESERVE_MB if self.mounted else 0), *CHUNK_ARGS,
            "--clock-rate", str(self.rates.get(i, 1.0)),
            *(["--lease-reads"] if self.lease_reads else [])])

    def status(self) -> list[dict]:
        return asyncio.run(gather(list(self.addresses.values()), timeout=1.0))

    async def astatus(self) -> list[dict]:
        return await gather(list(self.addresses.values()), timeout=1.0)

    async def leader(self) -> int | None:
        """The id of a node that says it leads in the newest term, or None."""
        nodes = [n for n in await self.astatus() if n["role"] == "leader"]
        if not nodes:
            return None
        best = max(nodes, key=lambda n: n["term"] or 0)
        return next(i for i, a in self.addresses.items() if a == best["address"])

    def wait_converged(self, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        nodes: list[dict] = []
        while time.monotonic() < deadline:
            nodes = self.status()
            leaders = [n for n in nodes if n["role"] == "leader"]
            if leaders and all(n["applied_index"] == leaders[0]["commit_index"]
                               for n in nodes):
                return nodes
            time.sleep(0.1)
        raise AssertionError(f"the nodes did not converge in {timeout} s: {nodes}")


class Chunkservers(Processes):
    """Chunkservers, each in a namespace of its own, reporting to the metadata nodes at
    their bridge addresses; their chunks are on a tmpfs of their own (a kill loses
    nothing written, as with a disk's page cache), so that it can fill."""

    def __init__(self, lab: NetLab, root: str, ids: list[int], masters: list[str]):
        super().__init__(lab, root, ids)
        self.masters = masters
        self.addresses = {i: f"{lab.address(i)}:{CHUNK_PORT}" for i in self.ids}

    def data(self, i: int) -> str:
        return os.path.join(self.root, f"cs{i}")

    def log_path(self, i: int) -> str:
        return os.path.join(self.root, f"cs{i}.log")

    def make_disks(self) -> None:
        for i in self.ids:
            mount_tmpfs(self.data(i), CHUNK_DISK_MB)

    def remove_disks(self) -> None:
        for i in self.ids:
            subprocess.run(["umount", "-l", self.data(i)], check=False)

    def fill(self, i: int) -> None:
        """Leave 1 MiB free: new chunks go elsewhere, writes here fail with ENOSPC."""
        fill(self.data(i), 1 << 20)

    def unfill(self, i: int) -> None:
        unfill(self.data(i))

    def start(self, i: int) -> None:
        os.makedirs(self.data(i), exist_ok=True)
        self._spawn(i, ["chunkserver", "--data", self.data(i),
                        "--masters", ",".join(self.masters),
                        "--listen", self.addresses[i], "--heartbeat-s", str(HEARTBEAT_S)])


class MetaloggerNode(Processes):
    """`mooseng metalogger` in a namespace of its own, archiving into ROOT/metalogger
    (on the host's disk). Without the effects builder: the archive is what is judged."""

    def __init__(self, lab: NetLab, root: str, ident: int, masters: list[str]):
        super().__init__(lab, root, [ident])
        self.masters = masters
        self.archive_dir = os.path.join(root, "metalogger")

    def log_path(self, i: int) -> str:
        return os.path.join(self.root, "metalogger.log")

    def make_disk(self) -> None:
        mount_tmpfs(self.archive_dir, ARCHIVE_MB)

    def remove_disk(self) -> None:
        subprocess.run(["umount", "-l", self.archive_dir], check=False)

    def fill(self, i: int) -> None:
        """Leave the archive's disk full: its next write fails with ENOSPC."""
        fill(self.archive_dir, 4096)

    def unfill(self, i: int) -> None:
        unfill(self.archive_dir)

    def start(self, i: int) -> None:
        self._spawn(i, ["metalogger", "--masters", ",".join(self.masters),
                        "--data", self.archive_dir, "--no-effects"])
